"""sparkdl.nn layers: inferred shapes and parameter counts agree with real torch modules."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sparkdl.errors import ConfigError
from sparkdl.nn import (
    GRU,
    LAYERS,
    LSTM,
    Activation,
    Add,
    AvgPool1d,
    AvgPool2d,
    BatchNorm,
    Concatenate,
    Conv1d,
    Conv2d,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAveragePooling,
    Input,
    Layer,
    LayerNorm,
    Linear,
    MaxPool1d,
    MaxPool2d,
    MultiHeadAttention,
    Network,
    Reshape,
    SequencePooling,
    Sequential,
    TransformerEncoder,
)

# (layer, input shape without batch, input dtype)
ONE_INPUT = [
    (Dense(7), (5,), "float32"),
    (Dense(7, activation="gelu", use_bias=False), (4, 5), "float32"),
    (Linear(3, activation="softmax"), (6,), "float32"),
    *[(Activation(name), (3, 4), "float32")
      for name in ("relu", "gelu", "tanh", "sigmoid", "softmax", "leaky_relu")],
    (Dropout(0.5), (9,), "float32"),
    (Flatten(), (2, 3, 4), "float32"),
    (Reshape((4, -1)), (2, 3, 4), "float32"),
    (Reshape((1, 8, 8)), (64,), "float32"),
    (BatchNorm(), (6,), "float32"),
    (BatchNorm(), (3, 10), "float32"),
    (BatchNorm(momentum=0.2), (3, 5, 5), "float32"),
    (LayerNorm(), (7, 12), "float32"),
    (Embedding(50, 6), (9,), "int64"),
    (Conv1d(4, 3), (2, 11), "float32"),
    (Conv1d(4, 4, padding="same", activation="relu"), (2, 11), "float32"),
    (Conv1d(4, 3, stride=2, padding=1, use_bias=False), (2, 11), "float32"),
    (Conv2d(8, 3), (1, 8, 8), "float32"),
    (Conv2d(8, (3, 2), stride=(2, 1), padding=(1, 0), activation="tanh"), (3, 9, 7), "float32"),
    (Conv2d(5, 3, padding="same"), (2, 6, 5), "float32"),
    (MaxPool1d(2), (3, 9), "float32"),
    (MaxPool2d(2), (3, 9, 8), "float32"),
    (MaxPool2d(3, stride=1, padding=1), (3, 5, 5), "float32"),
    (AvgPool1d(3, stride=2), (3, 10), "float32"),
    (AvgPool2d((2, 3)), (3, 8, 9), "float32"),
    (GlobalAveragePooling(), (4, 10), "float32"),
    (GlobalAveragePooling(), (4, 5, 6), "float32"),
    (LSTM(8), (6, 5), "float32"),
    (LSTM(8, return_sequences=True), (6, 5), "float32"),
    (GRU(8), (6, 5), "float32"),
    (GRU(8, return_sequences=True), (6, 5), "float32"),
    (MultiHeadAttention(num_heads=2, key_dim=4), (6, 8), "float32"),
    (TransformerEncoder(num_heads=2, ff_dim=16), (6, 8), "float32"),
    (TransformerEncoder(num_heads=4, ff_dim=8, dropout=0.0, activation="gelu"), (3, 8),
     "float32"),
    (SequencePooling(), (6, 8), "float32"),
    (SequencePooling(mode="max"), (6, 8), "float32"),
]


def _batch(shape, dtype, n=3):
    if dtype == "int64":
        return torch.randint(0, 10, (n, *shape))
    return torch.randn(n, *shape)


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize(("layer", "shape", "dtype"), ONE_INPUT,
                         ids=[f"{type(c[0]).__name__}-{c[1]}" for c in ONE_INPUT])
def test_inferred_shape_and_params_match_torch(layer, shape, dtype):
    net = Sequential([Input(shape, dtype=dtype), layer])
    module = net.build().eval()
    with torch.no_grad():
        out = module(_batch(shape, dtype))
    assert tuple(out.shape) == (3, *net.output_shape)
    assert net.param_count() == _numel(module)
    assert Layer.from_dict(layer.to_dict()) == layer


def test_every_registered_layer_is_exercised():
    covered = {type(c[0]).__name__ for c in ONE_INPUT} | {"Add", "Concatenate"}
    assert covered == set(LAYERS)


@pytest.mark.parametrize(("layer", "shapes", "expected"), [
    (Add(), [(4, 3), (4, 3), (4, 3)], (4, 3)),
    (Concatenate(), [(4, 3), (4, 5)], (4, 8)),
    (Concatenate(axis=1), [(2, 5), (3, 5)], (5, 5)),
    (Concatenate(axis=-2), [(2, 5), (3, 5)], (5, 5)),
])
def test_merge_layers(layer, shapes, expected):
    inputs = [Input(s, name=f"x{i}") for i, s in enumerate(shapes)]
    net = Network(inputs=inputs, outputs=layer(*inputs))
    assert net.output_shape == expected
    out = net.build()(*[_batch(s, "float32") for s in shapes])
    assert tuple(out.shape) == (3, *expected)


def test_layer_json_writes_every_attribute():
    assert Conv2d(8, 3).to_dict() == {
        "type": "Conv2d", "filters": 8, "kernel_size": 3, "stride": 1, "padding": 0,
        "activation": None, "use_bias": True}
    assert Conv2d(8, (3, 2)).to_dict()["kernel_size"] == [3, 2]
    assert Layer.from_dict(Conv2d(8, (3, 2)).to_dict()) == Conv2d(8, (3, 2))
    assert MaxPool2d(2).to_dict() == {"type": "MaxPool2d", "pool_size": 2, "stride": None,
                                      "padding": 0}
    assert Dropout(0).to_dict() == {"type": "Dropout", "rate": 0.0}


def test_layers_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Dense(3).units = 4


@pytest.mark.parametrize(("make", "match"), [
    (lambda: Dense(0), r"Dense: units must be a positive integer. Received: units=0"),
    (lambda: Dense(3, activation="swish"), r"activation must be one of .*'relu'.*swish"),
    (lambda: Dropout(1.0), r"rate must be in \[0, 1\)"),
    (lambda: Conv2d(4, 3, stride=2, padding="same"), r'padding="same" needs stride=1'),
    (lambda: Conv2d(4, (3, 3, 3)), r"kernel_size must be an int >= 1 or a pair"),
    (lambda: MaxPool2d(2, padding=2), r"padding must be at most half of pool_size"),
    (lambda: Reshape((-1, -1)), r"at most one -1"),
    (lambda: Reshape((-1.0, 4)), r"Received: shape=\(-1.0, 4\)"),
    (lambda: Reshape((2.0, 4)), r"positive ints with at most one -1"),
    (lambda: Concatenate(axis=0), r"axis must be a non-zero int"),
    (lambda: Embedding(0, 3), r"input_dim must be a positive integer"),
    (lambda: TransformerEncoder(2, 8, activation="tanh"), r"'relu' or 'gelu'"),
    (lambda: Input((0, 3)), r"shape must be a non-empty sequence of positive ints"),
    (lambda: Input((3,), dtype="float64"), r"dtype must be one of"),
])
def test_bad_attributes(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


@pytest.mark.parametrize(("layers", "shape", "dtype", "message"), [
    ([Dense(64), Conv2d(8, 3)], (10,), "float32",
     "Layer 1 (Conv2d) expected input shape (channels, height, width), received (64,)"),
    ([Conv2d(3, 5)], (1, 3, 3), "float32",
     "Layer 0 (Conv2d) expected input shape (channels, height, width) with spatial sizes "
     ">= 5, received (1, 3, 3)"),
    ([Conv1d(3, 2)], (1, 3, 3), "float32",
     "Layer 0 (Conv1d) expected input shape (channels, length), received (1, 3, 3)"),
    ([Flatten(), LSTM(4)], (2, 3), "float32",
     "Layer 1 (LSTM) expected input shape (sequence, features), received (6,)"),
    ([MultiHeadAttention(num_heads=2, key_dim=4)], (5, 6), "float32",
     "Layer 0 (MultiHeadAttention) expected input shape (sequence, 8) as num_heads * "
     "key_dim = 2 * 4, received (5, 6)"),
    ([TransformerEncoder(num_heads=4, ff_dim=8)], (5, 6), "float32",
     "Layer 0 (TransformerEncoder) expected input shape (sequence, d_model) with d_model "
     "divisible by num_heads=4, received (5, 6)"),
    ([Reshape((5, 5))], (24,), "float32",
     "Layer 0 (Reshape) expected input shape 25 elements to fill (5, 5), received (24,)"),
    ([GlobalAveragePooling()], (24,), "float32",
     "Layer 0 (GlobalAveragePooling) expected input shape (channels, length) or "
     "(channels, height, width), received (24,)"),
    ([Embedding(10, 4)], (5,), "float32",
     "Layer 0 (Embedding) expects int64 input, received float32"),
    ([Dense(4)], (5,), "int64", "Layer 0 (Dense) expects float32 input, received int64"),
])
def test_wrong_shape_names_layer_and_both_shapes(layers, shape, dtype, message):
    with pytest.raises(ConfigError) as info:
        Sequential([Input(shape, dtype=dtype), *layers])
    assert str(info.value) == message


def test_graph_shape_errors_name_the_node():
    a, b = Input((8,), name="a"), Input((4,), name="b")
    with pytest.raises(ConfigError) as info:
        Network(inputs=[a, b], outputs=Add()(a, b, name="total"))
    assert str(info.value) == ("Layer 'total' (Add) expected input shape (8,) for every "
                               "input, received [(8,), (4,)]")
    c = Input((2, 4), name="c")
    with pytest.raises(ConfigError, match=r"Layer 'concatenate' \(Concatenate\) expected "
                                          r"input shape shapes of one rank"):
        Network(inputs=[a, c], outputs=Concatenate()(a, c))
    with pytest.raises(ConfigError, match=r"Layer 'dense' \(Dense\) takes 1 input. "
                                          r"Received: 2 \['a', 'b'\]"):
        Network(inputs=[a, b], outputs=Dense(3)(a, b))
    with pytest.raises(ConfigError, match=r"takes at least 2 inputs"):
        Network(inputs=a, outputs=Add()(a))


# -- variable sequence lengths ----------------------------------------------------------

# (layers after Input((None, 8)), output shape, whether the output keeps the sequence axis)
RAGGED = [
    ([LSTM(6)], (6,), False),
    ([LSTM(6, return_sequences=True)], (None, 6), True),
    ([GRU(6)], (6,), False),
    ([GRU(6, return_sequences=True)], (None, 6), True),
    ([LSTM(6, return_sequences=True), LayerNorm(), Dropout(0.2), GRU(5)], (5,), False),
    ([TransformerEncoder(num_heads=2, ff_dim=16, dropout=0.0)], (None, 8), True),
    ([TransformerEncoder(num_heads=2, ff_dim=16, dropout=0.0), SequencePooling()], (8,), False),
    ([MultiHeadAttention(num_heads=2, key_dim=4)], (None, 8), True),
    ([Dense(4, activation="relu"), SequencePooling()], (4,), False),
    ([SequencePooling(mode="max"), Dense(3)], (3,), False),
]
RAGGED_IDS = ["-".join(type(x).__name__ for x in c[0]) + ("-seq" if c[2] else "") for c in RAGGED]


def _ragged(lengths, max_len, features=8, seed=0):
    """A padded float batch whose padding is noise (so masking, not zeros, must hide it)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(len(lengths), max_len, features, generator=gen)


@pytest.mark.parametrize(("layers", "expected", "keeps_axis"), RAGGED, ids=RAGGED_IDS)
def test_variable_length_shapes_and_params_match_fixed(layers, expected, keeps_axis):
    net = Sequential([Input((None, 8)), *layers])
    fixed = Sequential([Input((7, 8)), *layers])
    assert net.output_shape == expected
    assert net.param_count() == fixed.param_count() == _numel(net.build())
    assert Network.from_json(net.to_json()) == net


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train-no-dropout"])
@pytest.mark.parametrize(("layers", "expected", "keeps_axis"), RAGGED, ids=RAGGED_IDS)
def test_outputs_are_invariant_to_padding(layers, expected, keeps_axis, train):
    torch.manual_seed(0)
    layers = [x for x in layers if not isinstance(x, Dropout)] if train else layers
    module = Sequential([Input((None, 8)), *layers]).build().train(train)
    lengths = torch.tensor([2, 5, 3, 1])
    x = _ragged(lengths, 9)
    with torch.no_grad():
        long_out = module(x, lengths)
        short_out = module(x[:, :5], lengths)
        alone = [module(x[i:i + 1, :n])[0] for i, n in enumerate(lengths.tolist())]
    if keeps_axis:
        assert long_out.shape[:2] == (4, 9) and short_out.shape[:2] == (4, 5)
        torch.testing.assert_close(long_out[:, :5], short_out, atol=1e-5, rtol=1e-5)
        for i, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(long_out[i, :n], alone[i], atol=1e-5, rtol=1e-5)
            assert not long_out[i, n:].any()  # padded positions are zeros
    else:
        torch.testing.assert_close(long_out, short_out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(long_out, torch.stack(alone), atol=1e-5, rtol=1e-5)


def test_without_lengths_every_position_is_valid():
    torch.manual_seed(0)
    for layers, _, _ in RAGGED:
        module = Sequential([Input((None, 8)), *layers]).build().eval()
        x = _ragged([6, 6], 6)
        with torch.no_grad():
            torch.testing.assert_close(module(x), module(x, torch.tensor([6, 6])),
                                       atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", [LSTM, GRU])
def test_last_step_is_each_rows_last_valid_step(kind):
    torch.manual_seed(0)
    last = Sequential([Input((None, 8)), kind(6)]).build().eval()
    steps = Sequential([Input((None, 8)), kind(6, return_sequences=True)]).build().eval()
    steps.load_state_dict(last.state_dict())
    lengths = torch.tensor([3, 7, 1])
    x = _ragged(lengths, 7)
    with torch.no_grad():
        out, seq = last(x, lengths), steps(x, lengths)
        torch.testing.assert_close(out, seq[torch.arange(3), lengths - 1])
        # Not the output at max_len - 1, which has read the padding.
        assert not torch.allclose(out[0], last(x)[0])


def test_sequence_pooling_pools_valid_positions_only():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [-4.0], [6.0]]])
    lengths = torch.tensor([2, 3])
    mean = Sequential([Input((None, 1)), SequencePooling()]).build()
    peak = Sequential([Input((None, 1)), SequencePooling(mode="max")]).build()
    torch.testing.assert_close(mean(x, lengths), torch.tensor([[2.0], [4 / 3]]))
    torch.testing.assert_close(peak(x, lengths), torch.tensor([[3.0], [6.0]]))
    torch.testing.assert_close(mean(x), x.mean(dim=1))


def test_embedding_stack_on_token_ids_is_invariant_to_padding():
    torch.manual_seed(0)
    net = Sequential([Input((None,), dtype="int64"), Embedding(30, 8), LSTM(8),
                      Dense(2)])
    assert net.output_shape == (2,)
    module = net.build().eval()
    tokens = torch.tensor([[4, 5, 0, 0, 0, 0], [7, 8, 9, 1, 0, 0]])
    lengths = torch.tensor([2, 4])
    with torch.no_grad():
        torch.testing.assert_close(module(tokens, lengths), module(tokens[:, :4], lengths))
        torch.testing.assert_close(module(tokens, lengths)[0], module(tokens[:1, :2])[0])


@pytest.mark.parametrize(("layers", "shape", "dtype", "message"), [
    ([Dense(4)], (None,), "float32",
     "Layer 0 (Dense) expected input shape (..., features) with a fixed number of features, "
     "e.g. (None, 1) for one feature per step, received (None,)"),
    ([Embedding(10, 4), Flatten()], (None,), "int64",
     "Layer 1 (Flatten) needs fixed sizes, received (None, 4) with a variable sequence axis "
     "(None). Reduce it first, e.g. with LSTM or GRU (return_sequences=False) or "
     "SequencePooling"),
    ([GlobalAveragePooling()], (None, 4), "float32",
     "Layer 0 (GlobalAveragePooling) needs fixed sizes, received (None, 4) with a variable "
     "sequence axis (None). Reduce it first, e.g. with LSTM or GRU (return_sequences=False) "
     "or SequencePooling"),
    ([LSTM(4, return_sequences=True), Reshape((-1,))], (None, 3), "float32",
     "Layer 1 (Reshape) needs fixed sizes, received (None, 4) with a variable sequence axis "
     "(None). Reduce it first, e.g. with LSTM or GRU (return_sequences=False) or "
     "SequencePooling"),
    ([LayerNorm()], (None,), "float32",
     "Layer 0 (LayerNorm) expected input shape (..., features) with a fixed number of "
     "features, e.g. (None, 1) for one feature per step, received (None,)"),
])
def test_a_variable_axis_where_a_fixed_size_is_needed_is_refused(layers, shape, dtype, message):
    with pytest.raises(ConfigError) as info:
        Sequential([Input(shape, dtype=dtype), *layers])
    assert str(info.value) == message


def test_variable_length_input_and_merge_rules():
    assert Input((None,), dtype="int64").shape == (None,)
    assert Input([None, 3]).to_dict() == {"name": "input", "shape": [None, 3], "dtype": "float32"}
    with pytest.raises(ConfigError, match=r"only the first axis may be None.*\(3, None\)"):
        Input((3, None))
    with pytest.raises(ConfigError, match=r"shape must be a non-empty sequence"):
        Input((None, 0))
    with pytest.raises(ConfigError, match="mode must be 'mean' or 'max'. Received: mode='sum'"):
        SequencePooling(mode="sum")
    a, b = Input((None, 4), name="a"), Input((None, 2), name="b")
    assert Network(inputs=[a, b], outputs=Concatenate()(a, b)).output_shape == (None, 6)
    with pytest.raises(ConfigError, match=r"a fixed size on axis=1 \(it is the variable"):
        Network(inputs=[a, b], outputs=Concatenate(axis=1)(a, a))
    fixed = Input((5, 4), name="f")
    with pytest.raises(ConfigError, match=r"\(Add\) expected input shape \(None, 4\) for every"):
        Network(inputs=[a, fixed], outputs=Add()(a, fixed))


def test_bad_lengths_are_refused_clearly():
    module = Sequential([Input((None, 3)), LSTM(2)]).build()
    x = torch.randn(2, 4, 3)
    with pytest.raises(ConfigError, match=r"lengths must be in \[1, 4\].*min=0, max=2"):
        module(x, torch.tensor([0, 2]))
    with pytest.raises(ConfigError, match=r"lengths must be in \[1, 4\].*max=5"):
        module(x, torch.tensor([5, 2]))
    with pytest.raises(ConfigError, match=r"one int per row, shape \(batch,\)"):
        module(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ConfigError, match="lengths must be integers"):
        module(x, torch.tensor([1.0, 2.0]))
    fixed = Sequential([Input((4, 3)), LSTM(2)]).build()
    with pytest.raises(ConfigError, match="no variable-length input, so it takes no lengths"):
        fixed(x, torch.tensor([1, 2]))
    # A list works as well as a tensor.
    assert module(x, [4, 2]).shape == (2, 2)
