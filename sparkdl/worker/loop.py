"""The training loop of one rank, independent of Spark.

Runs on a :class:`~sparkdl.data.shard.LocalShard` and a started
:class:`~sparkdl.collective.Collective`, so it can be tested with a single
process. Every rank runs the same number of steps (see
:mod:`sparkdl.data.schedule`); the loss of each rank is scaled by
``local_rows / global_rows`` so that summed gradients are the global-batch mean.
"""

from __future__ import annotations

import logging
import time
import traceback

import numpy as np
import torch

from sparkdl.architecture import weights_from_bytes
from sparkdl.checkpoints import EpochSnapshot, RunWriter, load_optimizer_state
from sparkdl.collective.base import Collective, PeerInfo
from sparkdl.data.schedule import (
    bucket_order,
    epoch_order,
    global_batch_rows,
    steps_per_epoch,
)
from sparkdl.data.shard import LocalShard
from sparkdl.errors import ConfigError, SparkDLError, TrainingCodeError
from sparkdl.lr_schedulers import build_scheduler
from sparkdl.metrics import METRICS, OutputSums, default_metrics
from sparkdl.optimizers import build_optimizer
from sparkdl.worker.early_stopping import EarlyStoppingState
from sparkdl.worker.precision import Precision
from sparkdl.worker.spec import TrainSpec

log = logging.getLogger(__name__)


def build_module(spec: TrainSpec, device: torch.device) -> torch.nn.Module:
    """Instantiate the network with its initial weights, seeded, on ``device``."""
    torch.manual_seed(spec.seed)
    resume = spec.outputs.resume
    weights = resume.weights if resume else spec.initial_weights
    state = weights_from_bytes(weights) if weights else None
    return spec.architecture.build(state).to(device)


def _zero_contribution(module: torch.nn.Module) -> None:
    # A rank without rows this step still takes part in the allreduce; a zero
    # loss over all parameters gives it zero gradients through the same hooks.
    total = sum((p.sum() for p in module.parameters() if p.requires_grad),
                start=torch.zeros(()))
    (total * 0.0).backward()


def _metric_names(spec: TrainSpec, objective) -> list[tuple[str, ...]]:
    """Per output, the metrics it reports: those of ``metrics`` that apply to its task
    (several outputs may have different tasks), or the task's default."""
    if spec.metrics is None:
        return [default_metrics(task) for task in objective.tasks]
    return [tuple(m for m in spec.metrics if task in METRICS[m]) for task in objective.tasks]


def _train_metrics(names: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The metrics of the training rows: AUC needs every score of the set gathered
    on every rank, affordable for a validation set but not for the training set."""
    return [tuple(m for m in per_output if m != "auc") for per_output in names]


def _global_step_weights(shard: LocalShard, order: np.ndarray, steps: int, batch_size: int,
                         collective: Collective) -> np.ndarray | None:
    """Each step's total sample weight over all ranks (one allreduce per epoch), so every
    rank's weighted loss is its exact share of the global batch's weighted mean."""
    weights = shard.sample_weights(order)
    if weights is None:
        return None
    cumulative = np.concatenate([[0.0], np.cumsum(weights, dtype=np.float64)])
    bounds = np.minimum(np.arange(steps + 1) * batch_size, len(order))
    local = torch.from_numpy(cumulative[bounds[1:]] - cumulative[bounds[:-1]])
    return collective.allreduce_sum(local).numpy()


def _batches(index: np.ndarray, batch_size: int):
    for start in range(0, len(index), batch_size):
        yield index[start:start + batch_size]


def train_loop(spec: TrainSpec, shard: LocalShard, collective: Collective, rank: int,
               peers: list[PeerInfo], device: torch.device) -> tuple[torch.nn.Module, list[dict]]:
    """Train on this rank's shard; return the module and per-epoch history.

    Args:
        spec: the run description.
        shard: this rank's rows.
        collective: a started backend.
        rank: this rank.
        peers: every rank's rendezvous info (row counts included).
        device: where to compute.

    Returns:
        ``(module, history)``; the module is identical on every rank.

    Example::

        collective.start(rank, peers, device, spec.timeout_s)
        module, history = train_loop(spec, shard, collective, rank, peers, device)
        history[-1]["train_loss"]
    """
    objective = spec.objective
    try:
        module = build_module(spec, device)
        built = build_optimizer(spec.optimizer, spec.optimizer_params, module.parameters())
    except Exception as exc:
        raise _in_user_code(exc, spec, rank, 0, -1) from exc
    collective.broadcast_module(module)
    optimizer = collective.prepare_optimizer(built, module, spec.backward_passes_per_step)
    train_rows = [p.train_rows for p in peers]
    steps = steps_per_epoch(train_rows, spec.batch_size)
    parts = _Parts(spec, module, optimizer, device, steps, any(p.validation_rows for p in peers))
    outputs = spec.outputs
    if outputs.resume:
        parts.load(load_optimizer_state(optimizer, outputs.resume.optimizer_state, device))
    writer = RunWriter(outputs, spec.epochs) if rank == 0 and (
        outputs.checkpoints or outputs.logs) else None

    global_rows = global_batch_rows(train_rows, spec.batch_size)
    trained = np.cumsum(global_rows)  # rows all ranks trained after each step
    reporter = _progress_reporter(spec, rank)
    try:
        return _epochs(spec, shard, collective, rank, peers, device, module, optimizer,
                       objective, writer, global_rows, trained, reporter, parts)
    finally:
        if reporter is not None:
            reporter.close()


class _Parts:
    """The optional pieces of a run around the optimizer: learning-rate scheduler,
    mixed precision, gradient clipping and early stopping, and their saved state."""

    def __init__(self, spec: TrainSpec, module, optimizer, device, steps: int,
                 validating: bool):
        self.module = module
        self.precision = Precision.of(spec.precision, device)
        self.clip = spec.gradient_clip_norm
        self.stopping = spec.early_stopping
        if self.stopping is not None and self.stopping.monitor.startswith("val_") and \
                not validating:
            # before the first epoch, not after it: validationFraction held no row out
            raise ConfigError(f"earlyStopping monitors {self.stopping.monitor!r} but no row "
                              "is held out for validation (too few rows for "
                              "validationFraction, or no true validationCol): raise "
                              "validationFraction or monitor a train_* metric.")
        self.stop_state = EarlyStoppingState()
        accumulate = spec.backward_passes_per_step
        self.scheduler = build_scheduler(spec.lr_scheduler, optimizer, spec.epochs,
                                         -(-steps // accumulate), validating) \
            if spec.lr_scheduler is not None else None

    @property
    def custom_update(self) -> bool:
        return bool(self.clip) or self.precision.scaler is not None

    def update(self, optimizer) -> None:
        """The optimizer step on gradients already summed across ranks."""
        self.precision.unscale(optimizer)
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip)
        self.precision.step(optimizer)

    def state(self) -> dict:
        """What checkpoints keep next to the optimizer state."""
        out = {}
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler.scheduler.state_dict()
        if self.precision.scaler is not None:
            out["scaler"] = self.precision.state_dict()
        if self.stopping is not None:
            out["early_stopping"] = self.stop_state.to_dict()
        return out

    def load(self, extra: dict) -> None:
        if self.scheduler is not None and extra.get("scheduler"):
            self.scheduler.scheduler.load_state_dict(extra["scheduler"])
        self.precision.load_state_dict(extra.get("scaler"))
        if self.stopping is not None:  # a resume without earlyStopping trains on
            self.stop_state = EarlyStoppingState.from_dict(extra.get("early_stopping"))

    def after_epoch(self, record: dict) -> bool:
        """Step an epoch scheduler and early stopping; True when training ends here."""
        if self.scheduler is not None:
            self.scheduler.after_epoch(record)
        if self.stopping is None:
            return False
        reason = self.stopping.update(self.stop_state, record, self.module)
        if reason is None:
            return False
        self.stop_state.stopped = reason
        record["stopped_early"] = reason
        best = self.stop_state.best_weights
        if self.stopping.restore_best and best is not None:
            self.module.load_state_dict(best)
            record["restored_epoch"] = self.stop_state.best_epoch
        return True


#: Seconds between step scalars in logDir's TensorBoard file when no progress
#: interval is set (barrier mode, the Scala estimator).
DEFAULT_STEP_LOG_S = 5.0


def _progress_reporter(spec: TrainSpec, rank: int):
    post = getattr(spec.rendezvous, "post_progress", None)  # the JVM's takes none
    if rank != 0 or post is None or not spec.progress_interval_s:
        return None
    from sparkdl.worker.progress import ProgressReporter

    return ProgressReporter(post, spec.progress_interval_s)


def _epochs(spec, shard, collective, rank, peers, device, module, optimizer, objective,
            writer, global_rows, trained, reporter, parts):
    """The epochs of :func:`train_loop`, reporting rank 0's progress to ``reporter``."""
    outputs = spec.outputs
    train_rows = [p.train_rows for p in peers]
    steps = steps_per_epoch(train_rows, spec.batch_size)
    names = _metric_names(spec, objective)
    accumulate = spec.backward_passes_per_step
    precision = parts.precision
    bucketing = any(i.padding is not None and i.padding.bucketing
                    for i in spec.layout.inputs or ())
    history = []
    if parts.stop_state.stopped:  # resumed from the checkpoint where it stopped early
        return module, history
    for epoch in range(outputs.start_epoch, spec.epochs):
        began = time.perf_counter()
        # Seeded per epoch, so dropout after a resume is what an uninterrupted run had.
        torch.manual_seed(spec.seed + 7919 * (rank + 1) + 104729 * epoch)
        module.train()
        metrics = OutputSums(_train_metrics(names), objective.tasks, objective.labels)
        lr = optimizer.param_groups[0]["lr"]
        order = shard.train_index[
            epoch_order(len(shard.train_index), spec.seed, epoch, rank, spec.shuffle)]
        if bucketing:
            order = bucket_order(order, shard.input_lengths(order), spec.batch_size,
                                 spec.seed, epoch, rank)
        global_weights = _global_step_weights(shard, order, steps, spec.batch_size,
                                              collective)
        for step in range(steps):
            index = order[step * spec.batch_size:(step + 1) * spec.batch_size]
            group_start = step - step % accumulate
            group = min(accumulate, steps - group_start)  # the last group may be short
            if step == group_start:
                optimizer.zero_grad()
            if len(index):
                args = _arguments(shard, index, device, spec, rank, training=True)
                targets = [torch.from_numpy(t).to(device) for t in shard.targets(index)]
                w = shard.sample_weights(index)
                if w is None:
                    weight = collective.loss_weight(len(index), int(global_rows[step])) / group
                else:  # this rank's share of the step's total weight, over all ranks
                    weight = collective.loss_weight(float(w.sum()), global_weights[step]) \
                        / group if global_weights[step] > 0 else 0.0
                try:
                    with precision.autocast():
                        output = module(*args)
                        mean_loss, losses = objective.compute(output, targets, w, device)
                    precision.backward(mean_loss * weight)
                except Exception as exc:
                    raise _in_user_code(exc, spec, rank, epoch, step) from exc
                metrics.add([o.detach() for o in objective.outputs(output)], targets,
                            mean_loss.detach(), [p.detach() for p in losses],
                            None if w is None else float(w.sum()))
                if reporter is not None:
                    reporter.step(epoch + 1, step + 1, steps, metrics.running_loss,
                                  int(trained[step]), time.perf_counter() - began)
                if writer is not None:
                    elapsed = time.perf_counter() - began
                    writer.after_step(epoch * steps + step + 1, metrics.running_loss,
                                      trained[step] / elapsed if elapsed > 0 else None,
                                      spec.progress_interval_s or DEFAULT_STEP_LOG_S)
            else:
                _zero_contribution(module)
            if step == group_start + group - 1:
                lr = optimizer.param_groups[0]["lr"]  # this step's, before a scheduler moves it
                if parts.custom_update:
                    collective.step(optimizer, module, parts.update)
                else:
                    collective.step(optimizer, module)
                if parts.scheduler is not None:
                    parts.scheduler.after_step()
        record = {"epoch": epoch + 1, **metrics.reduce(collective, rank, "train")}
        if any(p.validation_rows for p in peers):
            record.update(_validate(module, shard, objective, collective, spec, device, rank,
                                    epoch, names, precision))
        record["lr"] = lr
        record["seconds"] = time.perf_counter() - began
        stop = parts.after_epoch(record)
        history.append(record)
        if reporter is not None:
            reporter.epoch(record, spec.epochs)
        # The driver's copy first: once an epoch shows in the logs, a restart resumes
        # after it.
        snapshot = EpochSnapshot(module, optimizer, parts.state())
        if rank == 0 and spec.rendezvous is not None and spec.state_interval and \
                (epoch + 1) % spec.state_interval == 0 and epoch + 1 < spec.epochs and not stop:
            previous = outputs.resume.history if outputs.resume else []
            _hand_state_to_driver(spec, epoch + 1, previous + history, snapshot)
        if writer is not None:
            writer.after_epoch(record, module, optimizer, snapshot, last=stop)
        if stop:
            log.info("sparkdl: stopping after epoch %d: %s", epoch + 1, record["stopped_early"])
            break
    return module, history


def _arguments(shard: LocalShard, index, device, spec: TrainSpec, rank: int,
               training: bool) -> list[torch.Tensor]:
    """The batch's ``forward`` arguments. A row the data path cannot use (an image that
    does not decode, say) is the user's data, not a lost peer: the driver hears it
    first, so the fit fails with it, unretried, whatever a peer's dropped connection
    tells Spark."""
    try:
        arrays = shard.arguments(index, training=training)
    except SparkDLError as exc:
        if spec.rendezvous is not None:
            text = "".join(traceback.format_exception(exc))
            spec.rendezvous.post_failure(rank, f"{text}\nsparkdl.errors."
                                               f"{type(exc).__name__}: {exc}")
        raise
    return [torch.from_numpy(a).to(device) for a in arrays]


def _in_user_code(exc: Exception, spec: TrainSpec, rank: int, epoch: int,
                  step: int, phase: str = "training") -> Exception:
    """``exc`` from the forward pass, loss or backward pass, as what it is.

    A collective's own failure inside backward (Horovod's gradient hooks, a
    torch.distributed error: a peer is gone) stays itself, so that the fit
    restarts; anything else is the user's code and is told to the driver first,
    which then never restarts for it, even if a peer's failure reaches Spark first.
    """
    collective_errors = tuple(getattr(torch.distributed, name) for name in ("DistError",)
                              if hasattr(torch.distributed, name))
    if isinstance(exc, collective_errors) or type(exc).__module__.startswith("horovod"):
        return exc
    where = (f"building the network or its optimizer raised {type(exc).__name__} on rank "
             f"{rank}" if step < 0
             else f"the network's forward pass, the loss or the backward pass raised "
                  f"{type(exc).__name__} on rank {rank} in epoch {epoch + 1}, {phase} step "
                  f"{step + 1}")
    error = TrainingCodeError(f"{where[0].upper()}{where[1:]}: {exc}")
    if spec.rendezvous is not None:
        text = "".join(traceback.format_exception(exc))
        spec.rendezvous.post_failure(rank, f"{text}\nsparkdl.errors.TrainingCodeError: {error}")
    return error


def _hand_state_to_driver(spec: TrainSpec, epoch: int, history: list[dict],
                          snapshot: EpochSnapshot) -> None:
    """Rank 0's state after ``epoch`` to the driver, which a restarted fit resumes from.

    Never fails training: a driver that cannot take it leaves the restart to
    ``checkpointDir`` or the first epoch.
    """
    from sparkdl.checkpoints import Resume
    from sparkdl.epoch_state import encode_state

    try:
        state = encode_state(Resume(epoch, snapshot.weights, snapshot.optimizer_state,
                                    history))
        stored = spec.rendezvous.post_state(epoch, state)
    except Exception as exc:  # noqa: BLE001 - training goes on without it
        log.warning("sparkdl: could not hand the state after epoch %d to the driver: %s",
                    epoch, exc)
        return
    if not stored:
        log.warning("sparkdl: the driver did not take the %d-byte state after epoch %d (over "
                    "its cap, spark.driver.maxResultSize=%d bytes); a restart would resume "
                    "from checkpointDir or the start", len(state), epoch,
                    spec.rendezvous.max_state_bytes)


def _validate(module, shard, objective, collective, spec, device, rank, epoch, names,
              precision) -> dict:
    module.eval()
    metrics = OutputSums(names, objective.tasks, objective.labels)
    with torch.no_grad():
        for step, index in enumerate(_batches(shard.validation_index, spec.batch_size)):
            args = _arguments(shard, index, device, spec, rank, training=False)
            targets = [torch.from_numpy(t).to(device) for t in shard.targets(index)]
            w = shard.sample_weights(index)
            try:
                with precision.autocast():
                    output = module(*args)
                    loss, losses = objective.compute(output, targets, w, device)
            except Exception as exc:
                raise _in_user_code(exc, spec, rank, epoch, step, "validation") from exc
            metrics.add(objective.outputs(output), targets, loss, losses,
                        None if w is None else float(w.sum()))
    return metrics.reduce(collective, rank, "val")
