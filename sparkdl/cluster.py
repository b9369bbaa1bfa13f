"""Will the cluster run a barrier job of ``numWorkers`` tasks? Checked before submitting.

Spark schedules a barrier stage only when all its tasks fit at once. When they do
not, Spark keeps re-checking for minutes before it fails, which looks like a hang.
sparkdl asks the scheduler how many tasks fit right now, waits briefly for
executors that are still registering, and otherwise fails with the numbers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark import SparkConf, SparkContext

from sparkdl.errors import ClusterCapacityError, ConfigError

log = logging.getLogger(__name__)

#: How long after application start executors may still be registering, in seconds.
REGISTRATION_WAIT_S = 60.0


def task_slots(sc: SparkContext) -> int:
    """Tasks of the default resource profile that can run concurrently now."""
    jsc = sc._jsc.sc()
    profile = jsc.resourceProfileManager().defaultResourceProfile()
    return int(jsc.maxNumConcurrentTasks(profile))


def check_no_dynamic_allocation(conf: SparkConf, master: str, num_workers: int) -> None:
    """Refuse dynamic allocation outside local mode (Spark ignores it there).

    Raises:
        ConfigError: naming the conf key to change.
    """
    local = master == "local" or master.startswith("local[")
    if conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true" and not local:
        raise ConfigError(
            "Barrier training cannot run with dynamic allocation: Spark needs all "
            f"{num_workers} tasks at once. Set spark.dynamicAllocation.enabled=false "
            "(and spark.executor.instances) for the training application.")


def check_capacity(sc: SparkContext, num_workers: int,
                   wait_s: float = REGISTRATION_WAIT_S) -> int:
    """Fail fast unless ``num_workers`` barrier tasks can run at once.

    Returns:
        The number of slots found.

    Raises:
        ConfigError: dynamic allocation is on (barrier jobs cannot use it).
        ClusterCapacityError: too few slots after waiting ``wait_s`` seconds.
    """
    conf = sc.getConf()
    check_no_dynamic_allocation(conf, sc.master, num_workers)
    # Only a young application may still be registering executors; an older one
    # has the executors it is going to get, so it fails at once.
    deadline = sc.startTime / 1000.0 + wait_s
    slots = task_slots(sc)
    while slots < num_workers and time.time() < deadline:
        time.sleep(0.5)
        slots = task_slots(sc)
    if slots < num_workers:
        raise ClusterCapacityError(capacity_message(num_workers, slots, sc.master, conf))
    return slots


def capacity_message(num_workers: int, slots: int, master: str, conf) -> str:
    """The ClusterCapacityError's text, the same for a classic and a Connect session.

    Args:
        conf: a :class:`~pyspark.SparkConf`, or anything with its ``get(key, default)``.

    Example:
        >>> print(capacity_message(3, 2, "local-cluster[2,1,1024]", {}))  # doctest: +ELLIPSIS
        numWorkers=3 needs 3 concurrent task slots but the cluster has 2 (master \
'local-cluster[2,1,1024]', spark.executor.cores=default, ...). Lower numWorkers to at most 2 \
or add executors/cores.
    """
    return (f"numWorkers={num_workers} needs {num_workers} concurrent task slots but the "
            f"cluster has {slots} (master {master!r}, spark.executor.cores="
            f"{conf.get('spark.executor.cores', 'default')}, spark.task.cpus="
            f"{conf.get('spark.task.cpus', '1')}, spark.executor.instances="
            f"{conf.get('spark.executor.instances', 'default')}). Lower numWorkers to at "
            f"most {slots} or add executors/cores.")


def wait_for_slots(sc: SparkContext, num_workers: int, timeout_s: float) -> int:
    """Wait until ``num_workers`` barrier tasks fit again (after a lost executor).

    A cluster manager replaces a lost executor within seconds to minutes; a fit
    that restarts waits for that, but not longer than ``timeout_s``.

    Returns:
        The number of slots found.

    Raises:
        ClusterCapacityError: naming the slots seen, if they did not come back.
    """
    deadline = time.monotonic() + timeout_s
    slots = task_slots(sc)
    seen = {slots}
    while slots < num_workers and time.monotonic() < deadline:
        time.sleep(0.5)
        slots = task_slots(sc)
        seen.add(slots)
    if slots < num_workers:
        raise ClusterCapacityError(
            f"The training job lost an executor and the cluster did not come back to "
            f"numWorkers={num_workers} task slots within timeout={timeout_s:g} s (slots "
            f"seen while waiting: {sorted(seen)}; master {sc.master!r}). Add executors, "
            f"lower numWorkers, or raise timeout.")
    return slots


class _SlotLedger:
    """Task slots held by this driver's running barrier jobs, per application."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._held: dict[str, int] = {}

    @contextmanager
    def hold(self, app_id: str, num_workers: int, slots: int) -> Iterator[None]:
        with self._changed:
            # Spark launches a barrier stage only when all its tasks fit at once, so
            # two fits wanting more slots than exist would each wait for the other's
            # tasks to finish while their rendezvous deadlines run. Waiting here
            # runs them one after another. A fit starts whenever none is running,
            # as check_capacity has already seen the slots for it.
            if self._held.get(app_id, 0) + num_workers > slots:
                log.info("sparkdl: waiting for another fit's barrier job to free task "
                         "slots (%d needed, %d held, %d in the cluster)", num_workers,
                         self._held.get(app_id, 0), slots)
            while 0 < self._held.get(app_id, 0) and \
                    self._held.get(app_id, 0) + num_workers > slots:
                self._changed.wait()
            self._held[app_id] = self._held.get(app_id, 0) + num_workers
        try:
            yield
        finally:
            with self._changed:
                self._held[app_id] -= num_workers
                self._changed.notify_all()


_LEDGER = _SlotLedger()


def barrier_slots(sc: SparkContext, num_workers: int, slots: int):
    """Hold ``num_workers`` of the application's ``slots`` for one barrier job.

    Concurrent fits in one driver (``CrossValidator(parallelism=2)``) whose
    barrier jobs do not fit side by side run one after another.

    Example::

        slots = check_capacity(sc, 2)
        with barrier_slots(sc, 2, slots):
            rows = job.collect()
    """
    return barrier_slots_of(sc.applicationId, num_workers, slots)


def barrier_slots_of(app_id: str, num_workers: int, slots: int):
    """:func:`barrier_slots` by application id (a Spark Connect session has no
    SparkContext: :attr:`sparkdl.session.SessionFacts.app_id`).

    Example::

        with barrier_slots_of(facts_for(spark).app_id, 2, slots):
            rows = job.collect()
    """
    return _LEDGER.hold(app_id, num_workers, slots)
