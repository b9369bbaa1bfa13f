"""The proof that the allreduce is right, and that runs repeat exactly.

With plain SGD and full-batch steps, the global batch of every step is the whole
data set however many workers share it. Two workers must therefore end with the
same weights as one worker and as a plain PyTorch loop, including when the rows
split unevenly (an average of per-worker means would differ from the true mean).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparkdl import TorchEstimator

pytestmark = [pytest.mark.spark, pytest.mark.slow]

ROWS = 101  # odd: the two shards are uneven


def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


@pytest.fixture(scope="module")
def data(spark):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(ROWS, 5)).astype("float32")
    y = rng.integers(0, 3, size=ROWS)
    df = spark.createDataFrame([(r.tolist(), int(t)) for r, t in zip(x, y)],
                               "features array<float>, label long")
    return df, x, y


def fit(df, workers, **kw):
    params = dict(model=net(), loss="cross_entropy", optimizer="sgd",
                  optimizerParams={"lr": 0.5}, batchSize=ROWS, epochs=5, numWorkers=workers,
                  seed=3)
    params.update(kw)
    return TorchEstimator(**params).fit(df)


def weights(model):
    return {k: v.detach().numpy() for k, v in model.getModel().state_dict().items()}


def test_two_workers_equal_one_worker_and_plain_pytorch(data):
    df, x, y = data
    two = fit(df, 2)
    one = fit(df, 1)
    rows = [w["train_rows"] for w in two.history.workers]
    assert sum(rows) == ROWS and rows[0] != rows[1], rows

    reference = net()
    opt = torch.optim.SGD(reference.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(reference(torch.from_numpy(x)),
                                          torch.from_numpy(y)).backward()
        opt.step()
    expected = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    for name, value in expected.items():
        np.testing.assert_allclose(weights(two)[name], value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights(one)[name], value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two.history.metric("train_loss"),
                               one.history.metric("train_loss"), rtol=1e-5)


def test_minibatch_runs_are_deterministic(data):
    df, _, _ = data
    first = fit(df, 2, batchSize=8, optimizer="adam", optimizerParams={"lr": 0.01})
    second = fit(df, 2, batchSize=8, optimizer="adam", optimizerParams={"lr": 0.01})
    for name, value in weights(first).items():
        np.testing.assert_array_equal(weights(second)[name], value)
    assert first.history.metric("train_loss") == second.history.metric("train_loss")


def test_a_different_seed_changes_the_run(data):
    df, _, _ = data
    a = fit(df, 2, batchSize=8, seed=1)
    b = fit(df, 2, batchSize=8, seed=2)
    assert any(not np.array_equal(weights(a)[k], weights(b)[k]) for k in weights(a))
