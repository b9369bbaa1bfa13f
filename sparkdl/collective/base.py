"""The interface every allreduce backend implements.

A backend is started once per rank inside a barrier task. Rendezvous is split in
two so that it needs a single ``BarrierTaskContext.allGather``: ``advertise``
returns what this rank must tell the others (rank 0 typically opens a server and
returns its port), then ``start`` receives every rank's answer.

Gradient reduction is a **sum**: the training loop already scales each rank's
loss by ``local_rows / global_rows``, so a sum is the mean over the global batch
even when ranks hold different numbers of rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the Spark task that hands a rank to a child never imports torch
    import torch


@dataclass(frozen=True)
class PeerInfo:
    """What one rank told the others at rendezvous.

    Attributes:
        rank: the rank (the barrier task's partition id).
        host: address other executors can reach this rank on.
        pid: the worker's process id.
        executor_id: the Spark executor running the rank.
        train_rows: rows of this rank's shard used for training.
        validation_rows: rows of this rank's shard used for validation.
        extra: backend-specific fields from :meth:`Collective.advertise`.
    """

    rank: int
    host: str
    pid: int
    executor_id: str
    train_rows: int
    validation_rows: int
    extra: dict = field(default_factory=dict)


class Collective(ABC):
    """An allreduce backend: rendezvous, broadcast, gradient and metric reduction.

    A backend holds collectives only. Which process a rank trains in is the
    worker's :class:`~sparkdl.worker.rank_process.ProcessPolicy`, and gradient
    accumulation is the training loop's, told to :meth:`prepare_optimizer`. Its
    configuration is fixed at construction; only its connection state changes.

    Example:
        >>> from sparkdl.collective import get_backend
        >>> get_backend("torch").name
        'torch'
    """

    name: str = ""

    @abstractmethod
    def advertise(self, rank: int, hosts: list[str]) -> dict:
        """Prepare rendezvous; return JSON-friendly fields to share with peers.

        Args:
            rank: this rank.
            hosts: every rank's host, known from the barrier context before any
                exchange, so servers can be fully set up before peers connect.
        """

    @abstractmethod
    def start(self, rank: int, peers: list[PeerInfo], device: torch.device,
              timeout_s: float) -> None:
        """Join the group once every peer's :class:`PeerInfo` is known."""

    @abstractmethod
    def size(self) -> int:
        """Number of ranks as the started backend itself reports it."""

    @abstractmethod
    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Overwrite parameters and buffers on every rank with rank 0's."""

    def prepare_optimizer(self, optimizer: torch.optim.Optimizer, module: torch.nn.Module,
                          backward_passes_per_step: int = 1) -> torch.optim.Optimizer:
        """Return the optimizer to step with (a backend may wrap it).

        Args:
            optimizer: the optimizer over ``module``'s parameters.
            module: the network, already broadcast from rank 0.
            backward_passes_per_step: backward passes the training loop accumulates
                locally before each :meth:`step`; a backend that combines
                gradients during backward (Horovod's hooks) waits for the last one.
        """
        return optimizer

    def loss_weight(self, local_rows: int, global_rows: int) -> float:
        """Factor on this rank's mean batch loss so that combining gradients gives the
        global-batch mean (for a sum: this rank's share of the global batch)."""
        return local_rows / float(global_rows)

    @abstractmethod
    def step(self, optimizer: torch.optim.Optimizer, module: torch.nn.Module,
             update: Callable[[torch.optim.Optimizer], None] | None = None) -> None:
        """Sum gradients across ranks, then step the optimizer.

        Args:
            optimizer: what :meth:`prepare_optimizer` returned.
            module: the network whose gradients are summed.
            update: applies the summed gradients instead of ``optimizer.step()``
                (unscaling, clipping and a loss scaler's step need the sums).
        """

    @abstractmethod
    def allreduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a small tensor (metrics) across ranks and return the result."""

    @abstractmethod
    def shutdown(self) -> None:
        """Leave the group and release sockets; safe to call twice."""
