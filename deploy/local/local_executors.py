"""The executor JVMs of a local application (``local-cluster[N,...]``), for fault drills.

The tests and ``bench/fault_tolerance.py`` kill an executor JVM mid-fit, as a
preempted node or an OOM-killed container would, and wait for the cluster to
replace it. Spark offers no API for an executor's pid, so they are read from
``/proc``: local-cluster's executors are ``CoarseGrainedExecutorBackend``
processes whose arguments name the application and the executor id.

Imported like ``servers`` beside it (this directory on ``sys.path``)::

    from local_executors import executor_pids, wait_for_executors
    os.kill(sorted(executor_pids(spark).values())[-1], signal.SIGKILL)
    wait_for_executors(spark, n=2)    # the worker relaunches it within seconds
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def executor_pids(spark) -> dict[str, int]:
    """This application's executor JVMs on this machine: executor id -> pid."""
    app = spark.sparkContext.applicationId
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")
        except OSError:  # it exited meanwhile
            continue
        words = [a.decode(errors="replace") for a in args]
        if app in words and any("CoarseGrainedExecutorBackend" in w for w in words):
            found[words[words.index("--executor-id") + 1]] = int(entry)
    return found


def wait_for_executors(spark, n: int = 2, within_s: float = 180.0) -> None:
    """Until the application has ``n`` executor JVMs and task slots.

    Raises:
        TimeoutError: if they are not back within ``within_s`` seconds.
    """
    from sparkdl.cluster import task_slots

    deadline = time.monotonic() + within_s
    while task_slots(spark.sparkContext) < n or len(executor_pids(spark)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the cluster did not come back to {n} executors within "
                               f"{within_s:g} s")
        time.sleep(0.5)
