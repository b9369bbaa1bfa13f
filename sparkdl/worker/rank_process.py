"""The process a rank trains in: which one (:class:`ProcessPolicy`), and training there.

Spark reuses Python workers between tasks. torch.distributed can be started again
in a reused worker, but Horovod cannot: a second ``hvd.init()`` in the same
process crashes. So a Horovod rank trains in a fresh child interpreter that runs
exactly one rank and exits (:mod:`sparkdl.worker.rank_child`), and the task keeps
an idle, imported spare for the next fit (:mod:`sparkdl.worker.spares`); a
torch.distributed rank trains in the task's own process. Either way the rank
process runs :func:`train_in_process`: start the backend, run the training loop,
hand back a :class:`RankResult`.

Example:
    >>> ProcessPolicy.of("torch")
    ProcessPolicy(fresh_process=False, keep_warm=False, warm_idle_s=300.0)
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sparkdl.collective.horovod_backend import check_options
from sparkdl.errors import ConfigError

if TYPE_CHECKING:  # the task that hands its rank to a child never imports torch
    import torch

    from sparkdl.collective import Collective, PeerInfo
    from sparkdl.data.shard import LocalShard
    from sparkdl.worker.spec import TrainSpec

#: How long an unclaimed spare waits for a taker before exiting.
DEFAULT_IDLE_S = 300.0

# Backends whose library starts once per process (a second hvd.init() crashes).
_ONE_START_PER_PROCESS = frozenset({"horovod"})


@dataclass(frozen=True)
class ProcessPolicy:
    """Which process a backend's ranks train in.

    Attributes:
        fresh_process: train each rank in a child interpreter that runs one rank.
        keep_warm: after a fit, leave an idle, imported child on the executor for
            the next one (``warm_process`` in backendOptions).
        warm_idle_s: how long that spare waits for a fit before it exits
            (``warm_idle_s`` in backendOptions).

    Example:
        >>> ProcessPolicy.of("horovod", {"warm_idle_s": 60})
        ProcessPolicy(fresh_process=True, keep_warm=True, warm_idle_s=60.0)
        >>> ProcessPolicy(keep_warm=True)
        Traceback (most recent call last):
        ...
        sparkdl.errors.ConfigError: keep_warm needs fresh_process. Received: keep_warm=True
    """

    fresh_process: bool = False
    keep_warm: bool = False
    warm_idle_s: float = DEFAULT_IDLE_S

    def __post_init__(self) -> None:
        if self.keep_warm and not self.fresh_process:
            # a spare is an idle fresh process: nothing to keep for in-process ranks
            raise ConfigError("keep_warm needs fresh_process. Received: keep_warm=True")

    @classmethod
    def of(cls, backend: str, options: Mapping | None = None) -> ProcessPolicy:
        """The policy for ``backend`` with its ``backendOptions``.

        Raises:
            ConfigError: for options the backend does not take (the backend's own
                check, :func:`sparkdl.collective.horovod_backend.check_options`).
        """
        if backend not in _ONE_START_PER_PROCESS:
            return cls()
        options = dict(options or {})
        check_options(options)
        return cls(fresh_process=True, keep_warm=bool(options.get("warm_process", True)),
                   warm_idle_s=float(options.get("warm_idle_s", DEFAULT_IDLE_S)))


@dataclass(frozen=True)
class RankResult:
    """What a rank hands back: weights (rank 0 only), history, who ran it.

    ``seconds`` holds the wall time of the rank's phases (``backend_start``,
    ``train``, ``backend_stop``), so a slow fit shows where its time went.

    Example:
        >>> RankResult(None, [], 1, 42, "cpu").with_seconds(backend_stop=0.5).seconds
        {'backend_stop': 0.5}
    """

    weights: bytes | None
    history: list
    backend_size: int
    pid: int
    device: str
    seconds: dict = dataclasses.field(default_factory=dict)

    def with_seconds(self, **seconds: float) -> RankResult:
        """A copy with more phase timings."""
        return dataclasses.replace(self, seconds={**self.seconds, **seconds})


def train_in_process(spec: TrainSpec, shard: LocalShard, collective: Collective, rank: int,
                     peers: list[PeerInfo], device: torch.device) -> RankResult:
    """Start the backend, run the training loop, and collect the result, in this process.

    Args:
        spec: the run description.
        shard: this rank's rows.
        collective: the backend, not started yet; the caller shuts it down.
        rank: this rank.
        peers: every rank's rendezvous info.
        device: where to compute.

    Returns:
        The rank's result; ``weights`` only on rank 0.
    """
    from sparkdl.architecture import weights_to_bytes
    from sparkdl.worker.loop import train_loop

    began = time.perf_counter()
    collective.start(rank, peers, device, spec.timeout_s)
    started = time.perf_counter()
    module, history = train_loop(spec, shard, collective, rank, peers, device)
    weights = weights_to_bytes(module) if rank == 0 else None
    seconds = {"backend_start": started - began, "train": time.perf_counter() - started}
    return RankResult(weights, history, collective.size(), os.getpid(), str(device), seconds)
