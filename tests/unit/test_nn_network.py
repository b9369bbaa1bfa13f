"""sparkdl.nn networks: canonical JSON, schema validation, test vectors, Architecture."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from sparkdl.architecture import Architecture, state_dict_of
from sparkdl.errors import ConfigError
from sparkdl.nn import (
    FORMAT,
    LAYERS,
    Add,
    Concatenate,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    Input,
    MaxPool2d,
    Network,
    Sequential,
)
from sparkdl.nn._schema import schema

VECTORS = sorted((Path(__file__).parents[1] / "vectors").glob("network_*.json"))


def _mlp(**kwargs) -> Sequential:
    return Sequential([Dense(32, activation="relu"), Dropout(0.1), Dense(10)],
                      input_shape=(64,), **kwargs)


def _graph() -> Network:
    a, b = Input((16,), name="a"), Input((8,), name="b")
    h = Dense(16, activation="relu")(a)
    joined = Concatenate()(Add()(a, h), Dense(8)(b))
    return Network(inputs=[a, b], outputs=Dense(3)(joined), optimizer="sgd")


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# -- canonical JSON and round trips ---------------------------------------------

@pytest.mark.parametrize("make", [_mlp, _graph, lambda: _mlp(loss="mse")])
def test_round_trip_is_byte_identical(make):
    net = make()
    text = net.to_json()
    assert text == _canonical(net.to_dict())
    again = Network.from_json(text)
    assert again.to_json() == text
    assert again == net and hash(again) == hash(net)
    assert type(again) is type(net)
    assert Network.from_json(text.encode("utf-8")) == net


def test_non_canonical_input_gives_canonical_output():
    text = json.dumps({"inputs": [{"shape": [4], "name": "x"}], "format": FORMAT,
                       "layers": [{"units": 2, "type": "Dense"}]}, indent=4)
    net = Network.from_json(text)
    assert net.to_json() == (
        '{"format":"sparkdl.network/v1","inputs":[{"dtype":"float32","name":"x","shape":[4]}],'
        '"layers":[{"activation":null,"type":"Dense","units":2,"use_bias":true}]}')


def test_functional_names_are_generated_and_unique():
    obj = _graph().to_dict()
    assert [n["name"] for n in obj["nodes"]] == ["dense", "add", "dense_1", "concatenate",
                                                 "dense_2"]
    assert obj["nodes"][1]["inputs"] == ["a", "dense"]
    assert obj["outputs"] == ["dense_2"]
    assert obj["optimizer"] == {"name": "sgd", "params": {}}


def test_sequential_forms_agree():
    a = Sequential([Input((1, 8, 8)), Conv2d(8, 3, activation="relu"), MaxPool2d(2),
                    Flatten(), Dense(10)])
    b = Sequential([Conv2d(8, 3, activation="relu"), MaxPool2d(2), Flatten(), Dense(10)],
                   input_shape=(1, 8, 8))
    assert a == b and a.output_shape == (10,)
    assert isinstance(a.build(), torch.nn.Sequential)
    assert a.layers[0] == Conv2d(8, 3, activation="relu")


def test_graph_build_runs_and_counts():
    net = _graph()
    module = net.build()
    out = module(torch.randn(2, 16), torch.randn(2, 8))
    assert tuple(out.shape) == (2, *net.output_shape)
    assert net.param_count() == sum(p.numel() for p in module.parameters())
    with pytest.raises(ConfigError, match=r"takes 2 inputs \['a', 'b'\]. Received: 1"):
        module(torch.randn(2, 16))


def test_several_outputs():
    x = Input((4,), name="x")
    net = Network(inputs=x, outputs=[Dense(2)(x), Dense(3)(x)])
    assert net.output_shape == ((2,), (3,))
    first, second = net.build()(torch.randn(5, 4))
    assert first.shape == (5, 2) and second.shape == (5, 3)


# -- test vectors (shared with ScalaTest) --------------------------------------------

def test_vectors_exist():
    assert len(VECTORS) >= 5


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_vector(path):
    vector = json.loads(path.read_text())
    expected = vector["expected"]
    net = Network.from_dict(vector["spec"])
    assert net.to_json() == expected["canonical_json"] == _canonical(vector["spec"])
    assert net.param_count() == expected["param_count"]
    assert list(net.output_shape) == expected["output_shape"]
    module = net.build().eval()
    assert sum(p.numel() for p in module.parameters()) == expected["param_count"]
    batch = [torch.randint(0, 10, (2, *i.shape)) if i.dtype == "int64"
             else torch.randn(2, *i.shape) for i in net.inputs]
    with torch.no_grad():
        assert list(module(*batch).shape) == [2, *expected["output_shape"]]


# -- schema validation ---------------------------------------------------------------

def _spec(**overrides) -> dict:
    obj = {"format": FORMAT, "inputs": [{"name": "x", "shape": [4]}],
           "layers": [{"type": "Dense", "units": 2}]}
    obj.update(overrides)
    return obj


@pytest.mark.parametrize(("obj", "message"), [
    (_spec(layers=[{"type": "Dense2", "units": 2}]),
     "Invalid network spec at layers/0/type: 'Dense2' is not one of ['Activation', "),
    (_spec(layers=[{"type": "Dense"}]),
     "Invalid network spec at layers/0: 'units' is a required property"),
    (_spec(layers=[{"type": "Dense", "units": 2, "in_features": 4}]),
     "Invalid network spec at layers/0: Additional properties are not allowed "
     "('in_features' was unexpected)"),
    (_spec(layers=[{"type": "Dense", "units": "2"}]),
     "Invalid network spec at layers/0/units: '2' is not of type 'integer'"),
    (_spec(layers=[{"units": 2}]),
     "Invalid network spec at layers/0: 'type' is a required property"),
    (_spec(format="sparkdl.network/v9"),
     "Invalid network spec at format: 'sparkdl.network/v1' was expected"),
    (_spec(inputs=[{"name": "x", "shape": [4], "dtype": "float16"}]),
     "Invalid network spec at inputs/0/dtype: 'float16' is not one of ['float32', 'int64']"),
    ({"format": FORMAT, "inputs": [{"name": "x", "shape": [4]}]},
     "Invalid network spec at <root>: 'nodes' is a required property. A spec has either "
     "'layers'"),
    (_spec(nodes=[{"name": "n", "layer": {"type": "Flatten"}, "inputs": ["x"]}],
           outputs=["n"]),
     "Invalid network spec at <root>: 'layers' cannot be given with 'nodes' or 'outputs'. "
     "A spec has either 'layers'"),
    (_spec(inputs=[{"name": "x", "shape": [4]}, {"name": "y", "shape": [4]}]),
     "Invalid network spec at inputs: "),
    ({"format": FORMAT, "inputs": [{"name": "x", "shape": [4]}], "outputs": ["n"],
      "nodes": [{"name": "n", "layer": {"type": "Dense"}, "inputs": ["x"]}]},
     "Invalid network spec at nodes/0/layer: 'units' is a required property"),
])
def test_schema_rejects_with_a_clear_message(obj, message):
    with pytest.raises(ConfigError) as info:
        Network.from_dict(obj)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize(("obj", "match"), [
    ({"format": FORMAT, "inputs": [{"name": "x", "shape": [4]}], "outputs": ["n"],
      "nodes": [{"name": "n", "layer": {"type": "Dense", "units": 2}, "inputs": ["y"]}]},
     r"Layer 'n' \(Dense\) takes 'y', which is not an input or an earlier node"),
    ({"format": FORMAT, "inputs": [{"name": "x", "shape": [4]}], "outputs": ["x"],
      "nodes": [{"name": "x", "layer": {"type": "Dense", "units": 2}, "inputs": ["x"]}]},
     r"the name 'x' is already taken"),
    ({"format": FORMAT, "inputs": [{"name": "x", "shape": [4]}], "outputs": ["z"],
      "nodes": [{"name": "n", "layer": {"type": "Dense", "units": 2}, "inputs": ["x"]}]},
     r"Unknown output 'z'"),
    (_spec(layers=[{"type": "Conv2d", "filters": 2, "kernel_size": 3, "stride": 2,
                    "padding": "same"}]),
     r"Invalid network spec at layers/0: Conv2d: padding=\"same\" needs stride=1"),
    (_spec(loss={"name": "hinge"}), r"Unknown loss 'hinge'. Valid: \["),
])
def test_semantic_errors_after_schema(obj, match):
    with pytest.raises(ConfigError, match=match):
        Network.from_dict(obj)


def test_not_json():
    with pytest.raises(ConfigError, match="A network spec must be JSON"):
        Network.from_json("{not json")


def test_schema_matches_the_layer_registry():
    s = schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert sorted(s["$defs"]["layer"]["properties"]["type"]["enum"]) == sorted(LAYERS)
    for name, cls in LAYERS.items():
        definition = s["$defs"][name]
        fields = dataclasses.fields(cls)
        assert set(definition["properties"]) == {"type"} | {f.name for f in fields}, name
        required = {f.name for f in fields if f.default is dataclasses.MISSING}
        assert set(definition["required"]) == {"type"} | required, name
        for f in fields:
            if f.default is not dataclasses.MISSING:
                assert definition["properties"][f.name]["default"] == f.default, (name, f.name)


# -- API errors -------------------------------------------------------------------------

def test_sequential_needs_an_input_shape():
    with pytest.raises(ConfigError, match="start with Input"):
        Sequential([Dense(3)])
    with pytest.raises(ConfigError, match="Give the input shape once"):
        Sequential([Input((3,)), Dense(3)], input_shape=(3,))
    with pytest.raises(ConfigError, match=r"Layer 1 must be a sparkdl.nn layer"):
        Sequential([Dense(3), torch.nn.ReLU()], input_shape=(3,))


def test_graph_input_must_be_declared():
    x, y = Input((3,), name="x"), Input((3,), name="y")
    with pytest.raises(ConfigError, match=r"uses input 'y', which is not among inputs=\['x'\]"):
        Network(inputs=x, outputs=Add()(x, y))
    with pytest.raises(ConfigError, match="Input names must be unique"):
        Network(inputs=[x, Input((3,), name="x")], outputs=Dense(2)(x))
    with pytest.raises(ConfigError, match="node name must match"):
        Dense(2)(x, name="a.b")


def test_an_equal_input_made_separately_stands_for_the_declared_one():
    net = Network(inputs=Input((3,), name="x"), outputs=Dense(2)(Input((3,), name="x")))
    assert net.output_shape == (2,)
    assert net.to_dict()["nodes"][0]["inputs"] == ["x"]
    with pytest.raises(ConfigError, match=r"uses input 'x', which is not among"):
        Network(inputs=Input((3,), name="x"), outputs=Dense(2)(Input((4,), name="x")))


def test_a_network_without_layers_is_refused_when_made():
    x = Input((3,), name="x")
    with pytest.raises(ConfigError, match=r"at least one layer between its inputs and outputs. "
                                          r"Received: outputs=\['x'\], all inputs"):
        Network(inputs=x, outputs=x)
    # With a layer, an input may also be an output, and the spec round-trips.
    both = Network(inputs=x, outputs=[x, Dense(2)(x)])
    assert both.output_shape == ((3,), (2,))
    assert Network.from_json(both.to_json()) == both


def test_a_name_with_a_final_newline_is_refused():
    x = Input((3,), name="x")
    with pytest.raises(ConfigError, match="node name must match"):
        Dense(2)(x, name="n\n")
    with pytest.raises(ConfigError, match="Input: name must match"):
        Input((3,), name="x\n")
    text = json.dumps({"format": FORMAT, "inputs": [{"name": "a", "shape": [8]}],
                       "nodes": [{"name": "n\n", "layer": {"type": "Dense", "units": 3},
                                  "inputs": ["a"]}], "outputs": ["n\n"]})
    with pytest.raises(ConfigError, match=r"Layer 'n\\n' \(Dense\): a node name must match"):
        Network.from_json(text)


@pytest.mark.parametrize("params, shown", [({"lr": float("nan")}, "lr=nan"),
                                           ({"betas": [0.9, float("inf")]}, "betas=[0.9, inf]")])
def test_non_finite_head_params_are_refused_naming_them(params, shown):
    with pytest.raises(ConfigError, match=r"optimizer params must be finite numbers: JSON has no "
                                          rf"NaN or Infinity. Received: {re.escape(shown)}"):
        _mlp(optimizer={"name": "adam", "params": params})
    text = _mlp().to_json()[:-1] + ',"optimizer":{"name":"sgd","params":{"lr":NaN}}}'
    with pytest.raises(ConfigError, match="Received: lr=nan"):
        Network.from_json(text)


def test_infinite_epsilon_is_refused_so_every_spec_can_be_written():
    text = _mlp().to_json().replace('{"rate":0.1,"type":"Dropout"}',
                                    '{"epsilon":Infinity,"type":"LayerNorm"}')
    with pytest.raises(ConfigError, match="epsilon must be a positive, finite float. "
                                          "Received: epsilon=inf"):
        Network.from_json(text)


# -- Architecture: a spec travels as JSON, never pickled ---------------------------------

def test_architecture_of_network_is_the_canonical_json(monkeypatch):
    net = _mlp(loss="cross_entropy")
    arch = Architecture.of(net)
    assert arch.kind == "spec"
    assert arch.payload == net.to_json().encode("utf-8")

    import cloudpickle

    def refuse(*args, **kwargs):
        raise AssertionError("a spec must not be unpickled")

    monkeypatch.setattr(cloudpickle, "loads", refuse)
    torch.manual_seed(0)
    source = net.build()
    built = Architecture("spec", arch.payload).build(state_dict_of(source))
    x = torch.randn(4, 64)
    assert torch.equal(built.eval()(x), source.eval()(x))
    assert isinstance(Architecture.of(net).build(), torch.nn.Sequential)
