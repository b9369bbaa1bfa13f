"""Checkpoints and training logs of a fit, on any storage workers can write.

Layout under ``checkpointDir`` (the same on local disk and in HDFS)::

    epoch-0002/weights.safetensors   the network's state dict
    epoch-0002/optimizer.pt          the optimizer's state dict (torch.save), with the
                                     learning-rate scheduler's, the loss scaler's and
                                     early stopping's state under the key "sparkdl"
    epoch-0002/state.json            epoch, history so far, parameter shapes, the
                                     size and SHA-256 of the two files above;
                                     written last: a checkpoint without it is incomplete

and under ``logDir``: ``metrics.jsonl``, one JSON object per finished epoch,
rewritten after every epoch so it can be followed while the fit runs, and
``events.out.tfevents.0.sparkdl``, the same figures (plus the learning rate and
per-step running loss) for ``tensorboard --logdir``
(:mod:`sparkdl.worker.tensorboard_events`).

Rank 0 writes both (every rank holds the same weights). Each file lands under a
temporary name and is renamed into place (local disk), and ``state.json`` comes
last, so an interrupted checkpoint is never taken for a complete one. A fit whose
``checkpointDir`` holds a complete checkpoint resumes after its epoch, with the
weights, the optimizer state and the shuffling of an uninterrupted run. Resuming
checks the checkpoint first: a damaged one (a file missing, truncated or changed
since it was written) raises :class:`~sparkdl.errors.CorruptModelError` naming the
file, before any job starts.

Example:
    >>> checkpoint_name(3)
    'epoch-0003'
    >>> checkpoint_epoch("epoch-0012"), checkpoint_epoch("_tmp")
    (12, None)
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import re
import time
from dataclasses import dataclass

import torch

from sparkdl.errors import ConfigError, CorruptModelError
from sparkdl.storage import Storage, StorageLocation, open_storage

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
METRICS = "metrics.jsonl"
#: The key of the optimizer state dict holding the rest of the training state.
EXTRA_KEY = "sparkdl"
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


class EpochSnapshot:
    """Rank 0's weights and optimizer state after an epoch, each serialized at most
    once however many copies are made of it (the driver's state and a checkpoint due
    the same epoch share the bytes).

    Example::

        snapshot = EpochSnapshot(module, optimizer)
        snapshot.weights, snapshot.optimizer_state   # safetensors, torch.save bytes
    """

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 extra: dict | None = None) -> None:
        self.module = module
        self._optimizer = optimizer
        self._extra = extra

    @functools.cached_property
    def weights(self) -> bytes:
        from sparkdl.architecture import weights_to_bytes

        return weights_to_bytes(self.module)

    @functools.cached_property
    def optimizer_state(self) -> bytes:
        buffer = io.BytesIO()
        state = self._optimizer.state_dict()
        if self._extra:
            state = {**state, EXTRA_KEY: self._extra}
        torch.save(state, buffer)
        return buffer.getvalue()


class RunWriter:
    """Rank 0's writer of :class:`RunOutputs`, called after every epoch."""

    def __init__(self, outputs: RunOutputs, epochs: int) -> None:
        self.outputs = outputs
        self.epochs = epochs
        self._ckpt: Storage | None = (open_storage(outputs.checkpoints)
                                      if outputs.checkpoints else None)
        self._logs: Storage | None = open_storage(outputs.logs) if outputs.logs else None
        self._history = list(outputs.resume.history) if outputs.resume else []
        self._events = None
        self._last_step_write = time.monotonic()
        if self._logs is not None:
            from sparkdl.worker.tensorboard_events import EventLog

            self._events = EventLog()
            for record in self._history:  # a resumed fit's file holds every epoch
                self._events.epoch(record)

    def after_step(self, global_step: int, loss: float, samples_per_s: float | None,
                   interval_s: float) -> None:
        """Log a step's running figures to TensorBoard, at most every ``interval_s``."""
        if self._events is None or time.monotonic() - self._last_step_write < interval_s:
            return
        self._last_step_write = time.monotonic()
        self._events.scalar("step/train_loss", loss, global_step)
        if samples_per_s is not None:
            self._events.scalar("step/samples_per_s", samples_per_s, global_step)
        self._write_events()

    def _write_events(self) -> None:
        from sparkdl.worker.tensorboard_events import EVENTS_FILE

        self._logs.write(EVENTS_FILE, self._events.to_bytes())

    def after_epoch(self, record: dict, module: torch.nn.Module,
                    optimizer: torch.optim.Optimizer,
                    snapshot: EpochSnapshot | None = None, last: bool = False) -> None:
        """Log ``record``; checkpoint if this epoch is due (from ``snapshot``, the
        epoch's serialized state, when the caller already has one) or is the ``last``
        (early stopping ends a fit before ``epochs``)."""
        from sparkdl.architecture import state_dict_of

        self._history.append(record)
        epoch = record["epoch"]
        if self._logs is not None:
            self._logs.write(METRICS, "".join(json.dumps(r) + "\n" for r in self._history)
                             .encode())
            self._events.epoch(record, lr=record.get("lr", optimizer.param_groups[0].get("lr")))
            self._write_events()
        if self._ckpt is None or (epoch % self.outputs.interval and epoch != self.epochs
                                  and not last):
            return
        name = checkpoint_name(epoch)
        snapshot = snapshot or EpochSnapshot(module, optimizer)
        files = {WEIGHTS: snapshot.weights, OPTIMIZER: snapshot.optimizer_state}
        for file, data in files.items():
            self._ckpt.write(f"{name}/{file}", data)
        state = {"epoch": epoch, "history": self._history,
                 "parameters": parameter_shapes(state_dict_of(module)),
                 "files": {file: _fingerprint(data) for file, data in files.items()}}
        self._ckpt.write(f"{name}/{STATE}", json.dumps(state).encode())


def _fingerprint(data: bytes) -> dict:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def load_optimizer_state(optimizer: torch.optim.Optimizer, data: bytes,
                         device: torch.device, source: str = OPTIMIZER) -> dict:
    """Restore a checkpoint's optimizer state into ``optimizer``; return the rest of
    the training state saved with it (scheduler, loss scaler, early stopping).

    Raises:
        CorruptModelError: if ``data`` is not an optimizer state dict.
        ConfigError: if it is another optimizer's (other parameter groups).
    """
    state = dict(_optimizer_state(data, source, device))
    extra = state.pop(EXTRA_KEY, None) or {}
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ConfigError(
            f"{source} holds the state of another optimizer: {type(e).__name__}: {e}. Use "
            "the optimizer and optimizerParams of the fit that wrote it, or a new "
            "checkpointDir.") from e
    return extra


def _optimizer_state(data: bytes, source: str, device="cpu") -> dict:
    """Parse a ``torch.save``-d optimizer state dict, tensors only (no code runs)."""
    try:
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as e:  # the zip reader and the restricted unpickler raise many kinds
        raise CorruptModelError(f"{source} is not a saved optimizer state ({len(data)} "
                                f"bytes): {type(e).__name__}: {_first_line(e)}") from e
    if not (isinstance(state, dict) and isinstance(state.get("state"), dict)
            and isinstance(state.get("param_groups"), list)):
        raise CorruptModelError(f"{source} is not a saved optimizer state: it holds a "
                                f"{type(state).__name__}, not a dict with 'state' and "
                                "'param_groups'")
    return state


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def latest_checkpoint(location: StorageLocation,
                      shapes: dict[str, list[int]]) -> Resume | None:
    """The newest complete and intact checkpoint at ``location`` (read on the driver),
    or None.

    A damaged checkpoint (see :func:`checkpoint_at`) is skipped with a warning
    naming the file, falling back to the one before it: one bad write must not
    block every later fit.

    Raises:
        ConfigError: if it was taken from a network with other parameters.
    """
    store = open_storage(location)
    epochs = sorted(e for e in map(checkpoint_epoch, store.list("")) if e is not None)
    for epoch in reversed(epochs):
        if STATE not in store.list(checkpoint_name(epoch)):
            continue  # interrupted while writing it
        try:
            return checkpoint_at(location, epoch, shapes, store)
        except CorruptModelError as exc:
            log.warning("sparkdl: skipping a damaged checkpoint: %s", exc)
    return None


def checkpoint_at(location: StorageLocation, epoch: int, shapes: dict[str, list[int]],
                  store: Storage | None = None) -> Resume:
    """The checkpoint taken after ``epoch`` epochs at ``location``, checked.

    Read through the workers' own client rather than Hadoop's FileSystem API:
    the Hadoop client bundled with Spark cannot parse WebHDFS error replies
    (its shaded Jersey runtime is missing), so ``webhdfs://`` fails there.

    Raises:
        ConfigError: if it was taken from a network with other parameters.
        CorruptModelError: naming the file, if the checkpoint is incomplete or
            damaged: ``state.json`` missing or malformed, a file missing, or a file
            whose size or SHA-256 differs from what ``state.json`` recorded (or, for
            checkpoints written before those were recorded, that does not parse).
    """
    store = store or open_storage(location)
    name = checkpoint_name(epoch)
    present = store.list(name)
    where = f"{(location.url or location.root).rstrip('/')}/{name}"
    if STATE not in present:
        raise CorruptModelError(f"{where}/{STATE} is missing: the checkpoint was not "
                                f"completed. {_DAMAGED.format(where=where)}")
    state = parse_state(store.read(f"{name}/{STATE}"), f"{where}/{STATE}", epoch)
    if state["parameters"] != shapes:
        raise ConfigError(
            f"checkpointDir={location.url!r} holds checkpoints of another network: its "
            f"{name} has parameters {_describe(state['parameters'])}, "
            f"this model has {_describe(shapes)}. Use a new checkpointDir for this "
            "model, or delete the old checkpoints.")
    files = {}
    for file in (WEIGHTS, OPTIMIZER):
        if file not in present:
            raise CorruptModelError(
                f"{where}/{file} is missing, though {STATE} marks the checkpoint "
                f"complete. {_DAMAGED.format(where=where)}")
        files[file] = store.read(f"{name}/{file}")
    check_checkpoint_files(files, state, where)
    return Resume(epoch, files[WEIGHTS], files[OPTIMIZER], state["history"])


_DAMAGED = ("Delete {where} to resume from the checkpoint before it, or use a new "
            "checkpointDir.")


def parse_state(data: bytes, source: str, epoch: int) -> dict:
    """Parse and check a checkpoint's ``state.json``.

    Raises:
        CorruptModelError: naming ``source`` and what is wrong.

    Example:
        >>> parse_state(b'{"epoch": 2, "history": []', "ckpt/epoch-0002/state.json", 2)
        Traceback (most recent call last):
        ...
        sparkdl.errors.CorruptModelError: ckpt/epoch-0002/state.json is not valid JSON ...
    """
    where = source.rsplit("/", 1)[0] if "/" in source else "the checkpoint directory"
    damaged = _DAMAGED.format(where=where)
    try:
        state = json.loads(data)
    except RecursionError:
        raise CorruptModelError(f"{source} is not valid JSON (nested too deeply). "
                                f"{damaged}") from None
    except ValueError as e:
        raise CorruptModelError(f"{source} is not valid JSON ({len(data)} bytes): {e}. "
                                f"{damaged}") from None

    def bad(field: str, want: str, value) -> CorruptModelError:
        return CorruptModelError.of_field(f"{source} is damaged", field, want, value,
                                          f". {damaged}")

    if not isinstance(state, dict):
        raise bad("the state", "a JSON object", state)
    if type(state.get("epoch")) is not int or state["epoch"] != epoch:
        raise bad("epoch", f"{epoch}, the epoch of its directory", state.get("epoch"))
    history = state.get("history")
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise bad("history", "a list of objects", history)
    params = state.get("parameters")
    if not (isinstance(params, dict) and all(
            isinstance(v, list) and all(type(d) is int and d >= 0 for d in v)
            for v in params.values())):
        raise bad("parameters", "an object of name -> shape (a list of sizes)", params)
    files = state.get("files")
    if files is not None and not (isinstance(files, dict) and all(
            isinstance(files.get(f), dict) and type(files[f].get("bytes")) is int
            and isinstance(files[f].get("sha256"), str) for f in (WEIGHTS, OPTIMIZER))):
        raise bad("files", f"an object giving bytes and sha256 of {WEIGHTS} and {OPTIMIZER}",
                  files)
    return state


def check_checkpoint_files(files: dict[str, bytes], state: dict, where: str) -> None:
    """Check a checkpoint's weights and optimizer state against its ``state.json``.

    With the sizes and SHA-256 that ``state.json`` records, the bytes must match
    them; a checkpoint written before those were recorded is parsed instead.

    Raises:
        CorruptModelError: naming the file that does not match or parse.
    """
    from sparkdl.architecture import weights_from_bytes

    damaged = _DAMAGED.format(where=where)
    recorded = state.get("files")
    if recorded is not None:
        for file, data in files.items():
            want = recorded[file]
            if len(data) != want["bytes"]:
                raise CorruptModelError(
                    f"{where}/{file} has {len(data)} bytes, {STATE} recorded {want['bytes']}: "
                    f"it was truncated or changed after it was written. {damaged}")
            if hashlib.sha256(data).hexdigest() != want["sha256"]:
                raise CorruptModelError(
                    f"{where}/{file} does not have the SHA-256 {STATE} recorded: it was "
                    f"damaged or changed after it was written. {damaged}")
        return
    weights = weights_from_bytes(files[WEIGHTS], f"{where}/{WEIGHTS}")
    shapes = parameter_shapes(weights)
    if shapes != state["parameters"]:
        raise CorruptModelError(
            f"{where}/{WEIGHTS} holds parameters {_describe(shapes)}, {STATE} recorded "
            f"{_describe(state['parameters'])}. {damaged}")
    _optimizer_state(files[OPTIMIZER], f"{where}/{OPTIMIZER}")


def _describe(shapes: dict[str, list[int]]) -> str:
    text = ", ".join(f"{k}{v}" for k, v in shapes.items())
    return text if len(text) < 300 else text[:300] + "..."
