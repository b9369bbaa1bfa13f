"""outputs_to_columns: raw network outputs -> prediction/probability/raw columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sparkdl.worker.score_task import ScoreSpec, outputs_to_columns


def spec(task, scalar, prob="probability", raw="rawPrediction"):
    return ScoreSpec(model_key="k", feature_cols=("f",), feature_shape=None, keep_cols=(),
                     task=task, batch_size=8, prediction_col="prediction",
                     probability_col=prob, raw_col=raw, scalar_prediction=scalar)


def as_matrix(col):
    assert pa.types.is_list(col.type)
    return np.array(col.to_pylist(), dtype=np.float64)


def test_multiclass():
    out = np.array([[0.0, 2.0, 1.0], [3.0, 1.0, -1.0], [100.0, 100.5, 99.0]], np.float32)
    cols = outputs_to_columns(spec("multiclass", True), out)
    assert set(cols) == {"prediction", "probability", "rawPrediction"}
    assert cols["prediction"].type == pa.float64()
    assert cols["prediction"].to_pylist() == [1.0, 0.0, 1.0]
    prob = as_matrix(cols["probability"])
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-12)
    expected = np.exp(out - out.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(prob, expected, rtol=1e-6)
    assert (prob.argmax(1) == np.array(cols["prediction"].to_pylist())).all()
    assert np.isfinite(prob).all()  # large logits do not overflow
    np.testing.assert_allclose(as_matrix(cols["rawPrediction"]), out)


def test_binary_scalar():
    z = np.array([[2.0], [-1.0], [0.0], [-30.0]], np.float32)
    cols = outputs_to_columns(spec("binary", True), z)
    p = 1.0 / (1.0 + np.exp(-z[:, 0].astype(np.float64)))
    prob = as_matrix(cols["probability"])
    assert prob.shape == (4, 2)
    np.testing.assert_allclose(prob[:, 1], p, rtol=1e-12)
    np.testing.assert_allclose(prob[:, 0], 1.0 - p, rtol=1e-12)
    np.testing.assert_allclose(prob.sum(1), 1.0)
    raw = as_matrix(cols["rawPrediction"])
    np.testing.assert_allclose(raw, np.stack([-z[:, 0], z[:, 0]], axis=1))
    assert cols["prediction"].to_pylist() == [1.0, 0.0, 0.0, 0.0]  # p = 0.5 is not > 0.5


def test_binary_multilabel():
    z = np.array([[1.0, -1.0, 3.0], [-2.0, 0.5, 0.0]], np.float32)
    cols = outputs_to_columns(spec("binary", False), z)
    pred = as_matrix(cols["prediction"])
    np.testing.assert_array_equal(pred, [[1, 0, 1], [0, 1, 0]])
    prob = as_matrix(cols["probability"])
    np.testing.assert_allclose(prob, 1.0 / (1.0 + np.exp(-z.astype(np.float64))), rtol=1e-12)
    np.testing.assert_allclose(as_matrix(cols["rawPrediction"]), z)


def test_regression_scalar():
    out = np.array([[1.5], [-2.25]], np.float32)
    cols = outputs_to_columns(spec("regression", True), out)
    assert list(cols) == ["prediction"]  # no probability or raw column for regression
    assert cols["prediction"].type == pa.float64()
    assert cols["prediction"].to_pylist() == [1.5, -2.25]


def test_regression_flat_output():
    out = np.array([0.5, 1.0, 2.0], np.float32)  # a model returning (n,)
    cols = outputs_to_columns(spec("regression", True), out)
    assert cols["prediction"].to_pylist() == [0.5, 1.0, 2.0]


def test_regression_vector():
    out = np.arange(6, dtype=np.float32).reshape(2, 3)
    cols = outputs_to_columns(spec("regression", False), out)
    assert list(cols) == ["prediction"]
    np.testing.assert_array_equal(as_matrix(cols["prediction"]), out)


def test_regression_multidimensional_output_is_flattened():
    out = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    cols = outputs_to_columns(spec("regression", False), out)
    np.testing.assert_array_equal(as_matrix(cols["prediction"]), out.reshape(2, 4))


@pytest.mark.parametrize("task,scalar,width", [("multiclass", True, 3), ("binary", True, 1)])
def test_optional_columns_can_be_turned_off(task, scalar, width):
    out = np.zeros((2, width), np.float32)
    cols = outputs_to_columns(spec(task, scalar, prob="", raw=""), out)
    assert list(cols) == ["prediction"]


def test_column_lengths_match_rows():
    out = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    cols = outputs_to_columns(spec("multiclass", True), out)
    assert all(len(c) == 7 for c in cols.values())
    assert cols["probability"].offsets.to_pylist() == list(range(0, 29, 4))
