"""sparkdl: train PyTorch networks data-parallel across Spark executors.

The Spark ML classes are imported on first use, so that worker processes which
only train (and never touch pyspark.ml) start quickly.

Example:
    >>> import sparkdl
    >>> sorted(sparkdl.__all__)[:3]
    ['ClusterCapacityError', 'ConfigError', 'CorruptModelError']
"""

from sparkdl.errors import (
    ClusterCapacityError,
    ConfigError,
    CorruptModelError,
    ModelNotFoundError,
    PathExistsError,
    SchemaError,
    SparkDLError,
    TrainingCodeError,
    UntrustedCodeError,
    WorkerFailedError,
)
from sparkdl.history import TrainingHistory

__version__ = "0.1.0"

__all__ = [
    "ClusterCapacityError",
    "ConfigError",
    "CorruptModelError",
    "ModelNotFoundError",
    "PathExistsError",
    "SchemaError",
    "SparkDLError",
    "TorchEstimator",
    "TorchModel",
    "TrainingCodeError",
    "TrainingHistory",
    "UntrustedCodeError",
    "WorkerFailedError",
]


def __getattr__(name: str):
    if name in ("TorchEstimator", "TorchModel"):
        from sparkdl import ml

        return getattr(ml, name)
    raise AttributeError(f"module 'sparkdl' has no attribute {name!r}")
