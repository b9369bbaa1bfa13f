"""Architecture capture/build and safetensors weights, without Spark."""

from __future__ import annotations

import pickle

import pytest
import torch

from sparkdl.architecture import (
    Architecture,
    state_dict_of,
    weights_from_bytes,
    weights_to_bytes,
)
from sparkdl.errors import ConfigError, CorruptModelError


class ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class Tied(torch.nn.Module):
    """Two layers sharing one weight Parameter (like tied embeddings)."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def make_convnet():
    return ConvNet()


def trained_convnet():
    torch.manual_seed(0)
    net = ConvNet()
    net.train()
    net(torch.randn(5, 1, 8, 8))  # moves BatchNorm running stats off their defaults
    return net.eval()


def test_of_module_round_trip_gives_identical_outputs():
    net = trained_convnet()
    arch = Architecture.of(net)
    assert arch.kind == "module"
    rebuilt = arch.build(state_dict_of(net)).eval()
    assert type(rebuilt) is ConvNet
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), net(x), rtol=0, atol=0)
    assert int(rebuilt.bn.num_batches_tracked) == 1


def test_of_module_holds_no_weights():
    big = torch.nn.Linear(512, 512)
    arch = Architecture.of(big)
    # the payload is a meta-device skeleton: far smaller than 1 MiB of float32 weights
    assert len(arch.payload) < 64 * 1024
    # and the caller's module was not moved to meta
    assert big.weight.device.type == "cpu"


def test_of_factory_round_trip_gives_identical_outputs():
    net = trained_convnet()
    arch = Architecture.of(make_convnet)
    assert arch.kind == "factory"
    rebuilt = arch.build(state_dict_of(net)).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), net(x), rtol=0, atol=0)


def test_of_lambda_factory_and_build_without_weights():
    arch = Architecture.of(lambda: torch.nn.Linear(3, 2))
    torch.manual_seed(1)
    a = arch.build()
    torch.manual_seed(1)
    b = arch.build()
    assert torch.equal(a.weight, b.weight)  # factory init is seeded by the caller


def test_architecture_is_picklable():
    arch = Architecture.of(torch.nn.Linear(2, 2))
    again = pickle.loads(pickle.dumps(arch))
    assert again == arch


def test_build_rejects_wrong_state_dict():
    arch = Architecture.of(torch.nn.Linear(3, 2))
    with pytest.raises(CorruptModelError, match=r"m/weights.safetensors does not fit "
                                                r"m/architecture.pkl \(module\): .*size mismatch "
                                                r"for weight"):
        arch.build(state_dict_of(torch.nn.Linear(4, 2)), source="m/architecture.pkl",
                   weights_source="m/weights.safetensors")


def test_expected_shapes_of_a_spec_allocate_nothing():
    from sparkdl.nn import Dense, Input, Sequential

    huge = Architecture.of(Sequential([Input((2**20,)), Dense(2**20), Dense(2)]))
    shapes = huge.expected_shapes()  # a 4 TiB float32 weight, shaped without memory
    assert shapes["0.weight"] == (2**20, 2**20) and shapes["1.bias"] == (2,)
    assert Architecture.of(torch.nn.Linear(2, 2)).expected_shapes() is None  # runs no code


def test_factory_returning_non_module():
    arch = Architecture.of(lambda: 42)
    with pytest.raises(ConfigError, match="must return a torch.nn.Module. Received: int"):
        arch.build()


@pytest.mark.parametrize("bad", [42, "linear", None, [torch.nn.Linear(1, 1)]])
def test_non_module_non_callable_raises(bad):
    with pytest.raises(ConfigError, match=f"Received: model={type(bad).__name__}"):
        Architecture.of(bad)


def test_weights_bytes_round_trip():
    net = trained_convnet()
    data = weights_to_bytes(net)
    assert isinstance(data, bytes)
    state = weights_from_bytes(data)
    original = net.state_dict()
    assert state.keys() == original.keys()
    for k, v in original.items():
        assert state[k].dtype == v.dtype
        assert torch.equal(state[k], v)


def test_state_dict_of_copies():
    net = torch.nn.Linear(2, 2)
    state = state_dict_of(net)
    with torch.no_grad():
        net.weight.add_(1.0)
    assert not torch.equal(state["weight"], net.weight)


def test_tied_weights_serialise():
    torch.manual_seed(2)
    net = Tied()
    state = weights_from_bytes(weights_to_bytes(net))
    assert torch.equal(state["a.weight"], state["b.weight"])
    rebuilt = Architecture.of(net).build(state)
    x = torch.randn(3, 4)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), net(x), rtol=0, atol=0)


def test_tied_weights_stay_tied_for_a_factory():
    net = Tied()
    rebuilt = Architecture.of(Tied).build(state_dict_of(net))
    assert rebuilt.a.weight is rebuilt.b.weight


def test_tied_weights_stay_tied_for_a_module_instance():
    net = Tied()
    rebuilt = Architecture.of(net).build(state_dict_of(net))
    assert rebuilt.a.weight is rebuilt.b.weight
