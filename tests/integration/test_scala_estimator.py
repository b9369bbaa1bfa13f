"""The Scala TorchEstimator and TorchModel, driven from Python through py4j.

The Scala classes start ``python -m sparkdl.worker`` from their tasks and stream Arrow
to it; the worker runs the same training code as Python's estimator, so both ends
train to the same weights and read each other's saved models.
"""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.errors import IllegalArgumentException
from pyspark.sql import DataFrame
from safetensors.numpy import load as st_load

from sparkdl import TorchEstimator
from sparkdl.jvm import jar_path
from sparkdl.ml.model import TorchModel
from sparkdl.nn import Dense, Input, Sequential

pytestmark = [pytest.mark.spark, pytest.mark.slow]

LR, EPOCHS, SEED = 0.5, 3, 3


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
            .setEpochs(EPOCHS).setNumWorkers(2).setSeed(SEED).setBackend("torch"))


@pytest.fixture(scope="module")
def scala_model(jvm_ml, full_batch):
    return scala_estimator(jvm_ml, full_batch.rows).fit(full_batch.df._jdf)


@pytest.fixture(scope="module")
def python_model(full_batch):
    est = TorchEstimator(model=network(), loss="cross_entropy", optimizer="sgd",
                         optimizerParams={"lr": LR}, batchSize=full_batch.rows, epochs=EPOCHS,
                         numWorkers=2, seed=SEED, backend="torch")
    return est.fit(full_batch.df)


def scala_weights(jmodel) -> dict:
    return st_load(bytes(jmodel.weightsBytes()))


def python_weights(model) -> dict:
    return {k: v.numpy() for k, v in model.getModel().state_dict().items()}


def scored(spark, jdf) -> DataFrame:
    return DataFrame(jdf, spark)


def test_scala_and_python_train_to_identical_weights(scala_model, python_model):
    ours, theirs = scala_weights(scala_model), python_weights(python_model)
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def test_scala_fit_reports_its_workers_and_history(scala_model):
    import json

    history = json.loads(scala_model.historyJson())
    assert history["backend"] == "torch" and history["num_workers"] == 2
    assert len(history["epochs"]) == EPOCHS
    assert [w["rank"] for w in history["workers"]] == [0, 1]
    assert len({w["executor_id"] for w in history["workers"]}) == 2
    assert scala_model.getTask() == "multiclass"
    assert list(scala_model.getOutputShape()) == [3]


def test_scala_transform_scores_like_python(spark, scala_model, python_model, full_batch):
    ours = scored(spark, scala_model.transform(full_batch.df._jdf))
    theirs = python_model.transform(full_batch.df)
    assert ours.columns == theirs.columns == ["features", "label", "prediction",
                                              "rawPrediction", "probability"]
    assert ours.schema == theirs.schema
    a = ours.orderBy("features").collect()
    b = theirs.orderBy("features").collect()
    assert [r.prediction for r in a] == [r.prediction for r in b]
    np.testing.assert_allclose([r.probability.toArray() for r in a],
                               [r.probability.toArray() for r in b], rtol=1e-6, atol=1e-7)


def test_scala_saved_model_loads_in_python(spark, scala_model, full_batch, tmp_path):
    path = str(tmp_path / "scala-model")
    scala_model.write().overwrite().save(path)
    loaded = TorchModel.load(path)
    assert loaded.uid == scala_model.uid()
    assert loaded.getTask() == "multiclass" and loaded.getFeatureShape() == [5]
    assert len(loaded.history) == EPOCHS and loaded.history.num_workers == 2
    for key, value in scala_weights(scala_model).items():
        np.testing.assert_array_equal(python_weights(loaded)[key], value)
    ours = scored(spark, scala_model.transform(full_batch.df._jdf)).orderBy("features")
    theirs = loaded.transform(full_batch.df).orderBy("features")
    assert [r.rawPrediction for r in ours.collect()] == [r.rawPrediction for r in theirs.collect()]


def test_python_saved_model_loads_in_scala(spark, jvm_ml, python_model, full_batch, tmp_path):
    path = str(tmp_path / "python-model")
    python_model.save(path)
    loaded = jvm_ml.TorchModel.load(path)
    assert loaded.uid() == python_model.uid
    assert loaded.getTask() == "multiclass" and loaded.architectureKind() == "spec"
    for key, value in python_weights(python_model).items():
        np.testing.assert_array_equal(scala_weights(loaded)[key], value)
    ours = scored(spark, loaded.transform(full_batch.df._jdf)).orderBy("features")
    theirs = python_model.transform(full_batch.df).orderBy("features")
    assert [r.rawPrediction for r in ours.collect()] == [r.rawPrediction for r in theirs.collect()]
    # and back: a model Scala re-saves still loads in Python
    again = str(tmp_path / "again")
    loaded.write().save(again)
    assert TorchModel.load(again).uid == python_model.uid


def test_missing_feature_column_is_named(jvm_ml, full_batch):
    est = scala_estimator(jvm_ml, full_batch.rows).setFeaturesCol("pixels")
    with pytest.raises(IllegalArgumentException, match="features column 'pixels' does not exist"):
        est.fit(full_batch.df._jdf)


def test_wrong_column_type_is_named(spark, jvm_ml):
    df = spark.createDataFrame([("a", 1)], "features string, label long")
    with pytest.raises(IllegalArgumentException, match="unsupported type string"):
        scala_estimator(jvm_ml, 8).fit(df._jdf)


def test_float_label_with_cross_entropy_is_refused(spark, jvm_ml):
    df = spark.createDataFrame([([1.0] * 5, [0.5])], "features array<float>, label array<float>")
    with pytest.raises(IllegalArgumentException, match="needs one integer class id"):
        scala_estimator(jvm_ml, 8).fit(df._jdf)


def test_executors_without_sparkdl_fail_before_training(jvm_ml, full_batch):
    est = scala_estimator(jvm_ml, full_batch.rows).setPythonExec("/nonexistent/python3")
    with pytest.raises(Exception, match="cannot run the sparkdl Python worker") as info:
        est.fit(full_batch.df._jdf)
    assert "/nonexistent/python3" in str(info.value)


def test_a_worker_error_fails_the_fit_with_its_text(jvm_ml, full_batch):
    # A network whose input does not fit the data: the worker's own error comes back.
    est = scala_estimator(jvm_ml, full_batch.rows).setOptimizerParams('{"lr": 0.1, "bogus": 1}')
    with pytest.raises(Exception, match="bogus") as info:
        est.fit(full_batch.df._jdf)
    assert "A training worker failed: The sparkdl Python worker" in str(info.value)


@pytest.mark.horovod
def test_scala_horovod_trains_like_torch(jvm_ml, scala_model, full_batch):
    # Horovod ranks run in a child process of the worker, as under PySpark.
    hvd = scala_estimator(jvm_ml, full_batch.rows).setBackend("horovod").fit(full_batch.df._jdf)
    import json

    assert json.loads(hvd.historyJson())["backend"] == "horovod"
    for key, value in scala_weights(scala_model).items():
        np.testing.assert_allclose(scala_weights(hvd)[key], value, rtol=1e-5, atol=1e-6)


def fake_python(tmp_path, program: str) -> str:
    """A 'python' that answers the executors' pre-flight check truthfully but runs
    ``program`` instead of the worker."""
    import sys

    script = tmp_path / "python"
    script.write_text(f"""#!/bin/sh
if [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi
exec {sys.executable} -c '{program}' "$@"
""")
    script.chmod(0o755)
    return str(script)


def test_a_worker_that_dies_before_connecting_fails_the_fit(jvm_ml, full_batch, tmp_path):
    python = fake_python(tmp_path, 'import sys; print("no torch here, sorry", file=sys.stderr); '
                                   'sys.exit(7)')
    est = scala_estimator(jvm_ml, full_batch.rows).setPythonExec(python)
    with pytest.raises(Exception, match="exited with code 7 before connecting") as info:
        est.fit(full_batch.df._jdf)
    assert "no torch here, sorry" in str(info.value)


def test_a_worker_that_crashes_mid_run_fails_the_fit(jvm_ml, full_batch, tmp_path):
    program = ("import os, socket, struct, sys; "
               "s = socket.create_connection((\"127.0.0.1\", int(sys.argv[-1]))); "
               "k = os.environ[\"SPARKDL_WORKER_SECRET\"].encode(); "
               "s.sendall(struct.pack(\">iq\", 0, len(k)) + k); "
               "print(\"crashing on purpose\", file=sys.stderr); sys.stderr.flush(); os._exit(11)")
    est = scala_estimator(jvm_ml, full_batch.rows).setPythonExec(fake_python(tmp_path, program))
    with pytest.raises(Exception, match="exit code 11") as info:
        est.fit(full_batch.df._jdf)
    assert "crashing on purpose" in str(info.value)


def test_more_workers_than_slots_fails_fast(jvm_ml, full_batch):
    import time

    start = time.monotonic()
    with pytest.raises(Exception, match="numWorkers=3 needs 3 concurrent task slots but the "
                                        "cluster has 2"):
        scala_estimator(jvm_ml, full_batch.rows).setNumWorkers(3).fit(full_batch.df._jdf)
    assert time.monotonic() - start < 70
