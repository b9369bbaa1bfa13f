"""The barrier task that trains one rank: Spark glue around :func:`run_rank`.

``train_task(spec, batches)`` is what ``mapInArrow(..., barrier=True)`` runs. It
writes the rank's partition to a local shard, meets the other ranks at the
driver's rendezvous (:mod:`sparkdl.rendezvous`), starts the collective backend,
trains, and yields result rows: every rank reports who it was (pid, executor, host); rank 0
also returns the weights (safetensors) and the history.
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
    """Train one rank inside a Spark barrier task.

    Args:
        spec: a :class:`~sparkdl.worker.spec.TrainSpec`.
        batches: this partition's Arrow record batches.

    Yields:
        Result record batches with :data:`RESULT_SCHEMA`.
    """
    from pyspark import BarrierTaskContext

    from sparkdl.collective import get_backend
    from sparkdl.collective.base import PeerInfo
    from sparkdl.data.shard import LocalShard
    from sparkdl.worker.rank_process import RankChild, keep_spare, train_rank
    from sparkdl.worker.task_env import limit_threads, local_dir, task_device

    ctx = BarrierTaskContext.get()
    rank = ctx.partitionId()
    limit_threads(ctx)
    device = task_device(ctx)
    hosts = [info.address.rsplit(":", 1)[0] for info in ctx.getTaskInfos()]
    host = hosts[rank]
    workdir = tempfile.mkdtemp(prefix="sparkdl-shard-", dir=local_dir())
    collective = get_backend(spec.backend, spec.backend_options)
    collective.backward_passes_per_step = spec.backward_passes_per_step
    child = RankChild.take(spec.backend) if collective.fresh_process else None
    shard = None
    try:
        shard = LocalShard.write(batches, workdir, spec.layout)
        me = {
            "rank": rank, "host": host, "pid": os.getpid(),
            "executor_id": _executor_id(),
            "train_rows": len(shard.train_index),
            "validation_rows": len(shard.validation_index),
            "extra": collective.advertise(rank, hosts),
        }
        if spec.rendezvous is not None:
            messages = spec.rendezvous.gather(rank, json.dumps(me), ctx.attemptNumber())
        else:
            messages = ctx.allGather(json.dumps(me))
        peers = sorted((PeerInfo(**json.loads(m)) for m in messages), key=lambda p: p.rank)
        if child is not None:
            result, child = child.run(spec, shard.path, rank, peers, device, ctx.cpus()), None
        else:
            result = train_rank(spec, shard, collective, rank, peers, device)
        me.pop("extra")
        me.update(pid=result.pid, device=str(device), backend_size=result.backend_size)
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
        if collective.fresh_process and collective.keep_warm:
            keep_spare(spec.backend)


def _executor_id() -> str:
    # The executor id is not exposed on TaskContext; SparkEnv is on the JVM side.
    # Executors launched by Spark carry it in their working directory name
    # (.../app-xxx/<id>) and in SPARK_EXECUTOR_ID on some cluster managers.
    if os.environ.get("SPARK_EXECUTOR_ID"):
        return os.environ["SPARK_EXECUTOR_ID"]
    return os.path.basename(os.getcwd())
