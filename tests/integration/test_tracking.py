"""MLflow tracking of a fit on a real local-cluster, into a local sqlite MLflow store
(no server): params, per-epoch metrics and the model, all logged from the driver."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sparkdl import TorchEstimator, TorchModel

mlflow = pytest.importorskip("mlflow")
pytestmark = [pytest.mark.spark]


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh sqlite tracking store; runs' artifacts under tmp_path (the default
    artifact root is relative to the working directory)."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # as a user's environment would say
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("_MLFLOW_TELEMETRY_SESSION_ID", "sparkdl-tests")  # MLflow sets it
    return mlflow.tracking.MlflowClient(uri)


def estimator(**params) -> TorchEstimator:
    return TorchEstimator(model=mlp, optimizerParams={"lr": 1e-2}, batchSize=32, epochs=3,
                          numWorkers=2, seed=3, backend="torch", verbose=0,
                          validationFraction=0.1, **params)


def test_an_active_run_gets_params_metrics_and_a_servable_model(store, digits, tmp_path):
    train, test = digits
    with mlflow.start_run() as run:
        model = estimator().fit(train)
    data = store.get_run(run.info.run_id).data
    assert data.params["epochs"] == "3" and data.params["numWorkers"] == "2"
    assert data.params["model"] == "mlp" and data.params["backend"] == "torch"
    for name in ("train_loss", "val_accuracy"):
        history = store.get_metric_history(run.info.run_id, name)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]
        np.testing.assert_allclose([m.value for m in sorted(history, key=lambda m: m.step)],
                                   model.history.metric(name), rtol=1e-6)
    assert {a.path for a in store.list_artifacts(run.info.run_id)} >= {"model",
                                                                      "sparkdl_model"}

    # The MLflow model scores pandas as transform scores Spark rows.
    expected = model.transform(test).collect()
    served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    scored = served.predict(pd.DataFrame({"features": [list(r.features) for r in expected]}))
    assert scored["prediction"].tolist() == [r.prediction for r in expected]
    np.testing.assert_allclose(np.stack(scored["probability"]),
                               np.stack([r.probability.toArray() for r in expected]), rtol=1e-5)

    # The sparkdl model directory loads as a TorchModel.
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                artifact_path="sparkdl_model",
                                                dst_path=str(tmp_path / "dl"))
    assert TorchModel.load(local)._weights == model._weights


def test_mlflow_experiment_starts_and_ends_a_run_of_its_own(store, digits):
    train, _ = digits
    model = estimator(mlflowExperiment="sparkdl-digits").fit(train)
    experiment = store.get_experiment_by_name("sparkdl-digits")
    runs = store.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["train_loss"] == pytest.approx(model.history[-1]["train_loss"])
    assert mlflow.active_run() is None


def test_without_a_run_or_experiment_nothing_is_logged(store, digits):
    train, _ = digits
    estimator().fit(train)
    assert store.search_runs([e.experiment_id for e in store.search_experiments()]) == []
