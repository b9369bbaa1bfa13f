"""The Spark ML contract: persistence, Pipeline, CrossValidator / TrainValidationSplit,
evaluators, and a fitted model carrying the Params it was fitted with."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import (
    BinaryClassificationEvaluator,
    MulticlassClassificationEvaluator,
    RegressionEvaluator,
)
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.tuning import (
    CrossValidator,
    CrossValidatorModel,
    ParamGridBuilder,
    TrainValidationSplit,
    TrainValidationSplitModel,
)

from sparkdl import ClusterCapacityError, TorchEstimator, TorchModel
from sparkdl.nn import Dense, Sequential

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _factory() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _half_squared_error(output, target):
    return 0.5 * ((output.reshape(target.shape) - target) ** 2).mean()


def _sgd(params):
    return torch.optim.SGD(params, lr=0.3, momentum=0.5)


def _weights(model: TorchModel) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.getModel().state_dict().items()}


def _params_by_name(stage) -> dict:
    return {p.name: v for p, v in stage.extractParamMap().items()}


def _assert_same_weights(a: TorchModel, b: TorchModel) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)


@pytest.mark.parametrize("kind", ["module", "factory", "spec"])
def test_saved_estimator_loads_and_fits_the_same_weights(full_batch, tmp_path, kind):
    model = {"module": full_batch.net(), "factory": _factory,
             "spec": Sequential([Dense(8, activation="tanh"), Dense(3)], input_shape=(5,))}[kind]
    est = TorchEstimator(model=model, loss="cross_entropy", optimizer="sgd",
                         optimizerParams={"lr": 0.5}, batchSize=full_batch.rows, epochs=2,
                         numWorkers=2, seed=3, backend="torch")
    path = str(tmp_path / "est")
    est.save(path)
    loaded = TorchEstimator.load(path)

    assert isinstance(loaded, TorchEstimator) and loaded.uid == est.uid
    assert _params_by_name(loaded) == _params_by_name(est)
    arch_file = "network.json" if kind == "spec" else "architecture.pkl"
    assert (tmp_path / "est" / arch_file).is_file()
    if kind == "spec":
        assert (tmp_path / "est" / "network.json").read_text() == model.to_json()
    _assert_same_weights(est.fit(full_batch.df), loaded.fit(full_batch.df))


def test_custom_loss_and_optimizer_callables_persist(full_batch, tmp_path):
    torch.manual_seed(0)
    est = TorchEstimator(model=torch.nn.Linear(5, 1), loss=_half_squared_error, optimizer=_sgd,
                         batchSize=full_batch.rows, epochs=2, numWorkers=1, seed=3,
                         backend="torch")
    est.write().overwrite().save(str(tmp_path / "est"))
    loaded = TorchEstimator.load(str(tmp_path / "est"))
    assert loaded.getLoss() == loaded.getOptimizer() == "custom"
    assert loaded._loss() is not _half_squared_error  # unpickled, not the same object
    _assert_same_weights(est.fit(full_batch.df), loaded.fit(full_batch.df))


def test_fitted_model_carries_the_params_it_was_fitted_with(full_batch, tmp_path):
    est = TorchEstimator(model=full_batch.net(), optimizer="sgd", optimizerParams={"lr": 0.2},
                         batchSize=50, epochs=1, numWorkers=2, seed=5, backend="torch",
                         validationFraction=0.1)
    model = est.fit(full_batch.df)
    assert model.getOrDefault("optimizerParams") == {"lr": 0.2}
    assert (model.getEpochs(), model.getBatchSize(), model.getNumWorkers()) == (1, 50, 2)
    assert (model.getSeed(), model.getOptimizer(), model.getValidationFraction()) == \
        (5, "sgd", 0.1)
    fitted = _params_by_name(model)
    for name, value in _params_by_name(est).items():
        assert fitted[name] == value, name
    model.save(str(tmp_path / "model"))
    assert _params_by_name(TorchModel.load(str(tmp_path / "model"))) == fitted


def test_a_spec_model_saved_before_files_were_named_by_kind_loads(full_batch, tmp_path):
    net = Sequential([Dense(3)], input_shape=(5,))
    model = TorchEstimator(model=net, epochs=1, backend="torch").fit(full_batch.df)
    path = tmp_path / "model"
    model.save(str(path))
    (path / "network.json").rename(path / "architecture.pkl")
    loaded = TorchModel.load(str(path), trusted=False)  # a spec runs no pickled code
    assert loaded._architecture.payload == net.to_json().encode()
    _assert_same_weights(model, loaded)


def test_untrusted_load_refuses_pickled_architectures(full_batch, tmp_path):
    from sparkdl import UntrustedCodeError

    model = TorchEstimator(model=full_batch.net(), epochs=1, backend="torch").fit(full_batch.df)
    model.save(str(tmp_path / "m"))
    with pytest.raises(UntrustedCodeError, match=r"architectureKind='module'.*trusted=True"):
        TorchModel.load(str(tmp_path / "m"), trusted=False)
    assert TorchModel.load(str(tmp_path / "m")).uid == model.uid  # trusted by default


def test_unfitted_pipeline_with_the_estimator_saves_and_loads(spark, tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(80, 3))
    df = spark.createDataFrame([(*map(float, r), int(r[0] + r[1] > 0)) for r in x],
                               "a double, b double, c double, label long")
    net = Sequential([Dense(8, activation="relu"), Dense(2)], input_shape=(3,))
    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=["a", "b", "c"], outputCol="features"),
        TorchEstimator(model=net, optimizer="adam", optimizerParams={"lr": 0.05},
                       batchSize=16, epochs=3, numWorkers=1, backend="torch")])
    path = str(tmp_path / "pipeline")
    pipeline.write().overwrite().save(path)
    loaded = Pipeline.load(path)

    est = loaded.getStages()[1]
    assert isinstance(est, TorchEstimator)
    assert est.getOptimizerParams() == {"lr": 0.05} and est.getEpochs() == 3
    assert est.getModel().to_json() == net.to_json()
    before = [r.prediction for r in pipeline.fit(df).transform(df).collect()]
    fitted = loaded.fit(df)
    assert before == [r.prediction for r in fitted.transform(df).collect()]
    fitted.write().overwrite().save(str(tmp_path / "fitted"))
    again = PipelineModel.load(str(tmp_path / "fitted"))
    assert before == [r.prediction for r in again.transform(df).collect()]


@pytest.fixture(scope="module")
def small_digits(digits):
    train, test = digits
    return train.limit(600).cache(), test


def test_cross_validator_picks_the_learning_rate_and_round_trips(small_digits, tmp_path):
    train, test = small_digits
    est = TorchEstimator(model=torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                                   torch.nn.Linear(32, 10)),
                         loss="cross_entropy", optimizer="adam", batchSize=32, epochs=4,
                         numWorkers=2, seed=7, backend="torch")
    # lr=1e-7 cannot move the weights in 4 epochs (10% accuracy): the other must win.
    grid = ParamGridBuilder().addGrid(est.optimizerParams, [{"lr": 1e-7}, {"lr": 1e-2}]).build()
    evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
    # 2 slots, 2 workers per fit: parallel fits must take turns, not wait forever.
    cv = CrossValidator(estimator=est, estimatorParamMaps=grid, evaluator=evaluator,
                        numFolds=2, parallelism=2, seed=1)
    cv.write().overwrite().save(str(tmp_path / "cv"))
    unfitted = CrossValidator.load(str(tmp_path / "cv"))
    assert isinstance(unfitted.getEstimator(), TorchEstimator)
    assert [m[unfitted.getEstimator().optimizerParams] for m in
            unfitted.getEstimatorParamMaps()] == [{"lr": 1e-7}, {"lr": 1e-2}]

    cv_model = cv.fit(train)
    assert cv_model.avgMetrics[1] > 0.6 > 0.3 > cv_model.avgMetrics[0]
    best = cv_model.bestModel
    assert isinstance(best, TorchModel)
    assert best.getOrDefault("optimizerParams") == {"lr": 1e-2}
    assert best.getEpochs() == 4
    assert _params_by_name(best)["optimizerParams"] == {"lr": 1e-2}
    assert evaluator.evaluate(best.transform(test)) > 0.6

    path = str(tmp_path / "cv_model")
    cv_model.write().overwrite().save(path)
    loaded = CrossValidatorModel.load(path)
    assert loaded.avgMetrics == cv_model.avgMetrics
    assert loaded.bestModel.getOptimizerParams() == {"lr": 1e-2}
    before = cv_model.transform(test).select("prediction", "probability").collect()
    after = loaded.transform(test).select("prediction", "probability").collect()
    assert before == after


def test_train_validation_split_over_epochs_batch_size_and_workers(small_digits, tmp_path):
    train, test = small_digits
    est = TorchEstimator(model=torch.nn.Linear(64, 10), optimizer="adam",
                         optimizerParams={"lr": 1e-2}, seed=2, backend="torch")
    grid = (ParamGridBuilder().addGrid(est.epochs, [1, 6]).addGrid(est.batchSize, [32])
            .addGrid(est.numWorkers, [1, 2]).build())
    tvs = TrainValidationSplit(estimator=est, estimatorParamMaps=grid, trainRatio=0.75,
                               evaluator=MulticlassClassificationEvaluator(), seed=3)
    tvs_model = tvs.fit(train)
    best = tvs_model.bestModel
    assert best.getEpochs() == 6  # one epoch of a linear model is far from converged
    assert best.getBatchSize() == 32 and best.getNumWorkers() in (1, 2)

    tvs_model.write().overwrite().save(str(tmp_path / "tvs"))
    loaded = TrainValidationSplitModel.load(str(tmp_path / "tvs"))
    assert loaded.validationMetrics == tvs_model.validationMetrics
    assert [r.prediction for r in loaded.transform(test).collect()] == \
        [r.prediction for r in tvs_model.transform(test).collect()]


def test_binary_evaluator_reads_raw_prediction_and_probability(spark):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(200, 4)).astype("float32")
    df = spark.createDataFrame([(r.tolist(), float(r[0] - r[1] > 0)) for r in x],
                               "features array<float>, label double")
    model = TorchEstimator(model=torch.nn.Linear(4, 1), loss="bce_with_logits",
                           optimizer="adam", optimizerParams={"lr": 0.05}, batchSize=32,
                           epochs=8, numWorkers=1, backend="torch").fit(df)
    scored = model.transform(df)
    for column in ("rawPrediction", "probability"):
        auc = BinaryClassificationEvaluator(rawPredictionCol=column).evaluate(scored)
        assert auc > 0.95, column


def test_regression_evaluator_reads_the_prediction(spark):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(200, 3)).astype("float32")
    df = spark.createDataFrame([(r.tolist(), float(r.sum())) for r in x],
                               "features array<float>, label double")
    model = TorchEstimator(model=torch.nn.Linear(3, 1), loss="mse", optimizer="adam",
                           optimizerParams={"lr": 0.1}, batchSize=32, epochs=10,
                           numWorkers=1, backend="torch").fit(df)
    rmse = RegressionEvaluator(metricName="rmse").evaluate(model.transform(df))
    assert rmse < 0.2


def test_grid_with_more_workers_than_slots_fails_fast(full_batch):
    est = TorchEstimator(model=full_batch.net(), epochs=1, backend="torch")
    grid = ParamGridBuilder().addGrid(est.numWorkers, [3]).build()
    cv = CrossValidator(estimator=est, estimatorParamMaps=grid, numFolds=2, parallelism=2,
                        evaluator=MulticlassClassificationEvaluator())
    with pytest.raises(ClusterCapacityError, match="numWorkers=3 needs 3 concurrent task slots"):
        cv.fit(full_batch.df)


def test_an_estimator_saved_from_scala_loads_and_fits_in_python(spark, full_batch, tmp_path):
    from sparkdl.jvm import jar_path

    jar_path()  # a clear error naming `make jvm` when the jar was never built
    net = Sequential([Dense(8, activation="tanh"), Dense(3)], input_shape=(5,))
    path = str(tmp_path / "scala_est")
    (spark._jvm.sparkdl.ml.TorchEstimator().setNetworkJson(net.to_json())
     .setOptimizer("sgd").setLearningRate(0.5).setBatchSize(full_batch.rows).setEpochs(2)
     .setNumWorkers(2).setSeed(3).write().save(path))
    loaded = TorchEstimator.load(path)
    assert loaded.getModel().to_json() == net.to_json()
    assert (loaded.getOptimizer(), loaded.getOptimizerParams(), loaded.getEpochs(),
            loaded.getSeed(), loaded.getBackend()) == ("sgd", {"lr": 0.5}, 2, 3, "auto")
    python = TorchEstimator(model=net, optimizer="sgd", optimizerParams={"lr": 0.5},
                            batchSize=full_batch.rows, epochs=2, numWorkers=2, seed=3)
    _assert_same_weights(python.fit(full_batch.df), loaded.fit(full_batch.df))


def test_an_estimator_saved_from_python_loads_and_fits_in_scala(spark, full_batch, tmp_path):
    from safetensors.numpy import load as st_load

    from sparkdl.jvm import jar_path

    jar_path()
    net = Sequential([Dense(8, activation="tanh"), Dense(3)], input_shape=(5,))
    est = TorchEstimator(model=net, optimizer="sgd", optimizerParams={"lr": 0.5},
                         batchSize=full_batch.rows, epochs=2, numWorkers=2, seed=3,
                         backend="torch")
    path = str(tmp_path / "python_est")
    est.save(path)
    scala = spark._jvm.sparkdl.ml.TorchEstimator.load(path)
    assert (scala.getEpochs(), scala.getNumWorkers(), scala.getSeed()) == (2, 2, 3)
    scala_model = scala.fit(full_batch.df._jdf)
    weights = st_load(bytes(scala_model.weightsBytes()))
    expected = _weights(est.fit(full_batch.df))
    assert weights.keys() == expected.keys()
    for name in weights:
        np.testing.assert_array_equal(weights[name], expected[name], err_msg=name)
