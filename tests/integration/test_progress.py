"""Live progress of a fit on a real local-cluster: rank 0's metrics reach the driver
while the barrier job runs (bar, lines, callbacks), for both backends."""

from __future__ import annotations

import pytest
import torch

from sparkdl import TorchEstimator
from sparkdl.errors import ConfigError

pytestmark = [pytest.mark.spark]


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


@pytest.fixture
def fast_reports(spark):
    spark.conf.set("spark.sparkdl.progressInterval", "0.05")
    yield
    spark.conf.unset("spark.sparkdl.progressInterval")


@pytest.mark.parametrize("backend, verbose", [("torch", 1), ("horovod", 2)])
def test_epochs_reach_the_driver_while_the_job_runs(spark, digits, capsys, fast_reports,
                                                    backend, verbose):
    train, _ = digits
    tracker = spark.sparkContext.statusTracker()
    seen = []

    def on_epoch(epoch, metrics):
        # Live: the barrier job is still running when each epoch arrives.
        seen.append((epoch, metrics["train_loss"], bool(tracker.getActiveJobsIds())))

    model = TorchEstimator(model=mlp, batchSize=8, epochs=3, numWorkers=2, seed=1,
                           backend=backend, verbose=verbose, onEpochEnd=on_epoch,
                           validationFraction=0.1).fit(train)
    assert [e for e, _, _ in seen] == [1, 2, 3]
    assert [loss for _, loss, _ in seen] == model.history.metric("train_loss")
    assert all(running for *_, running in seen), seen
    out, err = capsys.readouterr()
    if verbose == 1:
        assert "sparkdl fit" in err and "3/3" in err and "val_loss=" in err
        assert "step=" in err and "samples/s=" in err  # within-epoch reports
    else:
        lines = [line for line in out.splitlines() if line.startswith("sparkdl epoch")]
        assert [line.split(":")[0] for line in lines] == [
            "sparkdl epoch 1/3", "sparkdl epoch 2/3", "sparkdl epoch 3/3"]
        assert "samples/s" in lines[0] and "val_loss=" in lines[0]


def test_a_bad_verbose_or_callback_fails_before_any_job(digits):
    train, _ = digits
    with pytest.raises(ConfigError, match=r"verbose must be 0 \(quiet\), 1 .* Received: "
                                          r"verbose=3"):
        TorchEstimator(model=mlp, numWorkers=2, verbose=3).fit(train)
    with pytest.raises(ConfigError, match="onEpochEnd takes a callable"):
        TorchEstimator(model=mlp, onEpochEnd=["not callable"])
