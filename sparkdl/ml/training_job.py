"""The barrier job of one fit: hold task slots, host the rendezvous, collect results.

Example::

    result = run_training_job(prepared_df, spec, slots, meet)
    result.weights, result.epochs, result.workers
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import partial

from pyspark.sql import DataFrame

from sparkdl.cluster import barrier_slots_of
from sparkdl.errors import WorkerFailedError
from sparkdl.rendezvous import rendezvous_for
from sparkdl.session import facts_for
from sparkdl.worker.spec import TrainSpec
from sparkdl.worker.train_task import RESULT_DDL, ShippedSpec, train_task


@dataclass(frozen=True)
class JobResult:
    """What the ranks returned: rank 0's weights and history, every rank's facts."""

    weights: bytes
    epochs: list[dict]
    workers: list[dict]


def run_training_job(prepared: DataFrame, spec: TrainSpec, slots: int, meet: str,
                     **reports) -> JobResult:
    """Run ``train_task`` as one barrier task per partition of ``prepared``.

    Args:
        prepared: one partition per rank, columns as ``spec.layout`` names them.
        spec: the run; its rendezvous address is filled in here.
        slots: the cluster's task slots (:func:`~sparkdl.cluster.check_capacity`).
        meet: the rendezvous mode (:func:`~sparkdl.rendezvous.rendezvous_mode`).
        **reports: where the driver's rendezvous hands the ranks' reports
            (``on_state``, ``max_state_bytes``, ``on_failure``;
            :class:`~sparkdl.rendezvous.DriverRendezvous`).

    Raises:
        WorkerFailedError: with the failing worker's own traceback.
    """
    spark = prepared.sparkSession
    # The job's rows come back through collect(): over Spark Connect a barrier stage
    # followed by limit/show/take is refused.
    with barrier_slots_of(facts_for(spark).app_id, spec.num_workers, slots), \
            rendezvous_for(spark, meet, spec.num_workers, spec.timeout_s, **reports) as address:
        shipped = ShippedSpec.of(dataclasses.replace(spec, rendezvous=address))
        job = prepared.mapInArrow(partial(train_task, shipped), RESULT_DDL, barrier=True)
        try:
            rows = job.collect()
        except Exception as exc:
            raise WorkerFailedError(worker_error(exc)) from exc
    return JobResult(
        weights=bytes(next(r.payload for r in rows if r.kind == "weights")),
        epochs=json.loads(next(r.payload for r in rows if r.kind == "history")),
        workers=sorted((json.loads(r.payload) for r in rows if r.kind == "worker"),
                       key=lambda w: w["rank"]))


def worker_error(exc: Exception) -> str:
    """The Python worker's own traceback out of Spark's error text, without JVM frames.

    Example:
        >>> worker_error(RuntimeError("An exception was thrown from the Python worker:"
        ...                           " ValueError: boom\\n\\tat org.apache.spark..."))
        'A training worker failed: ValueError: boom'
    """
    text = str(exc)
    marker = "An exception was thrown from the Python worker:"
    if marker in text:
        text = text[text.index(marker) + len(marker):]
        text = text.split("\n\tat ")[0].split(" SQLSTATE")[0]
        return "A training worker failed:" + text.rstrip()
    return f"The training job failed: {text.split(chr(10) + chr(9) + 'at ')[0][:4000]}"
