"""A multi-output model (labelCols): one loss per output, weighted, per-output history
and scoring columns, on two executors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from sparkdl import TorchEstimator, TorchModel
from sparkdl.errors import ConfigError

pytestmark = [pytest.mark.spark, pytest.mark.slow]


class TwoHeads(torch.nn.Module):
    """Digit class (logits) and the image's mean ink (a number) from one trunk."""

    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU())
        self.kind = torch.nn.Linear(64, 10)
        self.ink = torch.nn.Linear(64, 1)

    def forward(self, x):
        h = self.trunk(x)
        return self.kind(h), self.ink(h)


@pytest.fixture(scope="module")
def inked(digits):
    train, test = digits
    ink = F.aggregate("features", F.lit(0.0), lambda acc, v: acc + v) / 64
    return train.withColumn("ink", ink), test.withColumn("ink", ink)


def test_two_outputs_train_with_their_own_losses_and_score_to_their_own_columns(inked,
                                                                                tmp_path):
    train, test = inked
    est = TorchEstimator(model=TwoHeads(), labelCols=["label", "ink"],
                         loss=["cross_entropy", "mse"], lossWeights=[1.0, 5.0],
                         metrics=["accuracy", "mae"], optimizerParams={"lr": 1e-2},
                         batchSize=32, epochs=6, numWorkers=2, validationFraction=0.1,
                         verbose=0, seed=2)
    model = est.fit(train)
    last = model.history[-1]
    assert last["train_loss"] == pytest.approx(
        last["train_label_loss"] + 5.0 * last["train_ink_loss"], rel=1e-4)
    assert last["val_label_accuracy"] > 0.85 and last["val_ink_mae"] < 0.05
    assert "train_ink_accuracy" not in last and "train_label_mae" not in last
    scored = model.transform(test)
    assert {"prediction_label", "probability_label", "rawPrediction_label",
            "prediction_ink"} <= set(scored.columns)
    rows = scored.select("label", "ink", "prediction_label", "prediction_ink").collect()
    assert np.mean([r.prediction_label == r.label for r in rows]) > 0.85
    assert np.mean([abs(r.prediction_ink - r.ink) for r in rows]) < 0.05
    model.save(str(tmp_path / "m"))
    again = TorchModel.load(str(tmp_path / "m"))
    assert again.transform(test).select("prediction_ink").collect() == \
        scored.select("prediction_ink").collect()


def test_multi_output_mistakes_fail_before_any_job(inked):
    train, _ = inked
    with pytest.raises(ConfigError, match="loss lists 3 losses for 2 label column"):
        TorchEstimator(model=TwoHeads(), labelCols=["label", "ink"],
                       loss=["cross_entropy", "mse", "mse"], verbose=0).fit(train)
    with pytest.raises(ConfigError, match="must return a tuple of 3 tensors"):
        TorchEstimator(model=TwoHeads(), labelCols=["label", "ink", "ink"],
                       loss=["cross_entropy", "mse", "mse"], verbose=0).fit(train)
