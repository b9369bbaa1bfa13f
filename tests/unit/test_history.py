"""A diverged run's history persists as strict JSON, which Spark's JVM reader accepts."""

from __future__ import annotations

import json
import math

from sparkdl.history import TrainingHistory


def test_non_finite_metrics_round_trip_as_strict_json():
    history = TrainingHistory([{"epoch": 1, "train_loss": float("nan")},
                               {"epoch": 2, "train_loss": float("inf"), "val_loss": 0.5}],
                              backend="torch", num_workers=2, workers=[{"host": "NaN"}])
    text = json.dumps(history.to_dict(), allow_nan=False)  # raises on a bare NaN
    back = TrainingHistory.from_dict(json.loads(text))
    assert math.isnan(back[0]["train_loss"]) and back[1]["train_loss"] == math.inf
    assert back[1]["val_loss"] == 0.5 and back.workers == [{"host": "NaN"}]
