"""Checkpoints and training logs, on local disk and in a real HDFS: a fit that stops
and resumes from its checkpoint ends with the weights of an uninterrupted fit."""

from __future__ import annotations

import json
import os
import urllib.request

import numpy as np
import pytest
import torch

from sparkdl import ConfigError, TorchEstimator
from sparkdl.checkpoints import METRICS
from sparkdl.worker.tensorboard_events import EVENTS_FILE

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def net():
    # Dropout: a resumed fit must also replay the random masks of the epochs it runs.
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                               torch.nn.Linear(32, 10))


def estimator(epochs: int, backend: str, **params) -> TorchEstimator:
    # Adam: its moment estimates are state a resume must restore, not just weights.
    return TorchEstimator(model=net, optimizer="adam", optimizerParams={"lr": 1e-2},
                          batchSize=64, epochs=epochs, numWorkers=2, seed=5, backend=backend,
                          **params)


def weights(model) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.getModel().state_dict().items()}


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_allclose(wa[name], wb[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.fixture(scope="module")
def webhdfs_conf(spark, hdfs):
    """The NameNode's HTTP address in Spark's Hadoop configuration, as hdfs-site.xml
    gives it on a real cluster."""
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    conf.set("dfs.namenode.http-address", hdfs.webhdfs.split("://", 1)[1])
    yield hdfs
    conf.unset("dfs.namenode.http-address")


def tensorboard_scalars(directory) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard's own reader finds in ``directory``: tag -> (step, value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def assert_tensorboard_matches(scalars: dict, history, lr: float) -> None:
    epochs = history.metric("epoch")
    for name in ("train_loss", "train_accuracy"):
        assert [s for s, _ in scalars[f"epoch/{name}"]] == epochs
        np.testing.assert_allclose([v for _, v in scalars[f"epoch/{name}"]],
                                   history.metric(name), rtol=1e-6)
    assert [v for _, v in scalars["epoch/lr"]] == pytest.approx([lr] * len(scalars["epoch/lr"]))


def test_resume_from_a_local_checkpoint_equals_an_uninterrupted_fit(spark, digits, tmp_path):
    train, _ = digits
    ckpt, logs = str(tmp_path / "ckpt"), f"file:{tmp_path}/logs"
    straight = estimator(4, "torch").fit(train)

    spark.conf.set("spark.sparkdl.progressInterval", "0.01")  # step scalars too
    try:
        first = estimator(2, "torch", checkpointDir=ckpt, logDir=logs).fit(train)
    finally:
        spark.conf.unset("spark.sparkdl.progressInterval")
    first_scalars = tensorboard_scalars(tmp_path / "logs")
    assert_tensorboard_matches(first_scalars, first.history, lr=1e-2)
    steps = [s for s, _ in first_scalars["step/train_loss"]]
    assert steps == sorted(steps) and len(steps) >= 2 and "step/samples_per_s" in first_scalars
    assert sorted(os.listdir(ckpt)) == ["epoch-0001", "epoch-0002"]
    assert sorted(os.listdir(f"{ckpt}/epoch-0002")) == [
        "optimizer.pt", "state.json", "weights.safetensors"]
    resumed = estimator(4, "torch", checkpointDir=ckpt, logDir=logs).fit(train)

    assert_same_weights(resumed, straight)
    assert resumed.history.resumed_from_epoch == 2 and first.history.resumed_from_epoch == 0
    assert resumed.history.metric("epoch") == [1, 2, 3, 4]
    assert resumed.history.metric("train_loss")[:2] == first.history.metric("train_loss")
    np.testing.assert_allclose(resumed.history.metric("train_loss"),
                               straight.history.metric("train_loss"), rtol=1e-5)
    assert sorted(os.listdir(ckpt))[-1] == "epoch-0004"
    lines = (tmp_path / "logs" / METRICS).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    assert_tensorboard_matches(tensorboard_scalars(tmp_path / "logs"), resumed.history, 1e-2)

    # Everything already trained: the checkpoint's model, no job.
    again = estimator(4, "torch", checkpointDir=ckpt).fit(train)
    assert_same_weights(again, straight)
    assert again.history.workers == [] and len(again.history) == 4


def test_checkpoint_interval_and_an_incomplete_checkpoint(digits, tmp_path):
    train, _ = digits
    ckpt = str(tmp_path / "ckpt")
    estimator(3, "torch", checkpointDir=ckpt, checkpointInterval=2).fit(train)
    assert sorted(os.listdir(ckpt)) == ["epoch-0002", "epoch-0003"]  # every 2nd and the last
    os.remove(f"{ckpt}/epoch-0003/state.json")  # as if the writer died mid-checkpoint
    resumed = estimator(3, "torch", checkpointDir=ckpt, checkpointInterval=2).fit(train)
    assert resumed.history.resumed_from_epoch == 2


def test_horovod_checkpoints_and_logs_in_hdfs_resume(spark, digits, webhdfs_conf, tmp_path):
    hdfs = webhdfs_conf
    train, _ = digits
    ckpt, logs = f"{hdfs.uri}/runs/hvd/ckpt", f"{hdfs.uri}/runs/hvd/logs"
    straight = estimator(3, "horovod").fit(train)
    estimator(2, "horovod", checkpointDir=ckpt, logDir=logs).fit(train)
    resumed = estimator(3, "horovod", checkpointDir=ckpt, logDir=logs).fit(train)
    assert_same_weights(resumed, straight)
    assert resumed.history.resumed_from_epoch == 2

    # Really in HDFS, as the NameNode lists it, with the local layout.
    def names(path: str) -> list[str]:
        listing = json.loads(urllib.request.urlopen(
            f"{hdfs.webhdfs}/webhdfs/v1{path}?op=LISTSTATUS").read())
        return sorted(f["pathSuffix"] for f in listing["FileStatuses"]["FileStatus"])

    assert names("/runs/hvd/ckpt") == ["epoch-0001", "epoch-0002", "epoch-0003"]
    assert names("/runs/hvd/ckpt/epoch-0003") == [
        "optimizer.pt", "state.json", "weights.safetensors"]
    epochs = [r.epoch for r in spark.read.json(f"{logs}/{METRICS}").orderBy("epoch").collect()]
    assert epochs == [1, 2, 3]
    # TensorBoard's reader, on the event file as the NameNode serves it
    events = tmp_path / "events"
    events.mkdir()
    (events / EVENTS_FILE).write_bytes(urllib.request.urlopen(
        f"{hdfs.webhdfs}/webhdfs/v1/runs/hvd/logs/{EVENTS_FILE}?op=OPEN").read())
    assert_tensorboard_matches(tensorboard_scalars(events), resumed.history, lr=1e-2)


def test_webhdfs_urls_work_without_hadoop_configuration(digits, hdfs):
    train, _ = digits
    address = hdfs.webhdfs.split("://", 1)[1]
    ckpt = f"webhdfs://{address}/runs/direct/ckpt"
    model = estimator(1, "torch", checkpointDir=ckpt).fit(train)
    resumed = estimator(1, "torch", checkpointDir=ckpt).fit(train)
    assert resumed.history.resumed_from_epoch == 1
    assert_same_weights(resumed, model)


def test_a_checkpoint_of_another_network_is_refused_before_training(digits, tmp_path):
    train, _ = digits
    ckpt = str(tmp_path / "ckpt")
    estimator(1, "torch", checkpointDir=ckpt).fit(train)
    other = TorchEstimator(model=torch.nn.Linear(64, 10), epochs=2, numWorkers=2,
                           backend="torch", checkpointDir=ckpt)
    with pytest.raises(ConfigError, match=r"holds checkpoints of another network.*"
                                          r"Use a new checkpointDir"):
        other.fit(train)


def test_a_damaged_checkpoint_is_skipped_with_a_warning_naming_the_file(spark, digits,
                                                                         tmp_path, caplog):
    from sparkdl.checkpoints import WEIGHTS, RunOutputs, RunWriter
    from sparkdl.storage import StorageLocation

    train, _ = digits
    ckpt = str(tmp_path / "ckpt")
    torch.manual_seed(0)
    module = net()
    RunWriter(RunOutputs(checkpoints=StorageLocation("local", ckpt, url=ckpt)), epochs=2) \
        .after_epoch({"epoch": 1, "train_loss": 1.0}, module,
                     torch.optim.Adam(module.parameters()))
    weights = f"{ckpt}/epoch-0001/{WEIGHTS}"
    with open(weights, "r+b") as f:  # one flipped bit, as a failing disk leaves it
        f.seek(200)
        byte = f.read(1)[0]
        f.seek(200)
        f.write(bytes([byte ^ 1]))
    # One bad write must not block every later fit: it starts over, and says why.
    with caplog.at_level("WARNING", logger="sparkdl.checkpoints"):
        model = estimator(2, "torch", checkpointDir=ckpt).fit(train)
    assert model.history.resumed_from_epoch == 0 and len(model.history) == 2
    assert f"{weights} does not have the SHA-256 state.json recorded" in caplog.text


@pytest.mark.parametrize("params, message", [
    ({"checkpointDir": "s3a://bucket/ckpt"}, r"checkpointDir='s3a://bucket/ckpt'.*not supported"),
    ({"logDir": "gs://bucket/logs"}, r"logDir='gs://bucket/logs'.*not supported"),
    ({"checkpointInterval": 0}, r"checkpointInterval must be >= 1"),
])
def test_bad_output_settings_fail_before_any_job(spark, digits, params, message):
    train, _ = digits
    before = set(spark.sparkContext.statusTracker().getJobIdsForGroup())
    with pytest.raises(ConfigError, match=message):
        estimator(1, "torch", **params).fit(train)
    assert set(spark.sparkContext.statusTracker().getJobIdsForGroup()) == before
