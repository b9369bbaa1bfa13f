"""A Spark Connect session (``sc://``): the driver is a server elsewhere.

Nothing here touches a SparkContext or py4j, which a Connect client does not have.
Task slots come from the application's confs (``spark.conf.get``: the server
answers with its SparkConf), not from the scheduler: a Connect client cannot ask
how many executors registered. Where the confs do not tell (a standalone master
without ``spark.executor.instances``, ``local[*]``), the fit goes on and the barrier
stage's own check (``spark.scheduler.barrier.maxConcurrentTasksCheck.*``) applies.

The executors' Python check runs as a DataFrame job
(``spark.range(n, numPartitions=n).mapInArrow(probe)``), cancelled at its deadline
through a job tag (``addTag``/``interruptTag``).

Example::

    facts = ConnectFacts(SparkSession.builder.remote("sc://127.0.0.1:15002").getOrCreate())
    facts.check_capacity(2)  # from spark.master 'local-cluster[2,1,1024]': 2 slots
"""

from __future__ import annotations

import builtins
import functools
import json
import logging
import os
import re
import sys
import tempfile
import types
from collections.abc import Callable, Iterator

from sparkdl.errors import ClusterCapacityError
from sparkdl.session.base import SessionFacts

log = logging.getLogger(__name__)

_LOCAL = re.compile(r"local(?:\[\s*(\d+|\*)\s*(?:,\s*\d+\s*)?\])?")
_LOCAL_CLUSTER = re.compile(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*\d+\s*\]")
#: Size suffixes of Spark's byte confs (binary units, as JavaUtils.byteStringAs reads them).
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "p": 1 << 50,
          "pb": 1 << 50}

Conf = Callable[[str], "str | None"]

#: Networks up to this size travel inside the scoring function; larger ones as a
#: session artifact (see :mod:`sparkdl.worker.model_payload`).
INLINE_MODEL_BYTES = 8 << 20
#: The (session, model) pairs whose artifact this process added: an artifact's name
#: is taken for the session's lifetime.
_SHARED: set[tuple[str, str]] = set()


class ConfView:
    """``spark.conf`` with :class:`pyspark.SparkConf`'s ``get(key, default)``.

    Example::

        ConfView(spark).get("spark.task.cpus", "1")
    """

    def __init__(self, spark) -> None:
        self._spark = spark

    def get(self, key: str, default: str | None = None) -> str | None:
        value = self._spark.conf.get(key, None)
        return default if value is None else value


def slots_from_confs(get: Conf) -> int | None:
    """The task slots the application's confs promise, or None when they do not tell.

    ``local`` / ``local[N]``: N; ``local-cluster[n,c,m]``: n x c; a cluster manager:
    ``spark.executor.instances`` x ``spark.executor.cores`` (1 on YARN and Kubernetes
    when unset), each divided by ``spark.task.cpus``. With dynamic allocation the
    count is not fixed (None).

    Example:
        >>> confs = {"spark.master": "local-cluster[2,1,1024]"}
        >>> slots_from_confs(confs.get)
        2
        >>> slots_from_confs({"spark.master": "yarn", "spark.executor.instances": "3",
        ...                   "spark.executor.cores": "4", "spark.task.cpus": "2"}.get)
        6
        >>> slots_from_confs({"spark.master": "local[*]"}.get) is None
        True
    """
    master = (get("spark.master") or "").strip()
    cpus = max(1, int(get("spark.task.cpus") or 1))
    cluster = _LOCAL_CLUSTER.fullmatch(master)
    if cluster:
        return int(cluster.group(1)) * (int(cluster.group(2)) // cpus)
    local = _LOCAL.fullmatch(master)
    if local:
        if local.group(1) == "*":
            return None  # the server's core count, which the client cannot see
        return int(local.group(1) or 1) // cpus
    if (get("spark.dynamicAllocation.enabled") or "false").lower() == "true":
        return None
    instances = get("spark.executor.instances")
    cores = get("spark.executor.cores") or \
        ("1" if master.startswith(("yarn", "k8s://")) else None)
    if instances is None or cores is None:
        return None
    return int(instances) * (int(cores) // cpus)


def executors_from_confs(get: Conf) -> int:
    """Executors the confs promise (0 in local mode or when they do not tell).

    Example:
        >>> executors_from_confs({"spark.master": "local-cluster[3,1,1024]"}.get)
        3
    """
    master = (get("spark.master") or "").strip()
    cluster = _LOCAL_CLUSTER.fullmatch(master)
    if cluster:
        return int(cluster.group(1))
    if _LOCAL.fullmatch(master):
        return 0
    return int(get("spark.executor.instances") or 0)


def size_bytes(text: str) -> int:
    """A Spark byte size (``"1g"``, ``"512m"``, ``"1024"``: bytes) in bytes.

    Raises:
        ValueError: for a value Spark would refuse too.

    Example:
        >>> size_bytes("1g"), size_bytes("512m"), size_bytes("0")
        (1073741824, 536870912, 0)
    """
    found = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not found or found.group(2).lower() not in _UNITS:
        raise ValueError(f"not a byte size: {text!r}")
    return int(found.group(1)) * _UNITS[found.group(2).lower()]


def probe_arrow(probe_fn: Callable[[], Iterator[dict]], batches: Iterator) -> Iterator:
    """Runs on an executor: ``mapInArrow``'s function around the Python check's probe.

    Yields the probe's answers as JSON strings in one Arrow batch. Shipped by value
    (:func:`shipped_probe_arrow`), so an executor without sparkdl can report that.
    """
    import json as _json

    import pyarrow as pa

    for _ in batches:  # one row per partition; its content does not matter
        pass
    yield pa.RecordBatch.from_pydict({"answer": [_json.dumps(a) for a in probe_fn()]},
                                     schema=pa.schema([("answer", pa.string())]))


def shipped_probe_arrow(probe_fn: Callable[[], Iterator[dict]]) -> Callable:
    """:func:`probe_arrow` around ``probe_fn``, as code cloudpickle ships by value.

    Example:
        >>> from pyspark import cloudpickle
        >>> b"sparkdl.session" in cloudpickle.dumps(shipped_probe_arrow(list))
        False
    """
    code = types.FunctionType(probe_arrow.__code__, {"__builtins__": builtins,
                                                     "__name__": "sparkdl_executor_probe"},
                              "probe_arrow")
    return functools.partial(code, probe_fn)


def run_probe(spark, tasks: int, modules: tuple[str, ...], timeout_s: float) -> list[dict]:
    """The executors' Python check as a DataFrame job; interrupted after ``timeout_s``.

    Raises:
        TimeoutError: it was interrupted at the deadline.
        Exception: whatever Spark raised when the job failed.
    """
    from sparkdl.ml.executor_python import IMPORTED, run_with_deadline, shipped_probe

    rows = run_with_deadline(
        lambda: spark.range(tasks, numPartitions=tasks).mapInArrow(
            shipped_probe_arrow(shipped_probe(modules, IMPORTED)), "answer string").collect(),
        spark.addTag, spark.removeTag, spark.interruptTag, timeout_s)
    return [json.loads(row.answer) for row in rows]


class ConnectFacts(SessionFacts):
    """:class:`SessionFacts` of a Spark Connect session (``SparkSession.builder.remote``).

    Ranks cannot be assumed to reach this process (a notebook behind NAT, serverless
    compute): ``driver_rendezvous`` is False, so ranks meet through
    ``BarrierTaskContext.allGather`` and rank 0 hands no restart state to the client.
    """

    kind = "connect"
    driver_rendezvous = False

    def __init__(self, spark) -> None:
        super().__init__(spark)
        self.conf = ConfView(spark)

    @property
    def app_id(self) -> str:
        return self.conf.get("spark.app.id") or f"connect-{self.spark.session_id}"

    def _slots(self, num_workers: int) -> int:
        from sparkdl.cluster import capacity_message, check_no_dynamic_allocation

        master = self.conf.get("spark.master", "")
        check_no_dynamic_allocation(self.conf, master, num_workers)
        slots = slots_from_confs(self.conf.get)
        if slots is None:
            log.info("sparkdl: the Spark Connect session's confs (spark.master=%r) do not "
                     "tell the task slots; Spark's barrier stage checks them itself", master)
            return num_workers
        if slots < num_workers:
            raise ClusterCapacityError(capacity_message(num_workers, slots, master, self.conf))
        return slots

    def check_capacity(self, num_workers: int) -> int:
        return self._slots(num_workers)

    def wait_for_slots(self, num_workers: int, timeout_s: float) -> int:
        # A Connect client sees confs, not registered executors: the barrier stage
        # itself waits for its slots (spark.scheduler.barrier.maxConcurrentTasksCheck).
        return self._slots(num_workers)

    def is_stopped(self) -> bool:
        return bool(self.spark.is_stopped)

    def max_result_bytes(self) -> int:
        return size_bytes(self.conf.get("spark.driver.maxResultSize", "1g"))

    def check_executor_python(self, slots: int, num_workers: int, backend: str) -> None:
        import torch

        import sparkdl
        from sparkdl.ml.executor_python import DriverSide, checked, probe_tasks

        python = self.conf.get("spark.pyspark.python") or \
            "the Connect server's PYSPARK_PYTHON"
        driver = DriverSide(sparkdl.__version__, str(torch.__version__), sys.executable,
                            python, python)
        tasks = probe_tasks(slots, num_workers, executors_from_confs(self.conf.get))
        checked(self.app_id, driver, tasks, backend == "horovod",
                functools.partial(run_probe, self.spark), lambda: self.is_stopped())

    def share_model(self, key: str, model: tuple[str, bytes, bytes]):
        from sparkdl.worker.model_payload import ArtifactModel, InlineModel, write_frame

        kind, architecture, weights = model
        if len(architecture) + len(weights) <= INLINE_MODEL_BYTES:
            return InlineModel(kind, architecture, weights)
        name = f"sparkdl-model-{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.bin"
        if (self.spark.session_id, name) not in _SHARED:
            with tempfile.TemporaryDirectory(prefix="sparkdl-artifact-") as where:
                path = os.path.join(where, name)
                write_frame(path, kind, architecture, weights)
                self.spark.addArtifacts(path, file=True)
            _SHARED.add((self.spark.session_id, name))
        return ArtifactModel(name)

    def hadoop_conf(self, key: str) -> str | None:
        # The server's hdfs-site.xml is out of reach: what the application's confs
        # set (spark.hadoop.*, at launch or with spark.conf.set) is what a client sees.
        return self.conf.get(f"spark.hadoop.{key}")

    def hadoop_user(self) -> str:
        import getpass

        # As Hadoop's own client names itself under simple authentication.
        return os.environ.get("HADOOP_USER_NAME") or getpass.getuser()
