"""The Horovod backend across two executors: same weights as torch.distributed, and
Horovod's own options (fp16 compression, Adasum, gradient accumulation) train well.

These tests never skip: Horovod is part of ``make setup`` (deploy/horovod/build.sh),
so a missing Horovod is a broken install and fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from sparkdl import TorchEstimator
from sparkdl.collective import default_backend, horovod_available

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.horovod]


@pytest.fixture(scope="module", autouse=True)
def horovod_installed():
    assert horovod_available(), "Horovod is not installed: run deploy/horovod/build.sh"


def test_horovod_is_the_default_backend():
    assert default_backend() == "horovod"
    assert TorchEstimator(model=mlp).getOrDefault("backend") == "horovod"


def test_horovod_equals_torch_and_one_worker(full_batch):
    hvd = full_batch.fit(2, backend="horovod")
    torch_ = full_batch.fit(2, backend="torch")
    one = full_batch.fit(1, backend="torch")
    assert hvd.history.backend == "horovod"
    for name, value in full_batch.weights(one).items():
        np.testing.assert_allclose(full_batch.weights(hvd)[name], value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(full_batch.weights(torch_)[name], value, rtol=1e-5,
                                   atol=1e-6)


def test_workers_are_separate_processes_in_separate_executors(full_batch):
    model = full_batch.fit(2, epochs=1, backend="horovod")
    workers = model.history.workers
    assert [w["backend_size"] for w in workers] == [2, 2]  # hvd.size() on each rank
    assert len({w["pid"] for w in workers}) == 2
    assert len({w["executor_id"] for w in workers}) == 2


@pytest.mark.parametrize("warm", [True, False])
def test_every_fit_trains_in_fresh_rank_processes(full_batch, warm):
    # Horovod cannot start twice in one process: a kept spare must be unused.
    fits = [full_batch.fit(2, epochs=1, backend="horovod",
                           backendOptions={"warm_process": warm}) for _ in range(3)]
    pids = [{w["pid"] for w in f.history.workers} for f in fits]
    assert all(len(p) == 2 for p in pids)
    assert not (pids[0] & pids[1]) and not (pids[1] & pids[2]) and not (pids[0] & pids[2])
    # From the second fit on, each executor's rank runs in the spare the first left.
    warm_ranks = [[w["warm_process"] for w in f.history.workers] for f in fits[1:]]
    assert warm_ranks == [[warm, warm]] * 2


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def accuracy(df) -> float:
    return df.select(F.avg((F.col("prediction") == F.col("label")).cast("double"))).first()[0]


@pytest.mark.parametrize("options", [{"compression": "fp16"}, {"op": "adasum"},
                                     {"fusion_threshold_mb": 1, "cycle_time_ms": 2}])
def test_horovod_options_train_the_digits(digits, options):
    train, test = digits
    model = TorchEstimator(model=mlp, optimizerParams={"lr": 1e-2}, batchSize=32, epochs=10,
                           numWorkers=2, seed=1, backend="horovod",
                           backendOptions=options).fit(train)
    assert accuracy(model.transform(test)) >= 0.93


def test_gradient_accumulation_trains(digits):
    train, test = digits
    model = TorchEstimator(model=mlp, optimizerParams={"lr": 1e-2}, batchSize=16, epochs=10,
                           numWorkers=2, backend="horovod", backwardPassesPerStep=2).fit(train)
    assert accuracy(model.transform(test)) >= 0.93


def test_bad_horovod_options_fail_before_the_job(full_batch):
    from sparkdl import ConfigError

    with pytest.raises(ConfigError, match=r"backendOptions\['compression'\] must be one of"):
        full_batch.fit(2, backend="horovod", backendOptions={"compression": "int8"})
    with pytest.raises(ConfigError, match=r"Unknown horovod backendOptions key 'fusion'"):
        full_batch.fit(2, backend="horovod", backendOptions={"fusion": 1})
    with pytest.raises(ConfigError, match=r"backend='torch' takes no backendOptions"):
        full_batch.fit(2, backend="torch", backendOptions={"op": "sum"})


def test_output_on_stdout_does_not_break_a_horovod_rank(full_batch):
    class Chatty(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(5, 3)

        def forward(self, x):
            print("forward on", tuple(x.shape))  # user code may print anything
            return self.lin(x)

    model = full_batch.fit(2, model=Chatty(), epochs=1, backend="horovod")
    assert model.history.backend == "horovod"
