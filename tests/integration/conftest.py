"""One SparkSession for the whole integration run, on a real 2-executor cluster.

``local-cluster[2,1,1024]`` starts a standalone master, a worker and two executor
JVMs with one core each, so every barrier job really spans two processes.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

N_EXECUTORS = 2


@pytest.fixture(scope="session")
def spark():
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from sparkdl.cluster import task_slots
    from sparkdl.errors import ConfigError
    from sparkdl.jvm import jar_path, kafka_conf, ship_package_jars

    builder = SparkSession.builder
    # `make test` builds the jar and puts Spark's Kafka connector into ~/.m2 first; the
    # tests that need them fail loudly without. offline: Spark resolves the connector's
    # coordinates from ~/.m2 alone, so the tests never reach outside the machine.
    for conf in (lambda: {"spark.jars": jar_path()}, lambda: kafka_conf(offline=True)):
        try:
            for key, value in conf().items():
                builder = builder.config(key, value)
        except ConfigError:
            pass
    session = (
        builder.master(f"local-cluster[{N_EXECUTORS},1,1024]")
        .appName("sparkdl-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.task.maxFailures", "1")
        .config("spark.python.worker.faulthandler.enabled", "true")
        .getOrCreate()
    )
    ship_package_jars(session)  # the builder's spark.jars hid the Kafka packages' jars
    session.sparkContext.setLogLevel("ERROR")
    deadline = time.monotonic() + 120
    while task_slots(session.sparkContext) < N_EXECUTORS:
        assert time.monotonic() < deadline, "executors did not register within 120 s"
        time.sleep(0.5)
    yield session
    session.stop()


# deploy/local's scripts (servers.py: Kafka broker, MiniDFSCluster; local_executors.py:
# the executor JVMs to kill in fault drills) are imported as they say: from this directory.
_LOCAL = str(Path(__file__).resolve().parents[2] / "deploy" / "local")
if _LOCAL not in sys.path:
    sys.path.append(_LOCAL)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """sparkdl's wheel, built by ``make dist``'s command (the jar comes from jvm/target
    when `make test` built it)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "--no-build-isolation", "-w", str(out), str(root)], cwd=root,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (whl,) = out.glob("sparkdl-*-py3-none-any.whl")
    return whl


def _servers():
    """``deploy/local/servers.py``, imported as it says."""
    import servers

    return servers


@pytest.fixture(scope="session")
def kafka():
    """A real Kafka broker (KRaft) on 127.0.0.1, started once for the run."""
    with _servers().KafkaBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def hdfs():
    """A real HDFS (NameNode + DataNode, WebHDFS on), started once for the run."""
    with _servers().MiniHDFS() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def digits(spark):
    """The scikit-learn digits as (features array<float>[64], label long), split 80/20."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rows = [((img / 16.0).tolist(), int(y)) for img, y in zip(data.data, data.target)]
    df = spark.createDataFrame(rows, "features array<float>, label long")
    train, test = df.randomSplit([0.8, 0.2], seed=3)
    return train.cache(), test.cache()


class FullBatchCase:
    """Full-batch SGD on 101 rows (odd, so two shards are uneven): every step's global
    batch is the whole data set, whatever the number of workers, so any correct
    allreduce ends with the weights a plain PyTorch loop computes."""

    rows = 101
    lr = 0.5
    epochs = 5

    def __init__(self, spark):
        import numpy as np

        rng = np.random.default_rng(11)
        self.x = rng.normal(size=(self.rows, 5)).astype("float32")
        self.y = rng.integers(0, 3, size=self.rows)
        self.df = spark.createDataFrame(
            [(r.tolist(), int(t)) for r, t in zip(self.x, self.y)],
            "features array<float>, label long")

    @staticmethod
    def net():
        import torch

        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(),
                                   torch.nn.Linear(8, 3))

    def fit(self, workers, **params):
        from sparkdl import TorchEstimator

        merged = dict(model=self.net(), loss="cross_entropy", optimizer="sgd",
                      optimizerParams={"lr": self.lr}, batchSize=self.rows,
                      epochs=self.epochs, numWorkers=workers, seed=3)
        merged.update(params)
        return TorchEstimator(**merged).fit(self.df)

    @staticmethod
    def weights(model):
        return {k: v.numpy() for k, v in model.getModel().state_dict().items()}


@pytest.fixture(scope="session")
def full_batch(spark):
    return FullBatchCase(spark)


@pytest.fixture(scope="session")
def connect_server():
    """A real Spark Connect server (``servers.ConnectServer``), started once per run:
    ``local-cluster[2,1,1024]``, sparkdl's jar, executors on this Python. Its process
    group is stopped at the end; ``.url`` is ``sc://127.0.0.1:<port>``."""
    import servers

    from sparkdl.jvm import jar_path

    # start() waits up to 180 s for "Spark Connect server started" in its log.
    with servers.ConnectServer(python=sys.executable, jars=[jar_path()]) as server:
        yield server


@pytest.fixture(scope="session")
def connect(connect_server):
    """A Spark Connect session on :func:`connect_server`.

    The session comes from pyspark's Connect builder directly: ``SparkSession.builder
    .remote(...)`` refuses to start one while this process holds the classic session.
    """
    from pyspark.sql.connect.session import SparkSession as RemoteSession

    session = RemoteSession.builder.remote(connect_server.url).getOrCreate()
    try:
        yield session
    finally:
        session.stop()


@contextmanager
def _remote_mode():
    assert "SPARK_CONNECT_MODE_ENABLED" not in os.environ
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
    try:
        yield
    finally:
        del os.environ["SPARK_CONNECT_MODE_ENABLED"]


@pytest.fixture(scope="session")
def remote_mode():
    """``with remote_mode(): ...`` runs user code as in a Spark Connect-only process.

    What ``SparkSession.builder.remote`` sets in a process of its own: with it,
    ``pyspark.sql.functions`` build Connect columns and pyspark.ml's readers and
    writers take the Connect path. This process holds the classic session as well,
    so only the Connect calls run with it.
    """
    return _remote_mode
