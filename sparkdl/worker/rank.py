"""One rank's work, whatever launched it: shard, rendezvous, training, result rows.

:func:`train_rank` runs inside the PySpark estimator's barrier task
(:func:`~sparkdl.worker.train_task.train_task`) and inside the Scala estimator's
``python -m sparkdl.worker`` (:mod:`sparkdl.worker.jvm_worker`). It takes its
Spark facts (rank, hosts, CPUs, GPUs, the gather of rendezvous messages) from a
:class:`~sparkdl.worker.context.StaticRankContext`, so both run exactly this code.

It writes the rank's partition to a local shard, meets the other ranks (the
driver's rendezvous, :mod:`sparkdl.rendezvous`, or the barrier allGather), trains
in the process its backend's :class:`~sparkdl.worker.rank_process.ProcessPolicy`
names, and yields result rows: every rank reports who it was (pid, executor,
host); rank 0 also returns the weights (safetensors) and the history.

It never imports torch itself: a rank that trains in a child process hands the
pickled spec on unread.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from sparkdl.collective import PeerInfo, get_backend
from sparkdl.data.shard import LocalShard
from sparkdl.worker.rank_process import ProcessPolicy, train_in_process
from sparkdl.worker.spares import keep_spare, take_child
from sparkdl.worker.task_env import new_shard_dir
from sparkdl.worker.train_task import RESULT_SCHEMA

if TYPE_CHECKING:
    from sparkdl.worker.context import StaticRankContext
    from sparkdl.worker.train_task import ShippedSpec


def _result(rank: int, kind: str, payload: bytes) -> pa.RecordBatch:
    # The payload's own memory, not a copy: rank 0's weights may be near 2 GiB.
    offsets = pa.array([0, len(payload)], pa.int32()).buffers()[1]
    value = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(payload)])
    return pa.record_batch([pa.array([rank], pa.int32()), pa.array([kind]), value],
                           schema=RESULT_SCHEMA)


def train_rank(spec: ShippedSpec, batches: Iterator[pa.RecordBatch],
               ctx: StaticRankContext) -> Iterator[pa.RecordBatch]:
    """Train one rank: the logic shared by the PySpark and the JVM launchers.

    Args:
        spec: the run, as shipped to every task.
        batches: this partition's Arrow record batches.
        ctx: the task's facts and gather.

    Yields:
        Result record batches with
        :data:`~sparkdl.worker.train_task.RESULT_SCHEMA`.

    Example::

        ctx = StaticRankContext(rank=0, hosts=["127.0.0.1"], cpus=1, gpus=(),
                                executor_id="0", gather_fn=lambda message: [message])
        rows = [b.to_pylist()[0] for b in train_rank(ShippedSpec.of(spec), batches, ctx)]
        [row["kind"] for row in rows]   # ['worker', 'weights', 'history']
    """
    rank = ctx.rank
    hosts = list(ctx.hosts)
    host = hosts[rank]
    # Named after this process, so that a later task sweeps it should this one be
    # killed before its finally runs.
    workdir = new_shard_dir()
    policy = ProcessPolicy.of(spec.backend, spec.backend_options)
    collective = get_backend(spec.backend, spec.backend_options)
    # A child is taken first, so that its imports overlap with the shard's writing.
    child = (take_child(spec.backend, workdir, policy.keep_warm, policy.warm_idle_s)
             if policy.fresh_process else None)
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
        warm = False
        if child is not None:
            result = child.train(spec.payload, shard.path, rank, peers, ctx.gpus, ctx.cpus)
            # Asked after training: a spare that died before it got its work was
            # replaced by a fresh child, which paid the imports.
            warm, child = child.spare, None
        else:
            ctx.limit_threads()
            result = train_in_process(spec.load(), shard, collective, rank, peers,
                                      ctx.device())
        seconds["rank"] = lap()
        me.pop("extra")
        me.update(pid=result.pid, device=result.device, backend_size=result.backend_size,
                  warm_process=warm, seconds={**seconds, **result.seconds})
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
        if policy.keep_warm and ctx.keep_spare:
            keep_spare(spec.backend, policy.warm_idle_s)
