"""Spark ML classes: :class:`TorchEstimator` and the :class:`TorchModel` it fits."""

from sparkdl.ml.estimator import TorchEstimator
from sparkdl.ml.model import TorchModel

__all__ = ["TorchEstimator", "TorchModel"]
