"""sparkdl: train PyTorch networks data-parallel across Spark executors.

Example:
    >>> import sparkdl
    >>> sorted(sparkdl.__all__)[:3]
    ['ClusterCapacityError', 'ConfigError', 'SchemaError']
"""

from sparkdl.errors import (
    ClusterCapacityError,
    ConfigError,
    SchemaError,
    SparkDLError,
    WorkerFailedError,
)
from sparkdl.history import TrainingHistory
from sparkdl.ml import TorchEstimator, TorchModel

__version__ = "0.1.0"

__all__ = [
    "ClusterCapacityError",
    "ConfigError",
    "SchemaError",
    "SparkDLError",
    "TorchEstimator",
    "TorchModel",
    "TrainingHistory",
    "WorkerFailedError",
]
