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
    Embedding,
    Flatten,
    Input,
    LayerNorm,
    MaxPool2d,
    Network,
    SequencePooling,
    Sequential,
    TransformerEncoder,
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
    steps = 7  # a variable sequence length (None) is padded to this
    shapes = [tuple(steps if d is None else d for d in i.shape) for i in net.inputs]
    batch = [torch.randint(0, 10, (2, *s)) if i.dtype == "int64" else torch.randn(2, *s)
             for i, s in zip(net.inputs, shapes)]
    out_shape = [2, *(steps if d is None else d for d in expected["output_shape"])]
    with torch.no_grad():
        assert list(module(*batch).shape) == out_shape
        if any(d is None for i in net.inputs for d in i.shape):
            assert list(module(*batch, torch.tensor([3, 7])).shape) == out_shape


def test_existing_vectors_have_fixed_shapes_and_ragged_ones_variable():
    # The older vectors are unchanged (byte-identical canonical JSON is checked above).
    ragged = {p.stem for p in VECTORS if "[null]" in json.loads(p.read_text())["expected"][
        "canonical_json"]}
    assert ragged == {"network_ragged_lstm", "network_ragged_transformer"}


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


# -- variable sequence lengths -----------------------------------------------------------

def _ragged_graph() -> Network:
    tokens = Input((None,), name="tokens", dtype="int64")
    h = TransformerEncoder(num_heads=2, ff_dim=16, dropout=0.0)(Embedding(20, 8)(tokens))
    pooled = Concatenate()(SequencePooling()(h), SequencePooling(mode="max")(h))
    return Network(inputs=tokens, outputs=Dense(2)(LayerNorm()(pooled)))


def test_variable_length_spec_round_trip():
    net = _ragged_graph()
    text = net.to_json()
    assert '"shape":[null]' in text
    again = Network.from_json(text)
    assert again == net and again.to_json() == text
    assert again.inputs[0].shape == (None,)
    assert again.output_shape == (2,)
    seq = Sequential([Embedding(20, 8)], input_shape=(None,), input_dtype="int64")
    assert seq.output_shape == (None, 8)
    assert Network.from_json(seq.to_json()) == seq


def test_graph_takes_lengths_after_its_inputs_or_by_keyword():
    torch.manual_seed(0)
    module = _ragged_graph().build().eval()
    tokens = torch.tensor([[3, 4, 0, 0, 0], [5, 6, 7, 8, 9], [1, 0, 0, 0, 0]])
    lengths = torch.tensor([2, 5, 1])
    with torch.no_grad():
        out = module(tokens, lengths)
        torch.testing.assert_close(out, module(tokens, lengths=lengths))
        longer = torch.cat([tokens, torch.full((3, 4), 7)], dim=1)  # noisy padding
        torch.testing.assert_close(out, module(longer, lengths), atol=1e-5, rtol=1e-5)
        for i, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(out[i], module(tokens[i:i + 1, :n])[0], atol=1e-5,
                                       rtol=1e-5)
        assert module(tokens).shape == (3, 2)  # without lengths: every position counts
    with pytest.raises(ConfigError, match="takes 1 inputs .*then optionally lengths"):
        module(tokens, lengths, lengths)


def test_multi_input_graph_lengths_reach_every_variable_input():
    a, b = Input((None, 3), name="a"), Input((4,), name="b")
    pooled = SequencePooling()(a)
    net = Network(inputs=[a, b], outputs=Concatenate()(pooled, b))
    module = net.build()
    x = torch.randn(2, 6, 3)
    y = torch.randn(2, 4)
    lengths = torch.tensor([2, 6])
    out = module(x, y, lengths)
    torch.testing.assert_close(out[0, :3], x[0, :2].mean(dim=0))
    torch.testing.assert_close(out, module(x, y, lengths=lengths))


def test_schema_takes_null_only_as_a_dimension():
    def spec(shape):
        return {"format": FORMAT, "inputs": [{"name": "x", "shape": shape}],
                "layers": [{"type": "Dense", "units": 2}]}

    assert Network.from_dict(spec([None, 4])).output_shape == (None, 2)
    with pytest.raises(ConfigError, match="only the first axis may be None"):
        Network.from_dict(spec([4, None]))
    with pytest.raises(ConfigError, match=r"'4' is not of type 'integer', 'null'"):
        Network.from_dict(spec([None, "4"]))


def test_an_embedding_lstm_learns_a_length_dependent_task():
    """Is the row longer than 4 tokens? Only the true lengths tell (the padding is random)."""
    from sparkdl.nn import LSTM

    torch.manual_seed(0)
    net = Sequential([Input((None,), dtype="int64"), Embedding(6, 8), LSTM(16), Dense(2)])
    module = net.build()
    optimizer = torch.optim.Adam(module.parameters(), lr=0.02)

    def batch(n=32, max_len=9):
        lengths = torch.randint(1, max_len, (n,))
        tokens = torch.randint(1, 6, (n, max_len))  # padding holds tokens too
        return tokens, lengths, (lengths > 4).long()

    for _ in range(150):
        tokens, lengths, labels = batch()
        loss = torch.nn.functional.cross_entropy(module(tokens, lengths), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tokens, lengths, labels = batch(n=256)
    with torch.no_grad():
        accuracy = (module(tokens, lengths).argmax(dim=1) == labels).float().mean().item()
    assert accuracy > 0.9
