"""A classic SparkSession: the driver runs in this process, reached through py4j.

The code is :mod:`sparkdl.cluster`'s and :mod:`sparkdl.ml.executor_python`'s, which
ask the driver's scheduler directly (slots of registered executors, now).

Example::

    ClassicFacts(spark).check_capacity(2)
"""

from __future__ import annotations

from sparkdl.session.base import SessionFacts


class ClassicFacts(SessionFacts):
    """:class:`SessionFacts` of a py4j session (``SparkSession.builder.master(...)``)."""

    kind = "classic"
    driver_rendezvous = True

    @property
    def app_id(self) -> str:
        return self.spark.sparkContext.applicationId

    def check_capacity(self, num_workers: int) -> int:
        from sparkdl.cluster import check_capacity

        return check_capacity(self.spark.sparkContext, num_workers)

    def wait_for_slots(self, num_workers: int, timeout_s: float) -> int:
        from sparkdl.cluster import wait_for_slots

        return wait_for_slots(self.spark.sparkContext, num_workers, timeout_s)

    def is_stopped(self) -> bool:
        return bool(self.spark.sparkContext._jsc.sc().isStopped())

    def max_result_bytes(self) -> int:
        return int(self.spark.sparkContext._jsc.sc().conf().getSizeAsBytes(
            "spark.driver.maxResultSize", "1g"))

    def check_executor_python(self, slots: int, num_workers: int, backend: str) -> None:
        from sparkdl.ml.executor_python import check_for_fit

        check_for_fit(self.spark.sparkContext, slots, num_workers, backend)

    def share_model(self, key: str, model: tuple[str, bytes, bytes]):
        return self.spark.sparkContext.broadcast(model)

    def hadoop_conf(self, key: str) -> str | None:
        return self.spark.sparkContext._jsc.hadoopConfiguration().get(key)

    def hadoop_user(self) -> str:
        ugi = self.spark.sparkContext._jvm.org.apache.hadoop.security.UserGroupInformation
        return ugi.getCurrentUser().getShortUserName()
