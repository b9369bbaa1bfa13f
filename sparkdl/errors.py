"""The exceptions sparkdl raises.

Every error derives from :class:`SparkDLError`, so ``except SparkDLError`` catches
anything sparkdl rejects. Subclasses also derive from the matching builtin
(``ValueError``, ``RuntimeError``) so existing handlers keep working. All of them
are plain picklable exceptions: they cross the executor -> driver boundary.

Example:
    >>> from sparkdl.errors import ConfigError, SparkDLError
    >>> issubclass(ConfigError, SparkDLError) and issubclass(ConfigError, ValueError)
    True
"""

from __future__ import annotations


class SparkDLError(Exception):
    """Root of every error raised by sparkdl."""


class ConfigError(SparkDLError, ValueError):
    """A parameter or configuration value is invalid.

    Example:
        >>> raise ConfigError("batchSize must be >= 1. Received: batchSize=0")
        Traceback (most recent call last):
        ...
        sparkdl.errors.ConfigError: batchSize must be >= 1. Received: batchSize=0
    """


class SchemaError(SparkDLError, ValueError):
    """The DataFrame does not fit what the estimator or model needs.

    Raised for missing columns, unsupported types, nulls, ragged arrays, labels
    out of range and empty input, always before any distributed work starts.
    """


class ClusterCapacityError(SparkDLError, RuntimeError):
    """The cluster cannot run the barrier job that was asked for.

    Raised instead of submitting a barrier job that would wait forever for slots.
    """


class WorkerFailedError(SparkDLError, RuntimeError):
    """A training or scoring worker failed; the message carries the worker's error."""


class UntrustedCodeError(SparkDLError, PermissionError):
    """Loading would run pickled code from a source not marked as trusted.

    Example:
        >>> issubclass(UntrustedCodeError, PermissionError)
        True
    """


class TrainingCodeError(WorkerFailedError):
    """The network (building it, its forward pass), the loss or the backward pass raised.

    The user's own code failed, so a fit does not restart for it (a lost executor
    does); the message names the rank, epoch and step, and the original
    traceback follows it. A :class:`WorkerFailedError`, so existing handlers catch it.

    Example:
        >>> issubclass(TrainingCodeError, WorkerFailedError)
        True
    """


class CorruptModelError(SparkDLError, ValueError):
    """A saved model, estimator, network spec or checkpoint is incomplete or malformed.

    Raised when loading finds a file missing, truncated, of the wrong format or
    with values that do not fit the rest (weights whose shapes differ from the
    network's); the message names the file and what is wrong with it.

    Example:
        >>> from sparkdl.architecture import weights_from_bytes
        >>> weights_from_bytes(b"junk", source="/m/weights.safetensors")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sparkdl.errors.CorruptModelError: /m/weights.safetensors is not a valid safetensors file ...
    """

    @classmethod
    def of_field(cls, what: str, field: str, want: str, value, then: str = "") -> CorruptModelError:
        """``{what}: {field} must be {want}. Received: {field}={value!r}`` (the value
        cut at 80 characters), followed by ``then`` as it is.

        Example:
            >>> print(CorruptModelError.of_field("/ckpt/state.json is damaged", "epoch", "2", -1))
            /ckpt/state.json is damaged: epoch must be 2. Received: epoch=-1
        """
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:80] + "..."
        return cls(f"{what}: {field} must be {want}. Received: {field}={shown}{then}")


class ModelNotFoundError(SparkDLError, FileNotFoundError):
    """Nothing is saved at the path given to ``TorchModel.load`` or ``TorchEstimator.load``.

    Example:
        >>> issubclass(ModelNotFoundError, FileNotFoundError)
        True
    """


class PathExistsError(SparkDLError, FileExistsError):
    """Saving onto a path that holds something, without ``write().overwrite()``.

    Example:
        >>> issubclass(PathExistsError, FileExistsError)
        True
    """
