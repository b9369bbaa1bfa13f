"""One SparkSession for the whole integration run, on a real 2-executor cluster.

``local-cluster[2,1,1024]`` starts a standalone master, a worker and two executor
JVMs with one core each, so every barrier job really spans two processes.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

N_EXECUTORS = 2


@pytest.fixture(scope="session")
def spark():
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from sparkdl.cluster import task_slots

    session = (
        SparkSession.builder.master(f"local-cluster[{N_EXECUTORS},1,1024]")
        .appName("sparkdl-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.task.maxFailures", "1")
        .config("spark.python.worker.faulthandler.enabled", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    deadline = time.monotonic() + 120
    while task_slots(session.sparkContext) < N_EXECUTORS:
        assert time.monotonic() < deadline, "executors did not register within 120 s"
        time.sleep(0.5)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def digits(spark):
    """The scikit-learn digits as (features array<float>[64], label long), split 80/20."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rows = [((img / 16.0).tolist(), int(y)) for img, y in zip(data.data, data.target)]
    df = spark.createDataFrame(rows, "features array<float>, label long")
    train, test = df.randomSplit([0.8, 0.2], seed=3)
    return train.cache(), test.cache()
