"""What a training run reports back: per-epoch metrics, backend and workers.

Example:
    >>> h = TrainingHistory(epochs=[{"epoch": 1, "train_loss": 0.5}], backend="torch")
    >>> h.metric("train_loss")
    [0.5]
    >>> TrainingHistory.from_dict(h.to_dict()) == h
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class TrainingHistory:
    """The record of one ``fit``.

    Attributes:
        epochs: one dict per epoch: ``epoch``, ``train_loss``, ``train_accuracy``
            (classifiers), ``val_loss``/``val_accuracy`` when validating,
            row counts and ``seconds``.
        backend: the allreduce backend that ran.
        num_workers: ranks that trained.
        workers: per rank: ``rank``, ``pid``, ``executor_id``, ``host``, row counts,
            ``device``, ``backend_size``, ``warm_process`` (the rank ran in a
            process an earlier fit left imported on its executor) and ``seconds``
            (its phases: ``shard_write``, ``meet``, ``rank``, and within ``rank``
            ``backend_start``, ``train``, ``backend_stop`` where a child reports them).
        resumed_from_epoch: the checkpoint's epoch this fit continued from (0: none);
            ``epochs`` then starts with the epochs recorded in that checkpoint.
        attempts: one dict per run of the barrier job: ``attempt`` (1, 2, ...),
            ``started``/``ended`` (UTC, ISO 8601), ``status`` (``finished`` or
            ``failed``), ``resumed_from_epoch``; a failed one also ``cause`` and,
            where Spark names them, ``failed_rank`` and ``failed_executor``.
    """

    epochs: list[dict] = field(default_factory=list)
    backend: str = ""
    num_workers: int = 0
    workers: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0
    attempts: list[dict] = field(default_factory=list)

    @property
    def restarts(self) -> int:
        """How many times the barrier job ran again after a failure."""
        return max(len(self.attempts) - 1, 0)

    def metric(self, name: str) -> list:
        """The values of one metric, epoch by epoch (``None`` where absent)."""
        return [e.get(name) for e in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, i: int) -> dict:
        return self.epochs[i]

    def to_dict(self) -> dict:
        """A dict of strict JSON: a diverged run's NaN or infinite loss becomes
        ``"NaN"``/``"Infinity"``/``"-Infinity"``, as Spark writes non-finite double
        Params, since Spark's JVM metadata reader refuses bare ``NaN``.

        Example:
            >>> TrainingHistory([{"train_loss": float("nan")}]).to_dict()["epochs"]
            [{'train_loss': 'NaN'}]
        """
        data = asdict(self)
        data["epochs"] = _map_floats(data["epochs"], _encode)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainingHistory:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "epochs": _map_floats(data.get("epochs", []), _decode)})


_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _encode(value):
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _decode(value):
    return _NON_FINITE.get(value, value) if isinstance(value, str) else value


def _map_floats(value, fn):
    if isinstance(value, dict):
        return {k: _map_floats(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_floats(v, fn) for v in value]
    return fn(value)
