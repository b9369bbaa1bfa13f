"""The Scala TorchEstimator's training options (lrScheduler, lrSchedulerParams,
gradientClipNorm, earlyStopping, precision, metrics), driven from Python through py4j:
one fit whose history shows them, the driver's checks, and persistence across languages.
"""

from __future__ import annotations

import json

import pytest
from pyspark.errors import IllegalArgumentException

from sparkdl import TorchEstimator
from sparkdl.jvm import jar_path
from sparkdl.ml.model import TorchModel
from sparkdl.nn import Dense, Input, Sequential

pytestmark = [pytest.mark.spark]

LR = 0.5
STEP = {"step_size": 1, "gamma": 0.5}
# minDelta larger than any loss: only the first epoch improves, so the fit stops after
# 1 + patience epochs whatever the numbers are.
STOP = {"monitor": "train_loss", "patience": 2, "minDelta": 100.0}


def network():
    return Sequential([Input((5,)), Dense(8, activation="tanh"), Dense(3)])


@pytest.fixture(scope="module")
def jvm_ml(spark):
    jar_path()  # a clear error naming `make jvm` when the jar was never built
    return spark._jvm.sparkdl.ml


def scala_estimator(jvm_ml, rows):
    return (jvm_ml.TorchEstimator().setNetworkJson(network().to_json())
            .setLoss("cross_entropy").setOptimizer("sgd").setLearningRate(LR)
            .setFeaturesCol("features").setLabelCol("label").setBatchSize(rows)
            .setEpochs(5).setNumWorkers(2).setSeed(3).setBackend("torch"))


def test_scala_fit_with_step_scheduler_metrics_and_early_stopping(jvm_ml, full_batch, tmp_path):
    est = (scala_estimator(jvm_ml, full_batch.rows).setLrScheduler("step")
           .setLrSchedulerParams(STEP)  # a dict: py4j hands Scala a java.util.Map
           .setMetrics(["accuracy", "f1"]).setEarlyStopping(json.dumps(STOP))
           .setGradientClipNorm(10.0))
    model = est.fit(full_batch.df._jdf)
    history = json.loads(model.historyJson())
    epochs = history["epochs"]
    # stopped after patience=2 epochs without improvement
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert [e["lr"] for e in epochs] == [LR, LR * 0.5, LR * 0.25], "StepLR halves lr every epoch"
    for e in epochs:
        assert {"train_loss", "train_accuracy", "train_f1"} <= set(e), e
        assert 0.0 <= e["train_f1"] <= 1.0
    assert [bool(e.get("stopped_early")) for e in epochs] == [False, False, True]
    assert "train_loss did not improve for 2 epochs" in epochs[-1]["stopped_early"]
    # the model carries the options, and so does its Python twin once saved and loaded
    assert model.getLrScheduler() == "step"
    assert list(model.getMetrics().get()) == ["accuracy", "f1"]
    path = str(tmp_path / "model")
    model.write().save(path)
    loaded = TorchModel.load(path)
    assert loaded.getOrDefault("lrScheduler") == "step"
    assert loaded.getOrDefault("lrSchedulerParams") == STEP
    assert loaded.getOrDefault("earlyStopping") == STOP
    assert loaded.getOrDefault("metrics") == ["accuracy", "f1"]
    assert loaded.getOrDefault("gradientClipNorm") == 10.0
    assert loaded.history.stopped_epoch == 3
    assert loaded.history.metric("lr") == [e["lr"] for e in epochs]


def test_scala_training_options_are_checked_before_training(jvm_ml, full_batch):
    with pytest.raises(IllegalArgumentException,
                       match=r"Unknown lrScheduler 'linear'. Valid choices: "
                             r"\['cosine', 'onecycle', 'plateau', 'step'\]"):
        scala_estimator(jvm_ml, full_batch.rows).setLrScheduler("linear")
    with pytest.raises(IllegalArgumentException, match="earlyStopping has unknown key"):
        scala_estimator(jvm_ml, full_batch.rows).setEarlyStopping(
            {"monitor": "val_loss", "wait": 2})
    est = scala_estimator(jvm_ml, full_batch.rows).setEarlyStopping({"monitor": "val_loss"})
    with pytest.raises(IllegalArgumentException,
                       match="earlyStopping monitors 'val_loss', which the history will not have"):
        est.fit(full_batch.df._jdf)


def test_scala_and_python_estimators_save_and_load_each_others_training_options(spark, jvm_ml,
                                                                               tmp_path):
    scala_path = str(tmp_path / "scala")
    (jvm_ml.TorchEstimator().setNetworkJson(network().to_json()).setLrScheduler("cosine")
     .setLrSchedulerParams(json.dumps({"T_max": 4})).setGradientClipNorm(1.5)
     .setEarlyStopping(json.dumps(STOP)).setPrecision("bf16-mixed").setMetrics(["auc"])
     .write().save(scala_path))
    py = TorchEstimator.load(scala_path)
    assert (py.getLrScheduler(), py.getLrSchedulerParams(), py.getGradientClipNorm(),
            py.getEarlyStopping(), py.getPrecision(), py.getMetrics()) == \
        ("cosine", {"T_max": 4}, 1.5, STOP, "bf16-mixed", ["auc"])

    python_path = str(tmp_path / "python")
    TorchEstimator(model=network(), lrScheduler="step", lrSchedulerParams=STEP,
                   gradientClipNorm=2.0, earlyStopping=STOP, precision="bf16-mixed",
                   metrics=["accuracy", "top5_accuracy"]).save(python_path)
    scala = jvm_ml.TorchEstimator.load(python_path)
    assert scala.getLrScheduler() == "step" and json.loads(scala.getLrSchedulerParams()) == STEP
    assert scala.getGradientClipNorm() == 2.0 and scala.getPrecision() == "bf16-mixed"
    assert json.loads(scala.getEarlyStopping()) == STOP
    assert list(scala.getMetrics().get()) == ["accuracy", "top5_accuracy"]
