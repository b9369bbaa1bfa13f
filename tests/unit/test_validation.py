"""One validator per constraint: the estimator's Params and TrainSpec reject alike."""

from __future__ import annotations

import pytest

from sparkdl.errors import ConfigError
from sparkdl.validation import require_fraction, require_positive, require_positive_int


@pytest.mark.parametrize("value, message", [
    (0, r"epochs must be >= 1. Received: epochs=0"),
    (-2, r"epochs must be >= 1. Received: epochs=-2"),
    (1.5, r"epochs must be an integer. Received: epochs=1.5"),
    (True, r"epochs must be an integer. Received: epochs=True"),
])
def test_positive_int(value, message):
    with pytest.raises(ConfigError, match=message):
        require_positive_int("epochs", value)


def test_positive_and_fraction():
    assert require_positive("timeout", 2) == 2.0
    for bad in (0, -1.0, float("inf"), float("nan"), "3"):
        with pytest.raises(ConfigError, match="timeout must be > 0"):
            require_positive("timeout", bad)
    assert require_fraction("validationFraction", 0) == 0.0
    for bad in (1.0, -0.1, "0.5"):
        with pytest.raises(ConfigError, match=r"validationFraction must be in \[0, 1\)"):
            require_fraction("validationFraction", bad)


def test_train_spec_uses_the_same_words():
    import torch

    from sparkdl.architecture import Architecture
    from sparkdl.data.shard import ShardLayout
    from sparkdl.worker.spec import TrainSpec

    def spec(**kw):
        args = dict(architecture=Architecture.of(torch.nn.Linear(2, 1)), initial_weights=None,
                    loss="mse", optimizer="sgd", optimizer_params={},
                    layout=ShardLayout(("f",), "y", False), batch_size=8, epochs=1, seed=0,
                    num_workers=1, backend="torch")
        return TrainSpec(**{**args, **kw})

    with pytest.raises(ConfigError, match=r"batch_size must be >= 1. Received: batch_size=0"):
        spec(batch_size=0)
    with pytest.raises(ConfigError, match=r"timeout_s must be > 0"):
        spec(timeout_s=0.0)
