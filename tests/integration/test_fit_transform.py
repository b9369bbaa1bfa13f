"""End-to-end: fit across 2 executors, score, persist, and every supported column type."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.linalg import DenseVector, SparseVector, VectorUDT
from pyspark.sql import functions as F

from sparkdl import TorchEstimator, TorchModel
from sparkdl.collective import default_backend

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def accuracy(df) -> float:
    return df.select(F.avg((F.col("prediction") == F.col("label")).cast("double"))).first()[0]


@pytest.fixture(scope="module")
def digits_model(digits):
    train, _ = digits
    est = TorchEstimator(model=mlp, optimizerParams={"lr": 1e-2}, batchSize=32, epochs=8,
                         numWorkers=2, seed=1, validationFraction=0.1)
    return est.fit(train)


def test_fit_trains_on_two_executors(digits_model, digits):
    history = digits_model.history
    assert history.backend == default_backend() and history.num_workers == 2
    assert len(history) == 8
    assert history.metric("train_loss")[-1] < history.metric("train_loss")[0] / 3
    assert history[-1]["val_rows"] > 0 and history[-1]["val_accuracy"] > 0.85
    workers = history.workers
    assert [w["rank"] for w in workers] == [0, 1]
    assert len({w["executor_id"] for w in workers}) == 2, workers
    assert len({w["pid"] for w in workers}) == 2
    total = sum(w["train_rows"] + w["validation_rows"] for w in workers)
    assert total == digits[0].count()


def test_transform_scores_like_a_spark_classifier(digits_model, digits):
    _, test = digits
    scored = digits_model.transform(test)
    assert scored.columns == ["features", "label", "prediction", "rawPrediction", "probability"]
    assert isinstance(scored.schema["probability"].dataType, VectorUDT)
    rows = scored.collect()
    assert len(rows) == test.count()
    assert accuracy(scored) >= 0.9
    probs = np.array([r.probability.toArray() for r in rows])
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert all(r.prediction == float(np.argmax(r.rawPrediction.toArray())) for r in rows)


def test_transform_matches_get_model_in_process(digits_model, digits):
    _, test = digits
    rows = digits_model.transform(test).limit(50).collect()
    net = digits_model.getModel()
    x = torch.tensor([r.features for r in rows])
    with torch.no_grad():
        expected = net(x).numpy()
    raw = np.array([r.rawPrediction.toArray() for r in rows])
    np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-5)


def test_save_load_round_trip(digits_model, digits, tmp_path):
    _, test = digits
    path = str(tmp_path / "model")
    digits_model.save(path)
    loaded = TorchModel.load(path)
    assert loaded.uid == digits_model.uid
    assert loaded.history == digits_model.history
    assert loaded.getFeatureShape() == [64]
    before = [r.prediction for r in digits_model.transform(test).collect()]
    after = [r.prediction for r in loaded.transform(test).collect()]
    assert before == after


def test_pipeline_with_vector_assembler_saves_and_loads(spark, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] + 2 * x[:, 1] - x[:, 2] > 0).astype(int)
    df = spark.createDataFrame([(*map(float, r), int(t)) for r, t in zip(x, y)],
                               "a double, b double, c double, label long")
    est = TorchEstimator(model=lambda: torch.nn.Linear(3, 2), optimizerParams={"lr": 0.05},
                         batchSize=16, epochs=10, numWorkers=2)
    pipeline = Pipeline(stages=[VectorAssembler(inputCols=["a", "b", "c"],
                                                outputCol="features"), est])
    fitted = pipeline.fit(df)
    assert accuracy(fitted.transform(df)) > 0.9
    fitted.save(str(tmp_path / "pipe"))
    loaded = PipelineModel.load(str(tmp_path / "pipe"))
    assert isinstance(loaded.stages[-1], TorchModel)
    before = [r.prediction for r in fitted.transform(df).collect()]
    assert before == [r.prediction for r in loaded.transform(df).collect()]


def test_dense_and_sparse_vectors(spark):
    rows = []
    rng = np.random.default_rng(1)
    for i in range(300):
        label = i % 2
        if i % 3:
            rows.append((DenseVector([float(label), rng.normal(), 0.0]), label))
        else:
            rows.append((SparseVector(3, {0: float(label) + 1e-3}), label))
    df = spark.createDataFrame(rows, ["features", "label"])
    model = TorchEstimator(model=torch.nn.Linear(3, 2), optimizerParams={"lr": 0.1},
                           batchSize=16, epochs=10, numWorkers=2).fit(df)
    assert accuracy(model.transform(df)) > 0.95


def test_nested_arrays_as_images_with_cnn(spark):
    rng = np.random.default_rng(2)
    rows = []
    for i in range(240):
        img = rng.normal(scale=0.1, size=(1, 6, 6))
        label = i % 2
        img[0, :, 0 if label else 5] += 1.0  # a bright left or right edge
        rows.append((img.tolist(), label))
    df = spark.createDataFrame(rows, "image array<array<array<double>>>, label int")

    def cnn():
        return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
                                   torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 2))

    model = TorchEstimator(model=cnn, featuresCol="image", optimizerParams={"lr": 1e-2},
                           batchSize=16, epochs=6, numWorkers=2).fit(df)
    assert model.getFeatureShape() == [1, 6, 6]
    assert accuracy(model.transform(df)) > 0.95


def test_flat_array_with_feature_shape(spark):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 16)).astype("float32")
    y = (x[:, :8].sum(axis=1) > 0).astype(int)
    df = spark.createDataFrame([(r.tolist(), int(t)) for r, t in zip(x, y)],
                               "pixels array<float>, label long")

    def net():
        return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.Flatten(),
                                   torch.nn.Linear(32, 2))

    model = TorchEstimator(model=net, featuresCol="pixels", featureShape=[1, 4, 4],
                           optimizerParams={"lr": 1e-2}, epochs=8, numWorkers=2).fit(df)
    assert model.transform(df).count() == 200


def test_several_numeric_columns_regression(spark):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 2))
    df = spark.createDataFrame([(float(a), int(b * 10), float(3 * a - 0.2 * int(b * 10)))
                                for a, b in x], "a double, b int, target double")
    model = TorchEstimator(model=torch.nn.Linear(2, 1), loss="mse", optimizer="sgd",
                           optimizerParams={"lr": 0.01}, featuresCols=["a", "b"],
                           labelCol="target", batchSize=16, epochs=30, numWorkers=2).fit(df)
    scored = model.transform(df)
    assert scored.schema["prediction"].dataType.simpleString() == "double"
    assert "probability" not in scored.columns
    mse = scored.select(F.avg((F.col("prediction") - F.col("target")) ** 2)).first()[0]
    assert mse < 0.05
    assert model.history[-1]["train_loss"] < 0.05


def test_array_targets_regression(spark):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 3)).astype("float32")
    y = np.stack([x.sum(axis=1), x[:, 0] - x[:, 1]], axis=1)
    df = spark.createDataFrame([(a.tolist(), b.tolist()) for a, b in zip(x, y)],
                               "features array<float>, label array<double>")
    model = TorchEstimator(model=torch.nn.Linear(3, 2), loss="mse", optimizerParams={"lr": 0.05},
                           batchSize=16, epochs=20, numWorkers=2).fit(df)
    row = model.transform(df).first()
    assert len(row.prediction) == 2
    assert model.history[-1]["train_loss"] < 0.01


def test_binary_with_logits(spark):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 2))
    df = spark.createDataFrame([(r.tolist(), float(r[0] > r[1])) for r in x],
                               "features array<double>, label double")
    model = TorchEstimator(model=torch.nn.Linear(2, 1), loss="bce_with_logits",
                           optimizerParams={"lr": 0.1}, batchSize=16, epochs=10,
                           numWorkers=2).fit(df)
    scored = model.transform(df)
    assert accuracy(scored) > 0.95
    assert model.history[-1]["train_accuracy"] > 0.95
    assert len(scored.first().probability) == 2


def test_validation_column(spark, digits):
    train, _ = digits
    df = train.withColumn("is_val", F.col("label") == 0)
    model = TorchEstimator(model=mlp, validationCol="is_val", epochs=1, numWorkers=2).fit(df)
    zeros = df.filter("label = 0").count()
    assert model.history[0]["val_rows"] == zeros
    assert model.history[0]["train_rows"] == df.count() - zeros


def test_streaming_transform(spark, digits_model, digits, tmp_path):
    _, test = digits
    source = str(tmp_path / "in")
    test.write.parquet(source)
    stream = spark.readStream.schema(test.schema).parquet(source)
    query = (digits_model.transform(stream).select("features", "prediction")
             .writeStream.format("memory").queryName("digits_scored").start())
    try:
        query.processAllAvailable()
    finally:
        query.stop()
    streamed = {tuple(r.features): r.prediction for r in spark.table("digits_scored").collect()}
    batch = {tuple(r.features): r.prediction for r in digits_model.transform(test).collect()}
    assert streamed == batch


def test_declarative_network_spec_trains_saves_and_loads(digits, tmp_path):
    from sparkdl.nn import Conv2d, Dense, Flatten, MaxPool2d, Sequential

    train, test = digits
    spec = Sequential([Conv2d(8, 3, padding="same", activation="relu"), MaxPool2d(2),
                       Flatten(), Dense(10)], input_shape=(1, 8, 8))
    model = TorchEstimator(model=spec, featureShape=[1, 8, 8], optimizerParams={"lr": 1e-2},
                           batchSize=32, epochs=8, numWorkers=2, backend="torch").fit(train)
    assert accuracy(model.transform(test)) > 0.9
    model.save(str(tmp_path / "spec_model"))
    loaded = TorchModel.load(str(tmp_path / "spec_model"))
    assert loaded._architecture.kind == "spec"
    assert (tmp_path / "spec_model" / "network.json").read_bytes() == spec.to_json().encode()
    before = [r.prediction for r in model.transform(test).collect()]
    assert before == [r.prediction for r in loaded.transform(test).collect()]
