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

ROWS = 101


@pytest.fixture(scope="module", autouse=True)
def horovod_installed():
    assert horovod_available(), "Horovod is not installed: run deploy/horovod/build.sh"


def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


@pytest.fixture(scope="module")
def data(spark):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(ROWS, 5)).astype("float32")
    y = rng.integers(0, 3, size=ROWS)
    return spark.createDataFrame([(r.tolist(), int(t)) for r, t in zip(x, y)],
                                 "features array<float>, label long")


def fit_sgd(df, backend, workers):
    return TorchEstimator(model=net(), optimizer="sgd", optimizerParams={"lr": 0.5},
                          batchSize=ROWS, epochs=5, numWorkers=workers, seed=3,
                          backend=backend).fit(df)


def weights(model):
    return {k: v.numpy() for k, v in model.getModel().state_dict().items()}


def test_horovod_is_the_default_backend():
    assert default_backend() == "horovod"
    assert TorchEstimator(model=net()).getOrDefault("backend") == "horovod"


def test_horovod_equals_torch_and_one_worker(data):
    hvd = fit_sgd(data, "horovod", 2)
    torch_ = fit_sgd(data, "torch", 2)
    one = fit_sgd(data, "torch", 1)
    assert hvd.history.backend == "horovod"
    for name, value in weights(one).items():
        np.testing.assert_allclose(weights(hvd)[name], value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights(torch_)[name], value, rtol=1e-5, atol=1e-6)


def test_workers_are_separate_processes_in_separate_executors(data):
    model = TorchEstimator(model=net(), epochs=1, numWorkers=2, backend="horovod").fit(data)
    workers = model.history.workers
    assert [w["backend_size"] for w in workers] == [2, 2]  # hvd.size() on each rank
    assert len({w["pid"] for w in workers}) == 2
    assert len({w["executor_id"] for w in workers}) == 2


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


def test_bad_horovod_options_fail_before_the_job(data):
    from sparkdl import ConfigError

    with pytest.raises(ConfigError, match=r"backendOptions\['compression'\] must be one of"):
        TorchEstimator(model=net(), backend="horovod",
                       backendOptions={"compression": "int8"}).fit(data)
    with pytest.raises(ConfigError, match=r"Unknown horovod backendOptions key 'fusion'"):
        TorchEstimator(model=net(), backend="horovod", backendOptions={"fusion": 1}).fit(data)
    with pytest.raises(ConfigError, match=r"backend='torch' takes no backendOptions"):
        TorchEstimator(model=net(), backend="torch", backendOptions={"op": "sum"}).fit(data)
