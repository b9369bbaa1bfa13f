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
from collections.abc import Iterator

import pyarrow as pa

#: Schema of the rows a training task returns to the driver.
RESULT_SCHEMA = pa.schema([("rank", pa.int32()), ("kind", pa.string()),
                           ("payload", pa.binary())])
RESULT_DDL = "rank int, kind string, payload binary"


def _result(rank: int, kind: str, payload: bytes) -> pa.RecordBatch:
    return pa.record_batch([pa.array([rank], pa.int32()), pa.array([kind]),
                            pa.array([payload], pa.binary())], schema=RESULT_SCHEMA)


def train_task(spec, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Train one rank inside a PySpark barrier task (``mapInArrow(barrier=True)``).

    Args:
        spec: a :class:`~sparkdl.worker.spec.TrainSpec`.
        batches: this partition's Arrow record batches.

    Yields:
        Result record batches with :data:`RESULT_SCHEMA`.
    """
    from sparkdl.worker.context import spark_rank_context

    yield from run_train_task(spec, batches, spark_rank_context(spec))


def run_train_task(spec, batches: Iterator[pa.RecordBatch], ctx) -> Iterator[pa.RecordBatch]:
    """Train one rank: the logic shared by the PySpark and the JVM launchers.

    Args:
        spec: a :class:`~sparkdl.worker.spec.TrainSpec`.
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
    ctx.limit_threads()
    device = ctx.device()
    hosts = list(ctx.hosts)
    host = hosts[rank]
    workdir = tempfile.mkdtemp(prefix="sparkdl-shard-", dir=local_dir())
    collective = get_backend(spec.backend, spec.backend_options)
    collective.backward_passes_per_step = spec.backward_passes_per_step
    child = (RankChild.take(spec.backend, workdir, collective.keep_warm, collective.warm_idle_s)
             if collective.fresh_process else None)
    shard = None
    try:
        shard = LocalShard.write(batches, workdir, spec.layout)
        me = {
            "rank": rank, "host": host, "pid": os.getpid(),
            "executor_id": ctx.executor_id,
            "train_rows": len(shard.train_index),
            "validation_rows": len(shard.validation_index),
            "extra": collective.advertise(rank, hosts),
        }
        messages = ctx.gather(json.dumps(me))
        peers = sorted((PeerInfo(**json.loads(m)) for m in messages), key=lambda p: p.rank)
        spare = child is not None and child.spare
        if child is not None:
            result, child = child.run(spec, shard.path, rank, peers, device, ctx.cpus), None
        else:
            result = train_rank(spec, shard, collective, rank, peers, device)
        me.pop("extra")
        me.update(pid=result.pid, device=str(device), backend_size=result.backend_size,
                  warm_process=spare)
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
