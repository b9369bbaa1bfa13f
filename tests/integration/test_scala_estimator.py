"""The Scala TorchEstimator and TorchModel, driven from Python through py4j.

The Scala classes start ``python -m sparkdl.worker`` from their tasks and stream Arrow
to it; the worker runs the same training code as Python's estimator, so both ends
train to the same weights and read each other's saved models.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from local_executors import executor_pids, wait_for_executors
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


# -- warm Python workers: one pool per executor JVM (PythonWorkerPool) ------------------

REUSE = "spark.sparkdl.worker.reuse"


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else fields


def alive(pid: int) -> bool:
    return _stat(pid) is not None


def parent_of(pid: int) -> int:
    return int(_stat(pid)[1])


def workers_of(jvms: set[int]) -> set[int]:
    """Live ``python -m sparkdl.worker`` processes whose parent is one of these JVMs."""
    import os

    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat is None or int(stat[1]) not in jvms:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"sparkdl.worker" in cmdline:
            found.add(int(entry))
    return found


def fit_pids(estimator, df) -> set[int]:
    """The worker pids a fit's history reports (torch backend: the worker itself)."""
    import json

    model = estimator.fit(df._jdf)
    return {w["pid"] for w in json.loads(model.historyJson())["workers"]}


def test_consecutive_fits_and_transforms_reuse_the_same_workers(spark, jvm_ml, full_batch):
    est = scala_estimator(jvm_ml, full_batch.rows).setEpochs(1)
    first = fit_pids(est, full_batch.df)
    jvms = {parent_of(p) for p in first}
    assert len(jvms) == 2, "one worker per executor JVM"
    assert workers_of(jvms) == first, "after the fit, its workers wait idle in the pools"
    model = est.fit(full_batch.df._jdf)
    scored(spark, model.transform(full_batch.df._jdf)).collect()
    assert workers_of(jvms) == first, "scoring took the same workers and gave them back"
    assert fit_pids(est, full_batch.df) == first


def test_with_reuse_off_every_task_starts_a_fresh_worker(spark, jvm_ml, full_batch):
    est = scala_estimator(jvm_ml, full_batch.rows).setEpochs(1)
    spark.conf.set(REUSE, "false")
    try:
        first = fit_pids(est, full_batch.df)
        second = fit_pids(est, full_batch.df)
    finally:
        spark.conf.unset(REUSE)
    assert not first & second
    assert not any(alive(p) for p in first | second), "without reuse, workers exit with their task"


def test_a_bad_reuse_setting_is_named_before_any_work(spark, jvm_ml, full_batch):
    spark.conf.set(REUSE, "sometimes")
    try:
        with pytest.raises(IllegalArgumentException,
                           match="spark.sparkdl.worker.reuse must be true or false. Received: "
                                 "spark.sparkdl.worker.reuse=sometimes"):
            scala_estimator(jvm_ml, full_batch.rows).fit(full_batch.df._jdf)
    finally:
        spark.conf.unset(REUSE)


def test_a_killed_idle_worker_is_replaced_transparently(jvm_ml, full_batch):
    import os
    import signal
    import time

    est = scala_estimator(jvm_ml, full_batch.rows).setEpochs(1)
    before = fit_pids(est, full_batch.df)
    victim, survivor = sorted(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(victim) and time.monotonic() < deadline:
        time.sleep(0.1)
    after = fit_pids(est, full_batch.df)
    assert victim not in after and survivor in after and len(after) == 2


def test_a_scoring_task_that_stops_early_does_not_give_back_its_worker(spark, jvm_ml, full_batch,
                                                                        scala_model):
    est = scala_estimator(jvm_ml, full_batch.rows).setEpochs(1)
    idle = fit_pids(est, full_batch.df)
    jvms = {parent_of(p) for p in idle}
    # limit(1) stops reading the scoring iterator mid-request: that worker is stopped.
    assert len(scored(spark, scala_model.transform(full_batch.df._jdf)).limit(1).collect()) == 1
    left = workers_of(jvms)
    assert len(left) == 1 and left < idle
    # and the next transform, on fresh and reused workers alike, scores every row right
    rows = scored(spark, scala_model.transform(full_batch.df._jdf)).collect()
    assert len(rows) == full_batch.rows


def python_running(program) -> str:
    """A 'python' for setPythonExec that runs ``program`` as the worker (``-c`` probes run
    as they are, in this interpreter)."""
    import sys

    script = program.parent / "python"
    script.write_text(f"""#!/bin/sh
if [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi
exec {sys.executable} {program} "$@"
""")
    script.chmod(0o755)
    return str(script)


def wrapped_worker(tmp_path, flag) -> str:
    """A 'python' that runs the real worker, but whose training request crashes the process
    (after reading its partition) while ``flag`` exists."""

    program = tmp_path / "crashing_worker.py"
    program.write_text(f"""
import os, sys
import sparkdl.worker.jvm_worker as w

real = w._train

def train(channel, request):
    if os.path.exists({str(flag)!r}):
        for _ in channel.batches():
            pass
        print("crashing on purpose", file=sys.stderr, flush=True)
        os._exit(11)
    real(channel, request)

w._train = train
sys.exit(w.main(sys.argv[-1:]))
""")
    return python_running(program)


def test_a_worker_crash_mid_task_fails_the_fit_and_that_worker_is_not_reused(jvm_ml, full_batch,
                                                                             tmp_path):
    import re

    flag = tmp_path / "crash"
    # maxRestarts=0: the error names the reused workers, not those of a restart's attempt
    est = scala_estimator(jvm_ml, full_batch.rows).setEpochs(1).setMaxRestarts(0).setPythonExec(
        wrapped_worker(tmp_path, flag))
    healthy = fit_pids(est, full_batch.df)  # warm workers of this Python in both pools
    flag.touch()
    with pytest.raises(Exception, match="exit code 11") as info:
        est.fit(full_batch.df._jdf)
    text = str(info.value)
    assert "crashing on purpose" in text
    crashed = {int(p) for p in re.findall(r"pid (\d+)\) for rank", text)}
    assert crashed and crashed <= healthy, "the crash happened in a reused worker"
    flag.unlink()
    after = fit_pids(est, full_batch.df)
    assert not crashed & after and len(after) == 2


def test_an_error_in_a_reused_worker_is_reported_and_the_next_fit_works(jvm_ml, full_batch):
    est = scala_estimator(jvm_ml, full_batch.rows).setEpochs(1)
    warm = fit_pids(est, full_batch.df)
    with pytest.raises(Exception, match="bogus"):
        scala_estimator(jvm_ml, full_batch.rows).setOptimizerParams(
            '{"lr": 0.1, "bogus": 1}').fit(full_batch.df._jdf)
    assert not any(alive(p) for p in warm), "workers that reported an error are not kept"
    assert len(fit_pids(est, full_batch.df)) == 2


# -- the default backend is Python's ---------------------------------------------------

def test_the_default_backend_is_pythons_default_and_the_history_says_which_ran(jvm_ml,
                                                                              full_batch):
    import json

    from sparkdl.collective import default_backend

    est = (jvm_ml.TorchEstimator().setNetworkJson(network().to_json()).setOptimizer("sgd")
           .setLearningRate(LR).setBatchSize(full_batch.rows).setEpochs(1).setNumWorkers(2))
    assert est.getOrDefault(est.backend()) == "auto"
    model = est.fit(full_batch.df._jdf)
    assert json.loads(model.historyJson())["backend"] == default_backend()


def test_torch_backend_options_are_refused_before_training(jvm_ml, full_batch):
    est = scala_estimator(jvm_ml, full_batch.rows).setBackendOptions('{"compression": "fp16"}')
    with pytest.raises(IllegalArgumentException, match="backend='torch' takes no backendOptions"):
        est.fit(full_batch.df._jdf)


# -- data checks on the driver, before the barrier job ----------------------------------

@pytest.mark.parametrize("rows, ddl, loss, message", [
    ([([1.0] * 5, 0), (None, 1), (None, 2)], "features array<float>, label long", "cross_entropy",
     r"Feature column 'features' has 2 null value\(s\) out of 3 rows. Drop them "
     r"\(df.na.drop\(Seq\(\"features\"\)\)\)"),
    ([([1.0] * 5, 0), ([1.0] * 5, None)], "features array<float>, label long", "cross_entropy",
     r"Label column 'label' has 1 null value\(s\) out of 2 rows"),
    ([([1.0, None, 1.0, 1.0, 1.0], 0)], "features array<float>, label long", "cross_entropy",
     r"Feature column 'features' has 1 row\(s\) with null array elements"),
    ([([1.0] * 5, 0), ([1.0] * 4, 1)], "features array<float>, label long", "cross_entropy",
     r"ragged arrays: lengths range from 4 to 5 at nesting level 1"),
    ([([1.0] * 5, 0), ([1.0] * 5, 3)], "features array<float>, label long", "cross_entropy",
     r"Label column 'label' has values from 0 to 3, but the network outputs 3 classes \(valid "
     r"labels 0..2\). Re-index the labels or widen the output layer."),
    ([([1.0] * 5, -1)], "features array<float>, label int", "cross_entropy",
     r"values from -1 to -1, but the network outputs 3 classes"),
    ([([1.0] * 5, 0.5)], "features array<float>, label double", "cross_entropy",
     r"Label column 'label' has 1 non-integer value\(s\)"),
    ([([1.0] * 5, [1.0, 2.0])], "features array<float>, label array<float>", "mse",
     r"Label column 'label' has 2 value\(s\) per row but the network outputs 3 \(shape \[3\]\)"),
    ([([1.0] * 4, 0)], "features array<float>, label long", "cross_entropy",
     r"The network's input shape \[5\] holds 5 values per row but feature column\(s\) "
     r"\['features'\] hold 4 \(shape \[4\]\)"),
])
def test_bad_data_is_named_before_the_barrier_job(spark, jvm_ml, rows, ddl, loss, message):
    df = spark.createDataFrame(rows, ddl)
    est = scala_estimator(jvm_ml, 8).setLoss(loss)
    with pytest.raises(IllegalArgumentException, match=message):
        est.fit(df._jdf)


def test_binary_targets_outside_0_1_are_refused(spark, jvm_ml):
    df = spark.createDataFrame([([1.0] * 5, 0.0), ([1.0] * 5, 2.5)],
                               "features array<float>, label double")
    one = Sequential([Input((5,)), Dense(1)])
    est = scala_estimator(jvm_ml, 8).setNetworkJson(one.to_json()).setLoss("bce_with_logits")
    with pytest.raises(IllegalArgumentException,
                       match=r"Label column 'label' has values from 0 to 2.5; bce_with_logits "
                             r"needs targets in \[0, 1\]"):
        est.fit(df._jdf)


def test_an_empty_dataframe_is_refused(spark, jvm_ml, full_batch):
    with pytest.raises(IllegalArgumentException, match="The DataFrame is empty"):
        scala_estimator(jvm_ml, 8).fit(full_batch.df.limit(0)._jdf)


# -- where ranks meet: the driver's rendezvous, or allGather ------------------------------

def test_ranks_meet_through_allgather_when_asked_and_train_the_same(spark, jvm_ml, full_batch,
                                                                   scala_model):
    spark.conf.set("spark.sparkdl.rendezvous", "barrier")
    try:
        model = scala_estimator(jvm_ml, full_batch.rows).fit(full_batch.df._jdf)
    finally:
        spark.conf.unset("spark.sparkdl.rendezvous")
    for key, value in scala_weights(scala_model).items():
        np.testing.assert_array_equal(scala_weights(model)[key], value, err_msg=key)


def test_an_unknown_rendezvous_mode_is_named(spark, jvm_ml, full_batch):
    spark.conf.set("spark.sparkdl.rendezvous", "carrier-pigeon")
    try:
        with pytest.raises(IllegalArgumentException,
                           match=r"spark.sparkdl.rendezvous must be one of "
                                 r"\['driver', 'barrier'\]. Received: 'carrier-pigeon'"):
            scala_estimator(jvm_ml, full_batch.rows).fit(full_batch.df._jdf)
    finally:
        spark.conf.unset("spark.sparkdl.rendezvous")


def test_scala_scoring_reads_vectors_and_double_arrays_as_float32(spark, scala_model, full_batch):
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    base = full_batch.df.withColumn("id", F.monotonically_increasing_id()).cache()
    variants = {"array<float>": base,
                "array<double>": base.withColumn("features",
                                                 F.col("features").cast("array<double>")),
                "vector": base.withColumn("features", array_to_vector("features"))}
    raw = {}
    for name, df in variants.items():
        out = scored(spark, scala_model.transform(df._jdf)).orderBy("id")
        raw[name] = [r.rawPrediction.toArray().tolist() for r in out.collect()]
    base.unpersist()
    assert len(raw["vector"]) == full_batch.rows
    assert raw["array<double>"] == raw["array<float>"] == raw["vector"]


# -- the Spark ML contract: persistence, fitted params, tuning ----------------------------

def test_scala_model_carries_the_params_it_was_fitted_with(scala_model):
    assert scala_model.getEpochs() == EPOCHS and scala_model.getNumWorkers() == 2
    assert scala_model.getOptimizer() == "sgd" and scala_model.getOptimizerParams() == '{"lr":0.5}'
    assert scala_model.getLoss() == "cross_entropy" and scala_model.getSeed() == SEED
    assert scala_model.getBatchSize() == 101 and scala_model.getBackend() == "torch"
    assert scala_model.isSet(scala_model.epochs()) and not scala_model.isSet(scala_model.shuffle())


def test_scala_model_files_are_named_by_kind_and_its_params_load_in_python(scala_model, tmp_path):
    import os

    path = str(tmp_path / "named")
    scala_model.write().save(path)
    saved = sorted(f for f in os.listdir(path) if not f.endswith(".crc"))
    assert saved == ["metadata", "network.json", "weights.safetensors"]
    loaded = TorchModel.load(path)
    assert loaded.getOrDefault("optimizerParams") == {"lr": 0.5}
    assert loaded.getOrDefault("epochs") == EPOCHS and loaded.getOrDefault("numWorkers") == 2
    assert loaded.getOrDefault("backendOptions") == {}


def test_a_saved_and_loaded_scala_estimator_fits_the_same_weights(jvm_ml, scala_model, full_batch,
                                                                  tmp_path):
    path = str(tmp_path / "estimator")
    scala_estimator(jvm_ml, full_batch.rows).write().save(path)
    loaded = jvm_ml.TorchEstimator.load(path)
    assert loaded.getNetwork().get().toJson() == network().to_json()
    again = loaded.fit(full_batch.df._jdf)
    for key, value in scala_weights(scala_model).items():
        np.testing.assert_array_equal(scala_weights(again)[key], value, err_msg=key)


@pytest.fixture(scope="module")
def learnable(spark):
    """Labels a small network learns in a few epochs: the best learning rate is known."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(160, 5)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(5, 3)), axis=1)
    return spark.createDataFrame([(i, r.tolist(), int(t)) for i, (r, t) in enumerate(zip(x, y))],
                                 "id long, features array<float>, label long").cache()


def scala_list(spark, values):
    return spark._jvm.scala.jdk.javaapi.CollectionConverters.asScala(list(values))


def tuned_estimator(jvm_ml):
    return (jvm_ml.TorchEstimator().setNetworkJson(network().to_json()).setOptimizer("adam")
            .setBatchSize(16).setEpochs(8).setNumWorkers(2).setSeed(SEED).setBackend("torch"))


def with_deadline(spark, seconds, fit):
    """Runs ``fit`` or fails (cancelling its jobs) after ``seconds``: never hangs."""
    import threading

    result = {}

    def run():
        try:
            result["value"] = fit()
        except Exception as e:  # noqa: BLE001 - re-raised below, on the test's thread
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        spark.sparkContext.cancelAllJobs()
        pytest.fail(f"the fit did not finish within {seconds} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def raw_predictions(spark, jdf) -> list:
    return [r.rawPrediction.toArray().tolist()
            for r in scored(spark, jdf).orderBy("id").collect()]


def test_scala_cross_validator_picks_the_known_best_setting_and_its_model_saves(
        spark, jvm_ml, learnable, tmp_path):
    tuning = spark._jvm.org.apache.spark.ml.tuning
    est = tuned_estimator(jvm_ml)
    grid = (tuning.ParamGridBuilder()
            .addGrid(est.optimizerParams(), scala_list(spark, ['{"lr":1e-06}', '{"lr":0.05}']))
            .addGrid(est.epochs(), scala_list(spark, [8]))
            .build())
    evaluator = (spark._jvm.org.apache.spark.ml.evaluation.MulticlassClassificationEvaluator()
                 .setMetricName("accuracy"))
    # Two fits at once, each a barrier job of both slots of local-cluster[2,1]: they take turns.
    cv = (tuning.CrossValidator().setEstimator(est).setEvaluator(evaluator)
          .setEstimatorParamMaps(grid).setNumFolds(2).setParallelism(2).setSeed(7))
    cv_model = with_deadline(spark, 300, lambda: cv.fit(learnable._jdf))
    slow, good = list(cv_model.avgMetrics())
    assert good > slow + 0.2, (slow, good)
    best = cv_model.bestModel()
    assert best.getOptimizerParams() == '{"lr":0.05}' and best.getEpochs() == 8
    assert best.getNumWorkers() == 2 and best.getBatchSize() == 16

    path = str(tmp_path / "cv-model")
    cv_model.write().save(path)
    loaded = tuning.CrossValidatorModel.load(path)
    assert loaded.bestModel().getOptimizerParams() == '{"lr":0.05}'
    assert list(loaded.avgMetrics()) == [slow, good]
    assert loaded.getEstimator().getNetwork().get().toJson() == network().to_json()
    assert raw_predictions(spark, loaded.transform(learnable._jdf)) == \
        raw_predictions(spark, cv_model.transform(learnable._jdf))


def test_scala_train_validation_split_with_parallel_fits_of_mixed_sizes_finishes(
        spark, jvm_ml, learnable, tmp_path):
    tuning = spark._jvm.org.apache.spark.ml.tuning
    est = tuned_estimator(jvm_ml).setEpochs(2).setLearningRate(0.05)
    # numWorkers 1 and 2 at once on 2 slots: the 2-worker fit waits for the other to end.
    grid = (tuning.ParamGridBuilder()
            .addGrid(est.numWorkers(), scala_list(spark, [2, 1]))
            .addGrid(est.batchSize(), scala_list(spark, [16]))
            .build())
    evaluator = (spark._jvm.org.apache.spark.ml.evaluation.MulticlassClassificationEvaluator()
                 .setMetricName("accuracy"))
    tvs = (tuning.TrainValidationSplit().setEstimator(est).setEvaluator(evaluator)
           .setEstimatorParamMaps(grid).setParallelism(2).setSeed(7))
    tvs_model = with_deadline(spark, 300, lambda: tvs.fit(learnable._jdf))
    assert len(list(tvs_model.validationMetrics())) == 2
    assert tvs_model.bestModel().getNumWorkers() in (1, 2)
    path = str(tmp_path / "tvs-model")
    tvs_model.write().save(path)
    loaded = tuning.TrainValidationSplitModel.load(path)
    assert raw_predictions(spark, loaded.transform(learnable._jdf)) == \
        raw_predictions(spark, tvs_model.transform(learnable._jdf))


# -- restarts after a lost executor (issue 14) ---------------------------------------------

def instrumented_worker(tmp_path, markers, sleep_s=0.5, fail_epoch=None) -> str:
    """A 'python' that runs the real worker, whose ranks touch ``markers/<pid>-<epoch>`` as
    each epoch starts (0-based) and then sleep ``sleep_s`` (so a kill lands mid-fit); with
    ``fail_epoch``, the loss raises in that epoch (an error in the user's code). The numbers
    trained are those of the plain worker."""

    program = tmp_path / "instrumented_worker.py"
    program.write_text(f"""
import dataclasses, os, sys, time
import sparkdl.objective as objective
import sparkdl.worker.jvm_worker as w
import sparkdl.worker.loop as loop

MARKERS, SLEEP_S, FAIL_EPOCH = {str(markers)!r}, {sleep_s!r}, {fail_epoch!r}
real_order, real_loss = loop.epoch_order, objective.resolve_loss
now = {{"epoch": 0}}

def epoch_order(*args, **kwargs):
    now["epoch"] = args[2]
    open(os.path.join(MARKERS, f"{{os.getpid()}}-{{args[2]}}"), "w").close()
    time.sleep(SLEEP_S)
    return real_order(*args, **kwargs)

def resolve_loss(name):
    spec = real_loss(name)

    def fn(output, target):
        if now["epoch"] == FAIL_EPOCH:
            raise ValueError(f"boom in the loss in epoch {{FAIL_EPOCH + 1}}")
        return spec.fn(output, target)

    return dataclasses.replace(spec, fn=fn)

loop.epoch_order, objective.resolve_loss = epoch_order, resolve_loss
sys.exit(w.main(sys.argv[-1:]))
""")
    return python_running(program)


def kill_an_executor_when(spark, ready, stop) -> tuple:
    """A thread that SIGKILLs one executor JVM once ``ready()`` (or gives up when ``stop``
    is set); the dict it returns names the executor killed."""
    import os
    import signal
    import threading
    import time

    killed = {}

    def watch():
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            if ready():
                executor, pid = sorted(executor_pids(spark).items())[-1]
                killed[executor] = pid
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, killed


def test_a_lost_executor_jvm_resumes_the_scala_fit_to_the_weights_of_an_uninterrupted_run(
        spark, jvm_ml, full_batch, scala_model, tmp_path):
    import json
    import os
    import threading

    from sparkdl.history import TrainingHistory

    wait_for_executors(spark)
    markers = tmp_path / "epochs"
    markers.mkdir()
    # scala_model's settings; each epoch takes a second longer, so the kill lands mid-fit
    est = scala_estimator(jvm_ml, full_batch.rows).setPythonExec(
        instrumented_worker(tmp_path, markers, sleep_s=1.0))
    spark.conf.set(REUSE, "false")  # no instrumented workers stay in the pools
    stop = threading.Event()
    # once a rank has started its second epoch: the first one is done
    watcher, killed = kill_an_executor_when(
        spark, lambda: any(m.endswith("-1") for m in os.listdir(markers)), stop)
    try:
        model = with_deadline(spark, 480, lambda: est.fit(full_batch.df._jdf))
    finally:
        stop.set()
        watcher.join(timeout=5)
        spark.conf.unset(REUSE)
        wait_for_executors(spark)

    assert killed, "no executor was killed: the fit ended before its second epoch?"
    for key, value in scala_weights(scala_model).items():
        np.testing.assert_array_equal(scala_weights(model)[key], value, err_msg=key)
    history = json.loads(model.historyJson())
    first, second = history["attempts"]
    assert (first["attempt"], first["status"], second["attempt"], second["status"]) == \
        (1, "failed", 2, "finished")
    # rank 0 handed the driver its state after the first epoch; the restart went on from it
    assert first["resumed_from_epoch"] == 0 and second["resumed_from_epoch"] >= 1
    started = [int(m.rsplit("-", 1)[1]) for m in os.listdir(markers)]
    assert started.count(0) == 2, "the restarted attempt trained the first epoch again"
    assert first["cause"] and first["started"] <= first["ended"] <= second["started"]
    assert first.get("failed_executor") in (None, *killed)
    assert len(history["epochs"]) == EPOCHS
    assert [a["status"] for a in json.loads(scala_model.historyJson())["attempts"]] == ["finished"]
    assert TrainingHistory.from_dict(history).restarts == 1
    # and the model, saved from Scala, loads in Python with its attempts
    path = str(tmp_path / "restarted")
    model.write().save(path)
    assert TorchModel.load(path).history.attempts == history["attempts"]


def test_rank_0_hands_the_scala_driver_its_state_only_with_the_fits_key_and_within_the_cap(
        spark, jvm_ml):
    import json

    from sparkdl.checkpoints import Resume
    from sparkdl.epoch_state import encode_state
    from sparkdl.errors import WorkerFailedError
    from sparkdl.worker.jvm_rendezvous import JvmRendezvousAddress

    states = getattr(jvm_ml, "TorchEstimator$DriverStates")(1, 4096)
    rdv = states.rendezvous(spark.sparkContext._jsc.sc(), "driver", 2).get()
    try:
        fields = json.loads(spark._jvm.sparkdl.json.CanonicalJson.write(rdv.workerAddress()))
        address = JvmRendezvousAddress.from_request(fields)
        assert address.max_state_bytes == 4096
        state = encode_state(Resume(2, b"w" * 100, b"o" * 50, [{"epoch": 1}, {"epoch": 2}]))
        assert address.post_state(2, state)
        newest = states.newest().get()
        assert newest.epoch() == 2 and bytes(newest.bytes()) == state
        assert not address.post_state(3, state + b"x" * 4096)  # over the cap: not sent
        address.post_failure(1, "Traceback ...\nsparkdl.errors.TrainingCodeError: boom")
        failure = states.userFailure().get()
        assert failure.startswith("A training worker failed (rank 1):\nTraceback")
        with pytest.raises(WorkerFailedError, match="refused this rank's key"):
            JvmRendezvousAddress(address.host, address.port, b"k" * 32, 4096).post_state(3, state)
        assert states.newest().get().epoch() == 2
    finally:
        rdv.close()


def test_an_error_in_the_loss_fails_the_scala_fit_at_once_without_a_restart(
        spark, jvm_ml, full_batch, tmp_path):
    import re
    import time

    markers = tmp_path / "epochs"
    markers.mkdir()
    est = (scala_estimator(jvm_ml, full_batch.rows).setEpochs(5)
           .setPythonExec(instrumented_worker(tmp_path, markers, sleep_s=0.0, fail_epoch=2)))
    spark.conf.set(REUSE, "false")
    began = time.monotonic()
    try:
        with pytest.raises(Exception, match="boom in the loss in epoch 3") as info:
            est.fit(full_batch.df._jdf)
    finally:
        spark.conf.unset(REUSE)
    text = str(info.value)
    assert "TrainingCodeError" in text
    assert re.search(r"on rank \d in epoch 3, (training )?step 1", text)
    assert "ran the barrier job" not in text  # never restarted
    assert time.monotonic() - began < 180  # one attempt; workers start slowly on a busy machine


def test_max_restarts_is_validated_naming_the_param(jvm_ml):
    with pytest.raises(IllegalArgumentException,
                       match="maxRestarts must be >= 0. Received: maxRestarts=-1"):
        jvm_ml.TorchEstimator().setMaxRestarts(-1)

# The training options (lrScheduler, lrSchedulerParams, gradientClipNorm, earlyStopping,
# precision, metrics): one fit whose history shows them, the driver's checks, and
# persistence across languages.
STEP = {"step_size": 1, "gamma": 0.5}
# minDelta larger than any loss: only the first epoch improves, so the fit stops after
# 1 + patience epochs whatever the numbers are.
STOP = {"monitor": "train_loss", "patience": 2, "minDelta": 100.0}


def test_scala_fit_with_step_scheduler_metrics_and_early_stopping(jvm_ml, full_batch, tmp_path):
    est = (scala_estimator(jvm_ml, full_batch.rows).setEpochs(5).setLrScheduler("step")
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
