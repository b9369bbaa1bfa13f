"""Checkpoints and training logs of a fit, on any storage workers can write.

Layout under ``checkpointDir`` (the same on local disk and in HDFS)::

    epoch-0002/weights.safetensors   the network's state dict
    epoch-0002/optimizer.pt          the optimizer's state dict (torch.save)
    epoch-0002/state.json            epoch, history so far, parameter shapes;
                                     written last: a checkpoint without it is incomplete

and under ``logDir``: ``metrics.jsonl``, one JSON object per finished epoch,
rewritten after every epoch so it can be followed while the fit runs.

Rank 0 writes both (every rank holds the same weights). A fit whose
``checkpointDir`` holds a complete checkpoint resumes after its epoch, with the
weights, the optimizer state and the shuffling of an uninterrupted run.

Example:
    >>> checkpoint_name(3)
    'epoch-0003'
    >>> checkpoint_epoch("epoch-0012"), checkpoint_epoch("_tmp")
    (12, None)
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass

import torch

from sparkdl.errors import ConfigError
from sparkdl.storage import Storage, StorageLocation, open_storage

WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
METRICS = "metrics.jsonl"
_NAME = re.compile(r"epoch-(\d{4,})")


def checkpoint_name(epoch: int) -> str:
    """The directory of the checkpoint taken after ``epoch`` (1-based) epochs."""
    return f"epoch-{epoch:04d}"


def checkpoint_epoch(name: str) -> int | None:
    """The epoch of a checkpoint directory name, or None for anything else."""
    found = _NAME.fullmatch(name)
    return int(found.group(1)) if found else None


def parameter_shapes(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """What identifies a network's checkpoints: its state dict's names and shapes."""
    return {name: list(t.shape) for name, t in state.items()}


@dataclass(frozen=True)
class Resume:
    """A checkpoint to continue from: after ``epoch`` epochs."""

    epoch: int
    weights: bytes
    optimizer_state: bytes
    history: list


@dataclass(frozen=True)
class RunOutputs:
    """Where rank 0 writes checkpoints and logs, shipped in the TrainSpec.

    Attributes:
        checkpoints: the checkpoint directory, or None.
        interval: take a checkpoint every this many epochs (and after the last).
        logs: the log directory, or None.
        resume: the checkpoint this fit continues from, or None.
    """

    checkpoints: StorageLocation | None = None
    interval: int = 1
    logs: StorageLocation | None = None
    resume: Resume | None = None

    @property
    def start_epoch(self) -> int:
        return self.resume.epoch if self.resume else 0


class RunWriter:
    """Rank 0's writer of :class:`RunOutputs`, called after every epoch."""

    def __init__(self, outputs: RunOutputs, epochs: int) -> None:
        self.outputs = outputs
        self.epochs = epochs
        self._ckpt: Storage | None = (open_storage(outputs.checkpoints)
                                      if outputs.checkpoints else None)
        self._logs: Storage | None = open_storage(outputs.logs) if outputs.logs else None
        self._history = list(outputs.resume.history) if outputs.resume else []

    def after_epoch(self, record: dict, module: torch.nn.Module,
                    optimizer: torch.optim.Optimizer) -> None:
        """Log ``record``; checkpoint if this epoch is due."""
        from sparkdl.architecture import state_dict_of, weights_to_bytes

        self._history.append(record)
        epoch = record["epoch"]
        if self._logs is not None:
            self._logs.write(METRICS, "".join(json.dumps(r) + "\n" for r in self._history)
                             .encode())
        if self._ckpt is None or (epoch % self.outputs.interval and epoch != self.epochs):
            return
        name = checkpoint_name(epoch)
        buffer = io.BytesIO()
        torch.save(optimizer.state_dict(), buffer)
        self._ckpt.write(f"{name}/{WEIGHTS}", weights_to_bytes(module))
        self._ckpt.write(f"{name}/{OPTIMIZER}", buffer.getvalue())
        state = {"epoch": epoch, "history": self._history,
                 "parameters": parameter_shapes(state_dict_of(module))}
        self._ckpt.write(f"{name}/{STATE}", json.dumps(state).encode())


def load_optimizer_state(optimizer: torch.optim.Optimizer, data: bytes,
                         device: torch.device) -> None:
    """Restore a checkpoint's optimizer state into ``optimizer``."""
    optimizer.load_state_dict(torch.load(io.BytesIO(data), map_location=device,
                                         weights_only=True))


def latest_checkpoint(location: StorageLocation,
                      shapes: dict[str, list[int]]) -> Resume | None:
    """The newest complete checkpoint at ``location`` (read on the driver), or None.

    Read through the workers' own client rather than Hadoop's FileSystem API:
    the Hadoop client bundled with Spark cannot parse WebHDFS error replies
    (its shaded Jersey runtime is missing), so ``webhdfs://`` fails there.

    Raises:
        ConfigError: if it was taken from a network with other parameters.
    """
    store = open_storage(location)
    epochs = sorted(e for e in map(checkpoint_epoch, store.list("")) if e is not None)
    for epoch in reversed(epochs):
        name = checkpoint_name(epoch)
        if STATE not in store.list(name):
            continue  # interrupted while writing it
        state = json.loads(store.read(f"{name}/{STATE}"))
        if state["parameters"] != shapes:
            raise ConfigError(
                f"checkpointDir={location.url!r} holds checkpoints of another network: its "
                f"{name} has parameters {_describe(state['parameters'])}, "
                f"this model has {_describe(shapes)}. Use a new checkpointDir for this "
                "model, or delete the old checkpoints.")
        return Resume(epoch, store.read(f"{name}/{WEIGHTS}"),
                      store.read(f"{name}/{OPTIMIZER}"), state["history"])
    return None


def _describe(shapes: dict[str, list[int]]) -> str:
    text = ", ".join(f"{k}{v}" for k, v in shapes.items())
    return text if len(text) < 300 else text[:300] + "..."
