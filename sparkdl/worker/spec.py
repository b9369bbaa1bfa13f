"""The frozen description of a training run that is shipped to every rank.

Example:
    >>> from sparkdl.architecture import Architecture
    >>> from sparkdl.data.shard import ShardLayout
    >>> import torch
    >>> spec = TrainSpec(architecture=Architecture.of(torch.nn.Linear(2, 1)),
    ...                  initial_weights=None, loss="mse", optimizer="sgd",
    ...                  optimizer_params={"lr": 0.1}, layout=ShardLayout(("f",), "y", False),
    ...                  batch_size=8, epochs=1, seed=0, num_workers=1, backend="torch")
    >>> spec.epochs
    1
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from sparkdl.architecture import Architecture
from sparkdl.checkpoints import RunOutputs
from sparkdl.data.shard import ShardLayout
from sparkdl.lr_schedulers import SchedulerPlan
from sparkdl.objective import Objective
from sparkdl.rendezvous import RendezvousAddress
from sparkdl.validation import (
    require_non_negative_int,
    require_positive,
    require_positive_int,
)
from sparkdl.worker.early_stopping import EarlyStopping
from sparkdl.worker.jvm_rendezvous import JvmRendezvousAddress
from sparkdl.worker.precision import check_precision


@dataclass(frozen=True)
class TrainSpec:
    """Everything a rank needs to train, and nothing from the driver's objects.

    Attributes:
        architecture: the network structure.
        initial_weights: safetensors bytes for a module given as an instance;
            ``None`` for a factory (rank 0's seeded init is broadcast).
        loss: a loss name or callable.
        optimizer: an optimizer name or ``callable(params)``.
        optimizer_params: keyword arguments of a named optimizer.
        layout: which shard columns hold features, labels and the validation flag.
        batch_size: rows per rank per step.
        epochs: passes over the data.
        seed: seeds model init, shuffling and dropout.
        num_workers: ranks in the barrier job.
        backend: collective backend name.
        shuffle: reshuffle each rank's rows every epoch.
        timeout_s: rendezvous and collective timeout.
        backend_options: backend-specific settings.
        backward_passes_per_step: batches whose gradients are accumulated locally
            before they are combined across ranks and the optimizer steps.
        rendezvous: the driver's rendezvous service; ``None`` to meet through
            ``BarrierTaskContext.allGather``. Under the Scala estimator, a
            :class:`~sparkdl.worker.jvm_rendezvous.JvmRendezvousAddress`: ranks
            meet through their JVM tasks, but rank 0 hands the driver its state.
        outputs: where rank 0 writes checkpoints and training logs, and the
            checkpoint this run resumes from.
        state_interval: every this many epochs rank 0 hands its training state
            to the driver (through ``rendezvous``), which a restart after a lost
            executor resumes from; 0: never.
        progress_interval_s: rank 0 sends its live metrics to the driver (through
            ``rendezvous``): every epoch's record, and a step report at most this
            often within an epoch; 0: no live metrics.
        lr_scheduler: the learning-rate scheduler, or ``None``.
        gradient_clip_norm: clip the summed gradients' total norm to this; 0: never.
        early_stopping: when to stop before ``epochs``, or ``None``.
        precision: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"``.
        metrics: metric names in the history; ``None`` for the task's default
            (accuracy for classifiers).
        loss_weights: per output of a multi-output network, its loss's weight.
        labels: the label columns of a multi-output network (``loss`` is then one
            loss per output), for the history's keys; ``None``: one output.
    """

    architecture: Architecture
    initial_weights: bytes | None
    loss: str | Callable | tuple
    optimizer: str | Callable
    optimizer_params: dict
    layout: ShardLayout
    batch_size: int
    epochs: int
    seed: int
    num_workers: int
    backend: str
    shuffle: bool = True
    timeout_s: float = 600.0
    backend_options: dict = field(default_factory=dict)
    backward_passes_per_step: int = 1
    rendezvous: RendezvousAddress | JvmRendezvousAddress | None = None
    outputs: RunOutputs = field(default_factory=RunOutputs)
    state_interval: int = 0
    progress_interval_s: float = 0.0
    lr_scheduler: SchedulerPlan | None = None
    gradient_clip_norm: float = 0.0
    early_stopping: EarlyStopping | None = None
    precision: str = "32"
    metrics: tuple[str, ...] | None = None
    loss_weights: tuple[float, ...] | None = None
    labels: tuple[str, ...] | None = None

    @functools.cached_property
    def objective(self) -> Objective:
        """The losses of the network's outputs, combined."""
        return Objective.of(self.loss, self.labels, self.loss_weights)

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs", "num_workers", "backward_passes_per_step"):
            require_positive_int(name, getattr(self, name))
        require_positive("timeout_s", self.timeout_s)
        require_non_negative_int("state_interval", self.state_interval)
        if self.gradient_clip_norm:
            require_positive("gradient_clip_norm", self.gradient_clip_norm)
        check_precision(self.precision)
