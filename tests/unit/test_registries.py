"""Losses, optimizers and collective backends chosen by name."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparkdl.collective import (
    available_backends,
    check_backend,
    default_backend,
    get_backend,
    horovod_available,
)
from sparkdl.collective.base import Collective
from sparkdl.errors import ConfigError
from sparkdl.losses import TASKS, loss_names, resolve_loss
from sparkdl.optimizers import build_optimizer, check_optimizer, optimizer_names


def test_loss_names_and_tasks():
    assert loss_names() == ["bce_with_logits", "cross_entropy", "mse", "nll"]
    assert resolve_loss("cross_entropy").task == "multiclass"
    assert resolve_loss("nll").task == "multiclass"
    assert resolve_loss("bce_with_logits").task == "binary"
    assert resolve_loss("mse").task == "regression"
    assert all(resolve_loss(n).task in TASKS for n in loss_names())


def test_unknown_loss():
    with pytest.raises(ConfigError) as e:
        resolve_loss("hinge")
    msg = str(e.value)
    assert "Received: loss='hinge'" in msg
    for name in loss_names():
        assert name in msg


def test_callable_loss_is_regression():
    def fn(out, y):
        return (out - y).abs().mean()

    spec = resolve_loss(fn)
    assert spec.fn is fn and spec.task == "regression" and spec.name == "custom"


def test_losses_align_single_output_with_flat_targets():
    out = torch.tensor([[0.5], [-1.0], [2.0]])
    y = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    assert float(resolve_loss("mse").fn(out, y)) == pytest.approx(
        float(F.mse_loss(out[:, 0], y.float())))
    assert float(resolve_loss("bce_with_logits").fn(out, y)) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(out[:, 0], y.float())))


def test_optimizer_names_and_build():
    assert optimizer_names() == ["adam", "adamw", "rmsprop", "sgd"]
    params = list(torch.nn.Linear(2, 1).parameters())
    opt = build_optimizer("adam", {"lr": 0.01, "betas": (0.8, 0.9)}, params)
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["betas"] == (0.8, 0.9)


def test_callable_optimizer():
    def make(params):
        return torch.optim.SGD(params, lr=0.5, momentum=0.9)

    check_optimizer(make, {"ignored": True})  # callables are not validated
    opt = build_optimizer(make, {}, torch.nn.Linear(2, 1).parameters())
    assert opt.param_groups[0]["momentum"] == 0.9


def test_unknown_optimizer():
    with pytest.raises(ConfigError) as e:
        check_optimizer("lbfgs2", {})
    msg = str(e.value)
    assert "Received: optimizer='lbfgs2'" in msg
    for name in optimizer_names():
        assert name in msg


@pytest.mark.parametrize("name,params,needle", [
    ("adam", {"lr": -1}, "Invalid learning rate"),
    ("sgd", {"lr": 0.1, "bogus": 1}, "bogus"),
    ("adamw", {"betas": (1.5, 0.9)}, "beta"),
    ("rmsprop", {"lr": 0.1, "momentum": -0.5}, "momentum"),
])
def test_check_optimizer_rejects_bad_kwargs(name, params, needle):
    with pytest.raises(ConfigError) as e:
        check_optimizer(name, params)
    msg = str(e.value)
    assert f"optimizerParams={params!r}" in msg
    assert repr(name) in msg
    assert needle in msg


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_check_optimizer_accepts_good_kwargs(name):
    check_optimizer(name, {"lr": 0.01})


def test_backend_registry():
    assert available_backends() == ["horovod", "torch"]
    assert default_backend() == ("horovod" if horovod_available() else "torch")
    assert check_backend("torch") == "torch"
    backend = get_backend("torch")
    assert isinstance(backend, Collective) and backend.name == "torch"


@pytest.mark.parametrize("name", ["mpi", "", "Torch"])
def test_unknown_backend(name):
    for call in (check_backend, get_backend):
        with pytest.raises(ConfigError) as e:
            call(name)
        msg = str(e.value)
        assert f"Received: backend={name!r}" in msg
        assert "torch" in msg and "Valid choices" in msg
