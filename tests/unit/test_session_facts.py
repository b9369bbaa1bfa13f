"""The pure parts of sparkdl.session: the session kind, slots and sizes from confs."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession as ClassicSession

from sparkdl.cluster import capacity_message
from sparkdl.session import is_connect
from sparkdl.session.connect import executors_from_confs, size_bytes, slots_from_confs


def test_session_kind_comes_from_the_session_class():
    from pyspark.sql.connect.session import SparkSession as RemoteSession

    # Objects of the real classes, not started: detection reads the type only.
    assert is_connect(RemoteSession.__new__(RemoteSession))
    assert not is_connect(ClassicSession.__new__(ClassicSession))


@pytest.mark.parametrize("confs, slots", [
    ({"spark.master": "local"}, 1),
    ({"spark.master": "local[4]"}, 4),
    ({"spark.master": "local[4, 2]"}, 4),
    ({"spark.master": "local[4]", "spark.task.cpus": "2"}, 2),
    ({"spark.master": "local[*]"}, None),
    ({"spark.master": "local-cluster[2,1,1024]"}, 2),
    ({"spark.master": "local-cluster[3, 4, 2048]", "spark.task.cpus": "2"}, 6),
    ({"spark.master": "yarn", "spark.executor.instances": "5"}, 5),
    ({"spark.master": "k8s://https://h:6443", "spark.executor.instances": "2",
      "spark.executor.cores": "3"}, 6),
    ({"spark.master": "spark://h:7077", "spark.executor.instances": "2",
      "spark.executor.cores": "4", "spark.task.cpus": "3"}, 2),
    ({"spark.master": "spark://h:7077"}, None),  # standalone: every core of the workers
    ({"spark.master": "yarn", "spark.executor.instances": "5",
      "spark.dynamicAllocation.enabled": "true"}, None),
    ({}, None),
])
def test_slots_from_confs(confs, slots):
    assert slots_from_confs(confs.get) == slots


def test_executors_from_confs():
    assert executors_from_confs({"spark.master": "local-cluster[2,1,1024]"}.get) == 2
    assert executors_from_confs({"spark.master": "local[2]"}.get) == 0
    assert executors_from_confs({"spark.master": "yarn",
                                 "spark.executor.instances": "7"}.get) == 7
    assert executors_from_confs({"spark.master": "spark://h:7077"}.get) == 0


def test_size_bytes_reads_spark_sizes():
    assert size_bytes("1g") == 1 << 30
    assert size_bytes("4096") == 4096 and size_bytes("2KB") == 2048
    assert size_bytes(" 3 t ") == 3 << 40
    with pytest.raises(ValueError, match="not a byte size: '1.5g'"):
        size_bytes("1.5g")


def test_capacity_message_is_one_text_for_both_sessions():
    class Conf:  # SparkConf's get(key, default), as sparkdl.session.connect.ConfView has
        def get(self, key, default=None):
            return {"spark.executor.cores": "1"}.get(key, default)

    text = capacity_message(3, 2, "local-cluster[2,1,1024]", Conf())
    assert text.startswith("numWorkers=3 needs 3 concurrent task slots but the cluster "
                           "has 2 (master 'local-cluster[2,1,1024]', spark.executor.cores=1, "
                           "spark.task.cpus=1, spark.executor.instances=default)")
