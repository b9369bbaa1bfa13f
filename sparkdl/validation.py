"""The checks that settings shared by several layers must pass, each written once.

The estimator checks its Params with them before any Spark job, and
:class:`~sparkdl.worker.spec.TrainSpec` checks its fields with them when it is
built (the Scala estimator's requests build one too), so a value is rejected
with the same words wherever it enters.

Example:
    >>> require_positive_int("epochs", 3)
    3
    >>> require_positive_int("epochs", 0)
    Traceback (most recent call last):
    ...
    sparkdl.errors.ConfigError: epochs must be >= 1. Received: epochs=0
"""

from __future__ import annotations

import math

from sparkdl.errors import ConfigError


def require_positive_int(name: str, value) -> int:
    """``value`` if it is an integer >= 1.

    Raises:
        ConfigError: naming ``name`` and echoing ``value``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer. Received: {name}={value!r}")
    if value < 1:
        raise ConfigError(f"{name} must be >= 1. Received: {name}={value!r}")
    return value


def require_non_negative_int(name: str, value) -> int:
    """``value`` if it is an integer >= 0.

    Raises:
        ConfigError: naming ``name`` and echoing ``value``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer. Received: {name}={value!r}")
    if value < 0:
        raise ConfigError(f"{name} must be >= 0. Received: {name}={value!r}")
    return value


def require_positive(name: str, value) -> float:
    """``value`` if it is a finite number > 0.

    Raises:
        ConfigError: naming ``name`` and echoing ``value``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be > 0. Received: {name}={value!r}")
    return float(value)


def require_fraction(name: str, value) -> float:
    """``value`` if it is a number in [0, 1).

    Raises:
        ConfigError: naming ``name`` and echoing ``value``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1). Received: {name}={value!r}")
    return float(value)
