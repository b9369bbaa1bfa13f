"""The barrier task that trains one rank: Spark glue around :func:`run_rank`.

``train_task(spec, batches)`` is what ``mapInArrow(..., barrier=True)`` runs. It
writes the rank's partition to a local shard, meets the other ranks at the
driver's rendezvous (:mod:`sparkdl.rendezvous`), starts the collective backend,
trains, and yields result rows: every rank reports who it was (pid, executor, host); rank 0
also returns the weights (safetensors) and the history.

The rank logic itself is :func:`run_train_task`, which takes its Spark facts (rank,
hosts, CPUs, GPUs, the gather of rendezvous messages) from a small context object,
so the Scala estimator's ``python -m sparkdl.worker`` runs exactly the same code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from sparkdl.data.shard import ShardLayout

if TYPE_CHECKING:
    from sparkdl.rendezvous import RendezvousAddress
    from sparkdl.worker.spec import TrainSpec

#: Schema of the rows a training task returns to the driver.
RESULT_SCHEMA = pa.schema([("rank", pa.int32()), ("kind", pa.string()),
                           ("payload", pa.binary())])
RESULT_DDL = "rank int, kind string, payload binary"


@dataclass(frozen=True)
class ShippedSpec:
    """A :class:`~sparkdl.worker.spec.TrainSpec` as the barrier task receives it.

    The network, its weights and any custom loss or optimizer stay pickled
    (``payload``): unpickling them imports torch, about two seconds in a fresh
    Spark Python worker. A backend that trains in a child process (Horovod) hands
    the bytes on, so its task reads only the plain fields below and never imports
    torch; the child, already imported, unpickles the spec.

    Example:
        >>> from sparkdl.worker.spec import TrainSpec
        >>> from sparkdl.architecture import Architecture
        >>> import torch
        >>> spec = TrainSpec(architecture=Architecture.of(torch.nn.Linear(2, 1)),
        ...                  initial_weights=None, loss="mse", optimizer="sgd",
        ...                  optimizer_params={}, layout=ShardLayout(("f",), "y", False),
        ...                  batch_size=8, epochs=1, seed=0, num_workers=1, backend="torch")
        >>> shipped = ShippedSpec.of(spec)
        >>> shipped.backend, shipped.load() == spec
        ('torch', True)
    """

    payload: bytes = field(repr=False)
    backend: str
    backend_options: dict
    backward_passes_per_step: int
    layout: ShardLayout
    rendezvous: RendezvousAddress | None = None  # None: meet through allGather

    @classmethod
    def of(cls, spec: TrainSpec) -> ShippedSpec:
        import cloudpickle

        return cls(cloudpickle.dumps(spec), spec.backend, dict(spec.backend_options),
                   spec.backward_passes_per_step, spec.layout, spec.rendezvous)

    def load(self) -> TrainSpec:
        """The full :class:`~sparkdl.worker.spec.TrainSpec` (imports torch)."""
        import pickle

        return pickle.loads(self.payload)


def _result(rank: int, kind: str, payload: bytes) -> pa.RecordBatch:
    return pa.record_batch([pa.array([rank], pa.int32()), pa.array([kind]),
                            pa.array([payload], pa.binary())], schema=RESULT_SCHEMA)


def train_task(spec, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Train one rank inside a PySpark barrier task (``mapInArrow(barrier=True)``).

    Args:
        spec: a :class:`ShippedSpec`.
        batches: this partition's Arrow record batches.

    Yields:
        Result record batches with :data:`RESULT_SCHEMA`.
    """
    from sparkdl.worker.context import spark_rank_context

    yield from run_train_task(spec, batches, spark_rank_context(spec))


def run_train_task(spec, batches: Iterator[pa.RecordBatch], ctx) -> Iterator[pa.RecordBatch]:
    """Train one rank: the logic shared by the PySpark and the JVM launchers.

    Args:
        spec: a :class:`ShippedSpec`.
        batches: this partition's Arrow record batches.
        ctx: the task's facts and gather, a
            :class:`~sparkdl.worker.context.StaticRankContext`.

    Yields:
        Result record batches with :data:`RESULT_SCHEMA`.
    """
    from sparkdl.collective import get_backend
    from sparkdl.collective.base import PeerInfo
    from sparkdl.data.shard import LocalShard
    from sparkdl.worker.rank_process import RankChild, keep_spare, train_rank
    from sparkdl.worker.task_env import local_dir

    rank = ctx.rank
    hosts = list(ctx.hosts)
    host = hosts[rank]
    workdir = tempfile.mkdtemp(prefix="sparkdl-shard-", dir=local_dir())
    collective = get_backend(spec.backend, spec.backend_options)
    collective.backward_passes_per_step = spec.backward_passes_per_step
    child = (RankChild.take(spec.backend, workdir, collective.keep_warm, collective.warm_idle_s)
             if collective.fresh_process else None)
    shard = None
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return clock[-1] - clock[-2]
    try:
        shard = LocalShard.write(batches, workdir, spec.layout)
        seconds = {"shard_write": lap()}
        me = {
            "rank": rank, "host": host, "pid": os.getpid(),
            "executor_id": ctx.executor_id,
            "train_rows": len(shard.train_index),
            "validation_rows": len(shard.validation_index),
            "extra": collective.advertise(rank, hosts),
        }
        messages = ctx.gather(json.dumps(me))
        seconds["meet"] = lap()
        peers = sorted((PeerInfo(**json.loads(m)) for m in messages), key=lambda p: p.rank)
        spare = child is not None and child.spare
        if child is not None:
            result, child = child.run(spec.payload, shard.path, rank, peers, ctx.gpus,
                                      ctx.cpus), None
        else:
            ctx.limit_threads()
            result = train_rank(spec.load(), shard, collective, rank, peers, ctx.device())
        seconds["rank"] = lap()
        me.pop("extra")
        me.update(pid=result.pid, device=result.device, backend_size=result.backend_size,
                  warm_process=spare, seconds={**seconds, **result.seconds})
        yield _result(rank, "worker", json.dumps(me).encode())
        if rank == 0:
            yield _result(rank, "weights", result.weights)
            yield _result(rank, "history", json.dumps(result.history).encode())
    finally:
        if child is not None:
            child.kill()
        collective.shutdown()
        if shard is not None:
            shard.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if collective.fresh_process and collective.keep_warm and ctx.keep_spare:
            keep_spare(spec.backend, collective.warm_idle_s)
