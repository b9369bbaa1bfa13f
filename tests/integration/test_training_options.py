"""Schedulers, clipping, early stopping, mixed precision and metrics in a real fit on
two executors, checkpoints that resume them, and their errors before any job."""

from __future__ import annotations

import pytest
import torch

from sparkdl import TorchEstimator
from sparkdl.errors import ConfigError

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def test_scheduler_clipping_bf16_and_metrics_in_one_fit(digits):
    train, _ = digits
    est = TorchEstimator(model=mlp, optimizerParams={"lr": 1e-2}, batchSize=32, epochs=4,
                         numWorkers=2, seed=3, validationFraction=0.2, verbose=0,
                         lrScheduler="step", lrSchedulerParams={"step_size": 1, "gamma": 0.5},
                         gradientClipNorm=1.0, precision="bf16-mixed",
                         metrics=["accuracy", "top5_accuracy", "f1", "auc"])
    model = est.fit(train)
    history = model.history
    assert history.metric("lr") == pytest.approx([1e-2, 5e-3, 2.5e-3, 1.25e-3])
    last = history[-1]
    for name in ("accuracy", "top5_accuracy", "f1"):
        assert 0.0 <= last[f"train_{name}"] <= 1.0 and 0.0 <= last[f"val_{name}"] <= 1.0
    assert "train_auc" not in last  # AUC gathers every score: validation rows only
    assert last["val_accuracy"] > 0.8 and last["val_auc"] > 0.95
    assert last["val_top5_accuracy"] >= last["val_accuracy"]
    assert model.getLrScheduler() == "step" and model.getPrecision() == "bf16-mixed"


def test_early_stopping_ends_all_ranks_together_and_a_refit_resumes_stopped(digits,
                                                                             tmp_path):
    train, _ = digits
    ckpt = str(tmp_path / "ckpt")
    # no epoch improves val_loss by 10: the fit stops after patience epochs past the first
    est = TorchEstimator(model=mlp, optimizerParams={"lr": 1e-2}, batchSize=64, epochs=20,
                         numWorkers=2, seed=4, validationFraction=0.2, verbose=0,
                         earlyStopping={"monitor": "val_loss", "patience": 2,
                                        "minDelta": 10.0, "restoreBest": True},
                         checkpointDir=ckpt)
    model = est.fit(train)
    history = model.history
    assert len(history) == 3 and history.stopped_epoch == 3
    assert "val_loss did not improve for 2 epochs" in history.stop_reason
    assert history[-1]["restored_epoch"] == 1
    again = est.fit(train)  # resumes from the last checkpoint, which says it stopped
    assert len(again.history) == 3 and again.history.stopped_epoch == 3
    assert again.history.resumed_from_epoch == 3


def test_a_custom_scheduler_saves_and_loads(tmp_path):
    est = TorchEstimator(model=mlp, lrScheduler=lambda opt: torch.optim.lr_scheduler
                         .ExponentialLR(opt, gamma=0.9), earlyStopping={"patience": 1},
                         metrics=["f1"])
    est.save(str(tmp_path / "est"))
    loaded = TorchEstimator.load(str(tmp_path / "est"))
    assert loaded.getLrScheduler() == "custom"
    assert loaded.getEarlyStopping() == {"patience": 1} and loaded.getMetrics() == ["f1"]
    scheduler = loaded._scheduler_plan().scheduler(
        torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0))
    assert isinstance(scheduler, torch.optim.lr_scheduler.ExponentialLR)


@pytest.mark.parametrize("params, message", [
    ({"metrics": ["accuracy", "rmse"]}, "Metric 'rmse' does not apply to a multiclass loss"),
    ({"metrics": ["precision_at_k"]}, "Unknown metric 'precision_at_k'"),
    ({"earlyStopping": {"monitor": "val_loss"}}, "needs a validation set"),
    ({"earlyStopping": {"monitor": "val_accuracy", "patience": -1},
      "validationFraction": 0.1}, "patience must be an integer >= 0"),
    ({"lrScheduler": "step", "lrSchedulerParams": {"gama": 0.5}}, "not valid for"),
    ({"lrScheduler": "warmup"}, "Unknown lrScheduler 'warmup'"),
    ({"gradientClipNorm": -1.0}, "gradientClipNorm must be >= 0"),
    ({"precision": "fp8"}, "precision must be one of"),
    ({"precision": "16-mixed"}, "spark.task.resource.gpu.amount"),
])
def test_bad_settings_fail_before_any_job(digits, params, message):
    train, _ = digits
    est = TorchEstimator(model=mlp, numWorkers=2, epochs=1, verbose=0, **params)
    tracker = train.sparkSession.sparkContext.statusTracker()
    jobs = set(tracker.getJobIdsForGroup())
    with pytest.raises(ConfigError, match=message):
        est.fit(train)
    assert set(tracker.getJobIdsForGroup()) == jobs
