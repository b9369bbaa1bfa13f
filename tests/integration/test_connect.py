"""sparkdl over Spark Connect (``sc://``), against a real Connect server.

The ``connect_server`` fixture starts ``SparkConnectServer`` on
``local-cluster[2,1,1024]`` (two executor JVMs). The digits demo runs through it in
a process of its own, as a thin client would run it (only a Connect session, no
SparkContext, no py4j). The other tests share this process with the classic session:
they run the same user code with :func:`remote_mode`, and compare with the classic
results: fit, transform (batch and streaming), save/load, Pipelines, bad input.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from sparkdl import PathExistsError, TorchEstimator, TorchModel
from sparkdl.errors import ClusterCapacityError, ConfigError, ModelNotFoundError, SchemaError
from sparkdl.ml.files_connect import ConnectFiles
from sparkdl.session import connect as connect_facts
from sparkdl.session import facts_for

pytestmark = [pytest.mark.spark, pytest.mark.slow]

_MODE = "SPARK_CONNECT_MODE_ENABLED"  # what remote_mode sets; a subprocess must not inherit it
ROOT = Path(__file__).resolve().parents[2]


def test_session_kind_is_detected(spark, connect):
    assert facts_for(spark).kind == "classic" and facts_for(connect).kind == "connect"
    assert facts_for(connect).app_id.startswith("app-")
    assert facts_for(connect).check_capacity(2) == 2


def test_fit_over_connect_trains_the_same_weights_as_classic(full_batch, connect, remote_mode):
    case = type(full_batch)  # conftest's FullBatchCase: the same rows, seed and network
    classic = full_batch.fit(2, backend="torch")
    seen = []  # over Connect the epochs reach callbacks when the job returns
    with remote_mode():
        remote = case(connect).fit(2, backend="torch", verbose=2,
                                   onEpochEnd=lambda epoch, m: seen.append((epoch, m)))
    a, b = case.weights(classic), case.weights(remote)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    history = remote.history
    assert history.metric("epoch") == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(history.metric("train_loss"),
                               classic.history.metric("train_loss"), rtol=1e-5)
    assert [w["rank"] for w in history.workers] == [0, 1]
    assert sum(w["train_rows"] for w in history.workers) == case.rows
    assert history.attempts[0]["status"] == "finished"
    assert [e for e, _ in seen] == [1, 2, 3, 4, 5]
    assert [m["train_loss"] for _, m in seen] == history.metric("train_loss")


def _errors(spark, make, fit_df, remote_mode):
    context = remote_mode() if remote_mode else _nothing()
    with context, pytest.raises(Exception) as caught:
        make().fit(fit_df(spark))
    return caught.value


@contextmanager
def _nothing():
    yield


def _good(spark):
    return spark.createDataFrame([([1.0, 2.0], 0), ([3.0, 4.0], 2), ([5.0, 6.0], 1)] * 4,
                                 "features array<double>, label int")


@pytest.mark.parametrize("params, error", [
    ({"featuresCol": "featurs"}, SchemaError),
    ({"labelCol": "target"}, SchemaError),
    ({"numWorkers": 3}, ClusterCapacityError),
])
def test_bad_input_fails_as_in_a_classic_session(spark, connect, params, error, remote_mode):
    def make():
        merged = dict(model=torch.nn.Linear(2, 3), numWorkers=2, epochs=1)
        merged.update(params)
        return TorchEstimator(**merged)

    classic = _errors(spark, make, _good, None)
    remote = _errors(connect, make, _good, remote_mode)
    assert type(classic) is error and type(remote) is error, (classic, remote)
    assert str(remote) == str(classic)


def test_driver_rendezvous_is_refused_over_connect(connect, remote_mode):
    connect.conf.set("spark.sparkdl.rendezvous", "driver")
    try:
        with remote_mode(), pytest.raises(ConfigError, match=r"spark.sparkdl.rendezvous="
                                                             r"barrier \(the default over"):
            TorchEstimator(model=torch.nn.Linear(2, 3), numWorkers=2).fit(_good(connect))
    finally:
        connect.conf.unset("spark.sparkdl.rendezvous")


def test_the_digits_demo_runs_over_connect(spark, connect_server, tmp_path):
    """``python/train_digits.py --remote``: fit (MLP and CNN), transform, Parquet,
    save, load and identical predictions, from a process holding only a Connect
    session; the model it saved loads in a classic session too."""
    out = tmp_path / "digits"
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", _MODE)}
    run = subprocess.run(
        [sys.executable, str(ROOT / "python" / "train_digits.py"), "--remote",
         connect_server.url, "--output", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0 and "DEMO OK" in run.stdout, run.stdout[-4000:] + run.stderr[-4000:]
    accuracies = [float(a) for a in re.findall(r"test accuracy: ([0-9.]+)", run.stdout)]
    assert len(accuracies) == 2 and min(accuracies) >= 0.95, accuracies
    assert "reloaded model predictions identical: True" in run.stdout
    executors = re.findall(r"executors=\[(.*)\]", run.stdout)[0]
    assert len(set(executors.split(", "))) == 2, executors  # one rank per executor JVM
    model = TorchModel.load(str(out / "cnn_model"))  # the classic session reads it
    assert model.getModel()(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


@pytest.fixture(scope="module")
def twins(spark, connect, full_batch, remote_mode):
    """A model fitted over Connect, and the same rows in both sessions."""
    case = type(full_batch)
    with remote_mode():
        remote = case(connect)
        model = remote.fit(2, backend="torch")
    return model, full_batch.df, remote.df


def _scores(df) -> list[tuple]:
    return sorted((tuple(r.features), r.prediction, tuple(r.probability.toArray()),
                   r.modelVersion) for r in df.collect())


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "artifact"])
def test_transform_over_connect_scores_as_in_a_classic_session(twins, monkeypatch, inline,
                                                                remote_mode):
    model, classic_df, remote_df = twins
    model = model.copy().setModelVersionCol("modelVersion")
    model._shared = {}  # ship it anew, inline or as a session artifact
    if not inline:
        monkeypatch.setattr(connect_facts, "INLINE_MODEL_BYTES", 0)
    expected = _scores(model.transform(classic_df))
    with remote_mode():
        shipped = model._payload(remote_df.sparkSession)
        got = _scores(model.transform(remote_df))
    assert type(shipped).__name__ == ("InlineModel" if inline else "ArtifactModel")
    assert len(got) == len(expected) == 101
    for (f1, p1, pr1, v1), (f2, p2, pr2, v2) in zip(got, expected):
        assert f1 == f2 and p1 == p2 and v1 == v2 == model.version
        np.testing.assert_allclose(pr1, pr2, rtol=1e-6)


def test_streaming_transform_over_connect(twins, connect, tmp_path, remote_mode):
    model, _, remote_df = twins
    source = str(tmp_path / "incoming")
    with remote_mode():
        remote_df.repartition(3).write.parquet(source)
        stream = connect.readStream.schema(remote_df.schema).parquet(source)
        query = (model.transform(stream).writeStream.format("memory")
                 .queryName("sparkdl_connect_scored").trigger(availableNow=True).start())
        query.awaitTermination(300)
        streamed = {tuple(r.features): r.prediction
                    for r in connect.table("sparkdl_connect_scored").collect()}
        batch = {tuple(r.features): r.prediction for r in model.transform(remote_df).collect()}
    assert query.exception() is None and streamed == batch and len(streamed) == 101


@pytest.fixture
def connect_writes(monkeypatch):
    """The files written through Connect's file APIs (proof the Connect path ran)."""
    written = []
    real = ConnectFiles.write_bytes

    def write_bytes(self, path, data):
        written.append(os.path.basename(path))
        real(self, path, data)

    monkeypatch.setattr(ConnectFiles, "write_bytes", write_bytes)
    return written


def test_save_and_load_over_connect(twins, connect_writes, tmp_path, remote_mode):
    model, classic_df, remote_df = twins
    path = str(tmp_path / "model")
    with remote_mode():
        model.save(path)
        assert sorted(connect_writes) == ["architecture.pkl", "weights.safetensors"]
        with pytest.raises(PathExistsError, match="already exists. To overwrite it"):
            model.save(path)
        model.write().overwrite().save(path)
        loaded = TorchModel.load(path)
        assert loaded.uid == model.uid and loaded._weights == model._weights
        assert loaded.history.to_dict() == model.history.to_dict()
        remote = {tuple(r.features): r.prediction for r in loaded.transform(remote_df).collect()}
        with pytest.raises(ModelNotFoundError, match="Nothing is saved at"):
            TorchModel.load(str(tmp_path / "missing"))
        with pytest.raises(ConfigError, match="without a scheme"):
            model.write().overwrite().save("file://" + path)
    assert sorted(n for n in os.listdir(path) if not n.startswith((".", "_"))) == [
        "architecture.pkl", "metadata", "weights.safetensors"]
    classic = TorchModel.load(path)  # what Connect saved, a classic session loads
    assert classic._weights == model._weights
    assert {tuple(r.features): r.prediction for r in classic.transform(classic_df).collect()} \
        == remote


def test_pipeline_fit_save_load_over_connect(connect, tmp_path, connect_writes, remote_mode):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import SQLTransformer

    with remote_mode():
        df = _good(connect)
        pipeline = Pipeline(stages=[
            SQLTransformer(statement="SELECT *, label AS target FROM __THIS__"),
            TorchEstimator(model=torch.nn.Linear(2, 3), numWorkers=2, epochs=2, seed=1,
                           labelCol="target", backend="torch")])
        fitted = pipeline.fit(df)
        before = [r.prediction for r in fitted.transform(df).orderBy("features").collect()]
        fitted.save(str(tmp_path / "pipeline_model"))
        pipeline.save(str(tmp_path / "pipeline"))
        again = PipelineModel.load(str(tmp_path / "pipeline_model"))
        after = [r.prediction for r in again.transform(df).orderBy("features").collect()]
        estimator = Pipeline.load(str(tmp_path / "pipeline")).getStages()[-1]
    assert isinstance(again.stages[-1], TorchModel) and before == after
    assert isinstance(estimator, TorchEstimator) and estimator.getLabelCol() == "target"
    assert "weights.safetensors" in connect_writes


def test_bad_input_to_transform_fails_as_in_a_classic_session(twins, remote_mode):
    model, classic_df, remote_df = twins
    with pytest.raises(SchemaError) as classic:
        model.transform(classic_df.withColumnRenamed("features", "x"))
    with remote_mode(), pytest.raises(SchemaError) as remote:
        model.transform(remote_df.withColumnRenamed("features", "x"))
    assert str(remote.value) == str(classic.value)


def test_checkpoints_in_hdfs_over_connect_resume(connect, full_batch, twins, hdfs, remote_mode):
    """``hdfs://`` checkpoints from a Connect client: the NameNode's HTTP address comes
    from the application's ``spark.hadoop.*`` confs (the server's hdfs-site.xml is out
    of the client's reach)."""
    straight, _, _ = twins
    case = type(full_batch)
    ckpt = f"{hdfs.uri}/runs/connect/ckpt"
    connect.conf.set("spark.hadoop.dfs.namenode.http-address", hdfs.webhdfs.split("://")[1])
    try:
        with remote_mode():
            remote = case(connect)
            remote.fit(2, backend="torch", epochs=2, checkpointDir=ckpt)
            resumed = remote.fit(2, backend="torch", checkpointDir=ckpt)
    finally:
        connect.conf.unset("spark.hadoop.dfs.namenode.http-address")
    assert resumed.history.resumed_from_epoch == 2
    a, b = case.weights(straight), case.weights(resumed)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    listing = json.loads(urllib.request.urlopen(
        f"{hdfs.webhdfs}/webhdfs/v1/runs/connect/ckpt?op=LISTSTATUS", timeout=30).read())
    assert [f["pathSuffix"] for f in listing["FileStatuses"]["FileStatus"]][-1] == "epoch-0005"


def test_kafka_without_the_connector_fails_as_in_a_classic_session(connect, remote_mode):
    from sparkdl.data.kafka import read_kafka

    with remote_mode(), pytest.raises(ConfigError, match="Kafka connector is not on this "
                                                         "session's classpath"):
        read_kafka(connect, "127.0.0.1:1", "events", schema="x double")
