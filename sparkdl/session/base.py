"""The interface: what the driver side of a fit asks of its session.

Example::

    facts = facts_for(spark)          # sparkdl.session
    slots = facts.check_capacity(2)   # or ClusterCapacityError
    with barrier_slots(facts.app_id, 2, slots):
        ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class SessionFacts(ABC):
    """What a fit needs from its SparkSession, whatever kind of session it is.

    Attributes:
        kind: ``"classic"`` or ``"connect"``.
        driver_rendezvous: whether ranks may dial this process (the driver-hosted
            rendezvous and the restart state handoff, :mod:`sparkdl.rendezvous`).
    """

    kind: str
    driver_rendezvous: bool

    def __init__(self, spark) -> None:
        self.spark = spark

    @property
    @abstractmethod
    def app_id(self) -> str:
        """The Spark application's id (the key of per-application caches and ledgers)."""

    @abstractmethod
    def check_capacity(self, num_workers: int) -> int:
        """Fail fast unless ``num_workers`` barrier tasks can run at once.

        Returns:
            The task slots found.

        Raises:
            ConfigError: dynamic allocation is on.
            ClusterCapacityError: too few slots.
        """

    @abstractmethod
    def wait_for_slots(self, num_workers: int, timeout_s: float) -> int:
        """After a lost executor: the slots once ``num_workers`` fit again.

        Raises:
            ClusterCapacityError: they did not come back within ``timeout_s``.
        """

    @abstractmethod
    def is_stopped(self) -> bool:
        """Whether the session (or its SparkContext) has stopped."""

    @abstractmethod
    def max_result_bytes(self) -> int:
        """``spark.driver.maxResultSize`` in bytes (0: no limit)."""

    @abstractmethod
    def check_executor_python(self, slots: int, num_workers: int, backend: str) -> None:
        """Fail with a ConfigError unless the executors' Python can run sparkdl.

        Runs one small job per application (remembered).
        """

    @abstractmethod
    def share_model(self, key: str, model: tuple[str, bytes, bytes]):
        """Make ``(kind, architecture, weights)`` readable by scoring tasks.

        Args:
            key: names the model (its version: uid and weights digest).
            model: what :mod:`sparkdl.worker.score_task` builds the module from.

        Returns:
            An object whose ``.value`` gives ``model`` on an executor: a broadcast,
            or what :mod:`sparkdl.worker.model_payload` ships over Connect.
        """

    @abstractmethod
    def hadoop_conf(self, key: str) -> str | None:
        """A Hadoop setting as this session's jobs see it (``fs.defaultFS``, ...), or None."""

    @abstractmethod
    def hadoop_user(self) -> str:
        """The Hadoop user files are created as under simple authentication."""
