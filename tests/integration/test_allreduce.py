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

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_two_workers_equal_one_worker_and_plain_pytorch(full_batch):
    two = full_batch.fit(2, backend="torch")
    one = full_batch.fit(1, backend="torch")
    rows = [w["train_rows"] for w in two.history.workers]
    assert sum(rows) == full_batch.rows and rows[0] != rows[1], rows

    reference = full_batch.net()
    opt = torch.optim.SGD(reference.parameters(), lr=full_batch.lr)
    for _ in range(full_batch.epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(reference(torch.from_numpy(full_batch.x)),
                                          torch.from_numpy(full_batch.y)).backward()
        opt.step()
    expected = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    for name, value in expected.items():
        np.testing.assert_allclose(full_batch.weights(two)[name], value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(full_batch.weights(one)[name], value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two.history.metric("train_loss"),
                               one.history.metric("train_loss"), rtol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "horovod"])
def test_minibatch_runs_are_deterministic(full_batch, backend):
    kw = dict(batchSize=8, optimizer="adam", optimizerParams={"lr": 0.01}, backend=backend)
    first, second = full_batch.fit(2, **kw), full_batch.fit(2, **kw)
    for name, value in full_batch.weights(first).items():
        np.testing.assert_array_equal(full_batch.weights(second)[name], value)
    assert first.history.metric("train_loss") == second.history.metric("train_loss")


def test_a_different_seed_changes_the_run(full_batch):
    a = full_batch.fit(2, batchSize=8, seed=1)
    b = full_batch.fit(2, batchSize=8, seed=2)
    wa, wb = full_batch.weights(a), full_batch.weights(b)
    assert any(not np.array_equal(wa[k], wb[k]) for k in wa)


def test_ranks_meet_through_the_driver_or_through_barrier_all_gather(spark, full_batch):
    driver = full_batch.fit(2, batchSize=8)
    spark.conf.set("spark.sparkdl.rendezvous", "barrier")
    try:
        barrier = full_batch.fit(2, batchSize=8)
    finally:
        spark.conf.unset("spark.sparkdl.rendezvous")
    for name, value in full_batch.weights(driver).items():
        np.testing.assert_array_equal(full_batch.weights(barrier)[name], value)
