"""What a training rank needs from the Spark task it runs in, behind one small interface.

The same rank logic (:func:`sparkdl.worker.rank.train_rank`) runs under two
launchers, each describing its task as a :class:`StaticRankContext`: PySpark's
``mapInArrow(..., barrier=True)`` (:func:`spark_rank_context`, from
``BarrierTaskContext`` and the driver rendezvous) and the Scala estimator's barrier
tasks that start ``python -m sparkdl.worker`` (facts sent by the JVM task, whose
``gather`` asks it for ``BarrierTaskContext.allGather``).

Example:
    >>> ctx = StaticRankContext(rank=0, hosts=["h"], cpus=1, gpus=(),
    ...                         executor_id="1", gather_fn=lambda m: [m])
    >>> ctx.gather("hi"), str(ctx.device())
    (['hi'], 'cpu')
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sparkdl.worker.task_env import gpu_device, set_threads

if TYPE_CHECKING:
    import torch


@dataclass
class StaticRankContext:
    """A rank's task facts given as values, with a callable that gathers messages.

    Attributes:
        rank: this task's partition id in the barrier stage.
        hosts: every task's host, by rank.
        cpus: CPUs Spark gave the task (0: unknown).
        gpus: the GPU addresses Spark assigned to the task.
        executor_id: the executor running the task.
        gather_fn: posts this rank's message, returns every rank's in rank order.
        keep_spare: leave a warm rank process on this executor for the next fit.
    """

    rank: int
    hosts: Sequence[str]
    cpus: int
    gpus: Sequence[str]
    executor_id: str
    gather_fn: Callable[[str], list[str]] = field(repr=False)
    keep_spare: bool = False

    def gather(self, message: str) -> list[str]:
        """Post ``message``; every rank's messages in rank order."""
        return list(self.gather_fn(message))

    def device(self) -> torch.device:
        """``cuda:<id>`` for the first GPU Spark assigned, else CPU."""
        return gpu_device(self.gpus)

    def limit_threads(self) -> None:
        """Use as many intra-op threads as CPUs Spark gave the task."""
        set_threads(self.cpus)


def spark_rank_context(spec) -> StaticRankContext:
    """The context of the current PySpark barrier task (``mapInArrow(barrier=True)``)."""
    from pyspark import BarrierTaskContext

    ctx = BarrierTaskContext.get()
    rank = ctx.partitionId()
    attempt = ctx.attemptNumber()
    gpu = (ctx.resources() or {}).get("gpu")

    def gather(message: str) -> list[str]:
        if spec.rendezvous is not None:
            return spec.rendezvous.gather(rank, message, attempt)
        return ctx.allGather(message)

    return StaticRankContext(
        rank=rank, hosts=[i.address.rsplit(":", 1)[0] for i in ctx.getTaskInfos()],
        cpus=ctx.cpus(), gpus=tuple(gpu.addresses) if gpu is not None else (),
        executor_id=executor_id(), gather_fn=gather, keep_spare=True)


def executor_id() -> str:
    """This executor's id, as far as a Python worker can tell."""
    # The executor id is not exposed on TaskContext; SparkEnv is on the JVM side.
    # Executors launched by Spark carry it in their working directory name
    # (.../app-xxx/<id>) and in SPARK_EXECUTOR_ID on some cluster managers.
    # A Spark Connect session's Python workers run one level down, in a directory
    # named after the session's artifacts (SPARK_JOB_ARTIFACT_UUID).
    if os.environ.get("SPARK_EXECUTOR_ID"):
        return os.environ["SPARK_EXECUTOR_ID"]
    where = os.getcwd()
    if os.path.basename(where) == os.environ.get("SPARK_JOB_ARTIFACT_UUID"):
        where = os.path.dirname(where)
    return os.path.basename(where)
