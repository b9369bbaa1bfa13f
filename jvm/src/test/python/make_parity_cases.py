"""Write what Python's ``Network.from_json`` says about many specs, for ScalaTest to compare.

Each case is a JSON text (valid, non-canonical, or broken in one place) and Python's verdict:
the canonical JSON, parameter count and output shapes, or the exact ``ConfigError`` message.
``PythonParitySuite`` checks that ``sparkdl.nn.Network.fromJson`` agrees on every case.

Python's ints are unbounded; the JVM side holds sizes in 32-bit ints and refuses larger
ones. Cases with such a value are marked ``beyond_int32``: there Scala must refuse the spec,
naming the value, instead of giving Python's verdict.

The cases are the test vectors, each attribute of each layer replaced by values of every
JSON kind (and removed, and joined by an unknown one), plus hand-written specs for graph,
schema and number-formatting corners.

Run from the repository root after changing ``sparkdl/nn`` or the schema:

    .venv/bin/python jvm/src/test/python/make_parity_cases.py
"""

from __future__ import annotations

import copy
import json
import math
import random
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))

from sparkdl.errors import ConfigError  # noqa: E402
from sparkdl.nn import Network  # noqa: E402

OUT = ROOT / "jvm/src/test/resources/sparkdl/nn/python-parity-cases.json"
REPRS = ROOT / "jvm/src/test/resources/sparkdl/json/python-reprs.json"
FORMAT = "sparkdl.network/v1"

# One of every JSON kind, and the numbers where int/float and range checks differ.
VALUES = [
    0,
    2,
    -1,
    2.0,
    0.5,
    -1.0,
    "x",
    "same",
    None,
    True,
    [2, 2],
    [3, 3, 3],
    [1.0, 2],
    {},
    10**12,
]
FEW_VALUES = [0, 2.0, "x", None, [2, 2], 10**12]  # for the large graph vector


def verdict(text: str) -> dict:
    try:
        net = Network.from_json(text)
    except ConfigError as e:
        return {"error": str(e)}
    except Exception as e:  # noqa: BLE001 - Python's own bugs are recorded, not hidden
        return {"python_exception": f"{type(e).__name__}: {e}"}
    try:
        canonical = net.to_json()
    except ValueError as e:
        return {"python_exception": f"ValueError: {e}"}
    shapes = net.output_shape
    single = shapes and (shapes[0] is None or isinstance(shapes[0], int))
    shapes = [list(shapes)] if single else [list(s) for s in shapes]
    return {"canonical_json": canonical, "param_count": net.param_count(), "output_shapes": shapes}


# Vectors mutated whole (so later layers see the change); the others layer by layer, to keep
# the fixture small.
WHOLE = ("network_mlp", "network_functional_graph", "network_ragged_transformer")
GRAPHS = ("network_functional_graph", "network_ragged_transformer")  # mutated with FEW_VALUES


def alone(spec: dict) -> dict:
    """A sequential spec's layers, each on its own input of the shape it gets in ``spec``."""
    net = Network.from_dict(spec)
    dtype = spec["inputs"][0].get("dtype", "float32")
    layers = []
    for i, layer in enumerate(spec["layers"]):
        (shape,) = net._shapes[str(i)]
        layers.append(
            {"input": {"name": "x", "shape": list(shape), "dtype": dtype}, "layer": layer}
        )
        dtype = "float32"
    return {"format": FORMAT, "inputs": [], "layers": layers}


def mutations(spec: dict, values: list):
    if spec["layers" if "layers" in spec else "nodes"] and "input" in spec.get("layers", [{}])[0]:
        for i, item in enumerate(spec["layers"]):
            single = {"format": FORMAT, "inputs": [item["input"]], "layers": [item["layer"]]}
            for name, mutated in _mutations(single, values):
                yield name.replace("layers/0/", f"layers/{i}/"), mutated
        return
    yield from _mutations(spec, values)


def _mutations(spec: dict, values: list):
    """(name, spec) for each attribute of each layer replaced, removed, or joined by another."""
    key = "layers" if "layers" in spec else "nodes"
    for i, item in enumerate(spec[key]):
        layer = item if key == "layers" else item["layer"]
        where = f"{key}/{i}/{layer['type']}"
        for attr in [a for a in layer if a != "type"]:
            for value in values:
                out = copy.deepcopy(spec)
                target = out[key][i] if key == "layers" else out[key][i]["layer"]
                target[attr] = value
                yield f"{where}.{attr}={value!r}", out
            out = copy.deepcopy(spec)
            target = out[key][i] if key == "layers" else out[key][i]["layer"]
            del target[attr]
            yield f"{where} without {attr}", out
        out = copy.deepcopy(spec)
        (out[key][i] if key == "layers" else out[key][i]["layer"])["bogus"] = 1
        yield f"{where} with bogus", out
        for kind in ("Dense2", None, 3):
            out = copy.deepcopy(spec)
            (out[key][i] if key == "layers" else out[key][i]["layer"])["type"] = kind
            yield f"{where} type={kind!r}", out


def layer_cases():
    """Each layer alone on inputs of several ranks and dtypes (shape errors and successes)."""
    layers = [
        {"type": "Dense", "units": 7},
        {"type": "Activation", "name": "gelu"},
        {"type": "Dropout", "rate": 0},
        {"type": "Flatten"},
        {"type": "Reshape", "shape": [4, -1]},
        {"type": "Reshape", "shape": [5, 5]},
        {"type": "BatchNorm", "momentum": 1},
        {"type": "LayerNorm", "epsilon": 0.001},
        {"type": "Embedding", "input_dim": 50, "output_dim": 6},
        {
            "type": "Conv1d",
            "filters": 4,
            "kernel_size": 3,
            "stride": 2,
            "padding": 1,
            "use_bias": False,
        },
        {
            "type": "Conv1d",
            "filters": 4,
            "kernel_size": [4],
            "padding": "same",
            "activation": "relu",
        },
        {
            "type": "Conv2d",
            "filters": 8,
            "kernel_size": [3, 2],
            "stride": [2, 1],
            "padding": [1, 0],
        },
        {"type": "Conv2d", "filters": 5, "kernel_size": 5},
        {"type": "Conv2d", "filters": 5, "kernel_size": 3, "padding": "same", "stride": [1, 1]},
        {"type": "MaxPool1d", "pool_size": 2},
        {"type": "MaxPool2d", "pool_size": 3, "stride": 1, "padding": 1},
        {"type": "AvgPool1d", "pool_size": 3, "stride": 2},
        {"type": "AvgPool2d", "pool_size": [2, 3]},
        {"type": "AvgPool2d", "pool_size": 4, "stride": 3},
        {"type": "GlobalAveragePooling"},
        {"type": "LSTM", "units": 8, "return_sequences": True},
        {"type": "GRU", "units": 8},
        {"type": "MultiHeadAttention", "num_heads": 2, "key_dim": 4},
        {
            "type": "TransformerEncoder",
            "num_heads": 2,
            "ff_dim": 16,
            "dropout": 0,
            "activation": "gelu",
        },
        {"type": "SequencePooling"},
        {"type": "SequencePooling", "mode": "max"},
        {"type": "Add"},
        {"type": "Concatenate"},
    ]
    inputs = [
        ([24], "float32"),
        ([6, 8], "float32"),
        ([2, 11], "float32"),
        ([3, 9, 7], "float32"),
        ([1, 3, 3], "float32"),
        ([9], "int64"),
        ([2, 3, 4], "int64"),
        ([2, 100000, 100000], "float32"),
        ([None], "float32"),
        ([None, 8], "float32"),
        ([None], "int64"),
        ([None, 3, 4], "float32"),
    ]
    for layer in layers:
        for shape, dtype in inputs:
            spec = {
                "format": FORMAT,
                "inputs": [{"name": "x", "shape": shape, "dtype": dtype}],
                "layers": [layer],
            }
            yield f"{layer['type']} on {shape} {dtype}", spec


def graph_cases():
    base = lambda **kw: {"format": FORMAT, **kw}  # noqa: E731
    a, b = {"name": "a", "shape": [8]}, {"name": "b", "shape": [4]}
    c = {"name": "c", "shape": [2, 4]}
    dense = {"type": "Dense", "units": 3}
    yield (
        "add mismatch",
        base(
            inputs=[a, b],
            nodes=[{"name": "total", "layer": {"type": "Add"}, "inputs": ["a", "b"]}],
            outputs=["total"],
        ),
    )
    yield (
        "concat rank",
        base(
            inputs=[a, c],
            nodes=[{"name": "j", "layer": {"type": "Concatenate"}, "inputs": ["a", "c"]}],
            outputs=["j"],
        ),
    )
    yield (
        "concat axis 1",
        base(
            inputs=[c, {"name": "d", "shape": [3, 4]}],
            nodes=[
                {"name": "j", "layer": {"type": "Concatenate", "axis": 1}, "inputs": ["c", "d"]}
            ],
            outputs=["j"],
        ),
    )
    yield (
        "concat axis 3 out of range",
        base(
            inputs=[c, c | {"name": "d"}],
            nodes=[
                {"name": "j", "layer": {"type": "Concatenate", "axis": 3}, "inputs": ["c", "d"]}
            ],
            outputs=["j"],
        ),
    )
    yield (
        "concat axis -3",
        base(
            inputs=[c, c | {"name": "d"}],
            nodes=[
                {"name": "j", "layer": {"type": "Concatenate", "axis": -3}, "inputs": ["c", "d"]}
            ],
            outputs=["j"],
        ),
    )
    yield (
        "dense two inputs",
        base(
            inputs=[a, b],
            nodes=[{"name": "dense", "layer": dense, "inputs": ["a", "b"]}],
            outputs=["dense"],
        ),
    )
    yield (
        "add one input",
        base(
            inputs=[a],
            nodes=[{"name": "s", "layer": {"type": "Add"}, "inputs": ["a"]}],
            outputs=["s"],
        ),
    )
    yield (
        "unknown node input",
        base(inputs=[a], nodes=[{"name": "n", "layer": dense, "inputs": ["y"]}], outputs=["n"]),
    )
    yield (
        "name taken by input",
        base(inputs=[a], nodes=[{"name": "a", "layer": dense, "inputs": ["a"]}], outputs=["a"]),
    )
    yield (
        "name taken by node",
        base(
            inputs=[a],
            nodes=[
                {"name": "n", "layer": dense, "inputs": ["a"]},
                {"name": "n", "layer": dense, "inputs": ["n"]},
            ],
            outputs=["n"],
        ),
    )
    yield (
        "unknown output",
        base(inputs=[a], nodes=[{"name": "n", "layer": dense, "inputs": ["a"]}], outputs=["z"]),
    )
    yield (
        "output is an input",
        base(
            inputs=[a], nodes=[{"name": "n", "layer": dense, "inputs": ["a"]}], outputs=["a", "n"]
        ),
    )
    yield (
        "several outputs",
        base(
            inputs=[a, b],
            nodes=[
                {"name": "p", "layer": dense, "inputs": ["a"]},
                {"name": "q", "layer": {"type": "Dense", "units": 5}, "inputs": ["b"]},
            ],
            outputs=["q", "p"],
        ),
    )
    yield (
        "duplicate input names",
        base(inputs=[a, a], nodes=[{"name": "n", "layer": dense, "inputs": ["a"]}], outputs=["n"]),
    )
    yield (
        "bad node name",
        base(inputs=[a], nodes=[{"name": "a.b", "layer": dense, "inputs": ["a"]}], outputs=["a.b"]),
    )
    yield (
        "node name trailing newline",
        base(inputs=[a], nodes=[{"name": "n\n", "layer": dense, "inputs": ["a"]}], outputs=["n\n"]),
    )
    yield (
        "int64 into dense",
        base(
            inputs=[a | {"dtype": "int64"}],
            nodes=[{"name": "n", "layer": dense, "inputs": ["a"]}],
            outputs=["n"],
        ),
    )
    yield "empty nodes", base(inputs=[a], nodes=[], outputs=["a"])
    yield (
        "graph with layers too",
        base(
            inputs=[a],
            layers=[dense],
            nodes=[{"name": "n", "layer": dense, "inputs": ["a"]}],
            outputs=["n"],
        ),
    )
    yield (
        "graph without outputs",
        base(inputs=[a], nodes=[{"name": "n", "layer": dense, "inputs": ["a"]}]),
    )
    yield (
        "node without inputs",
        base(inputs=[a], nodes=[{"name": "n", "layer": dense, "inputs": []}], outputs=["n"]),
    )
    yield (
        "node extra key",
        base(
            inputs=[a],
            nodes=[{"name": "n", "layer": dense, "inputs": ["a"], "x": 1}],
            outputs=["n"],
        ),
    )


def spec_cases():
    ok = {
        "format": FORMAT,
        "inputs": [{"name": "x", "shape": [4]}],
        "layers": [{"type": "Dense", "units": 2}],
    }

    def with_(**kw):
        return {**ok, **kw}

    yield "minimal", ok
    yield "no format", {k: v for k, v in ok.items() if k != "format"}
    yield "no inputs", {k: v for k, v in ok.items() if k != "inputs"}
    yield "only format", {"format": FORMAT}
    yield "wrong format", with_(format="sparkdl.network/v9")
    yield "format int", with_(format=1)
    yield "extra root key", with_(extra=True)
    yield "two extra root keys", with_(zeta=1, alpha=2)
    yield "empty inputs", with_(inputs=[])
    yield (
        "two inputs sequential",
        with_(inputs=[{"name": "x", "shape": [4]}, {"name": "y", "shape": [4]}]),
    )
    yield "input float dims", with_(inputs=[{"name": "x", "shape": [4.0]}])
    yield "input zero dim", with_(inputs=[{"name": "x", "shape": [0]}])
    yield "input variable dim", with_(inputs=[{"name": "x", "shape": [None, 4]}])
    yield "input variable dim not first", with_(inputs=[{"name": "x", "shape": [4, None]}])
    yield "input variable dim and zero", with_(inputs=[{"name": "x", "shape": [None, 0]}])
    yield "input variable dim string", with_(inputs=[{"name": "x", "shape": [None, "4"]}])
    yield "input empty shape", with_(inputs=[{"name": "x", "shape": []}])
    yield "input bad name", with_(inputs=[{"name": "1x", "shape": [4]}])
    yield "input bad dtype", with_(inputs=[{"name": "x", "shape": [4], "dtype": "float16"}])
    yield "input extra", with_(inputs=[{"name": "x", "shape": [4], "size": 4}])
    yield "input not object", with_(inputs=["x"])
    yield "layers empty", with_(layers=[])
    yield "layers not list", with_(layers={"type": "Dense"})
    yield "layer not object", with_(layers=[3])
    yield "loss name", with_(loss={"name": "mse"})
    yield "loss string", with_(loss="mse")
    yield "loss unknown", with_(loss={"name": "hinge"})
    yield "optimizer unknown", with_(optimizer={"name": "lbfgs", "params": {}})
    yield "loss extra", with_(loss={"name": "mse", "weight": 1})
    yield "loss params list", with_(loss={"name": "mse", "params": []})
    yield (
        "optimizer params",
        with_(
            optimizer={
                "name": "adamw",
                "params": {
                    "lr": 1e-3,
                    "betas": [0.9, 0.999],
                    "eps": 1e-8,
                    "weight_decay": 0,
                    "amsgrad": False,
                    "big": 12345678901234567890123,
                    "tiny": 5e-324,
                    "huge": 1.7976931348623157e308,
                    "fixed": 1234567890123456.0,
                    "exp": 1e16,
                    "neg": -0.0,
                    "third": 1 / 3,
                    "text": 'é ü \u2028 \U0001f600 "quoted" \\ \t\n\x01\x7f',
                    "nested": {"z": None, "a": [{}]},
                    "\u00e9": 1,
                    "\U0001f600": 2,
                    "\uffff": 3,
                    "a": 4,
                },
            }
        ),
    )
    yield "duplicate keys", None  # written by hand below
    yield "not an object", [ok]
    yield "a string", "spec"


def texts():
    """(name, JSON text) for every case."""
    for path in sorted((ROOT / "tests/vectors").glob("network_*.json")):
        spec = json.loads(path.read_text())["spec"]
        yield f"{path.stem}: as is", json.dumps(spec)
        yield f"{path.stem}: indented", json.dumps(spec, indent=2, sort_keys=True)
        values = VALUES if path.stem not in GRAPHS else FEW_VALUES
        for name, mutated in mutations(spec if path.stem in WHOLE else alone(spec), values):
            yield f"{path.stem}: {name}", json.dumps(mutated, separators=(",", ":"))
    for name, spec in layer_cases():
        yield name, json.dumps(spec)
    for name, spec in graph_cases():
        yield name, json.dumps(spec)
    for name, spec in spec_cases():
        if spec is not None:
            yield name, json.dumps(spec)
    yield (
        "duplicate keys",
        (
            '{"format":"sparkdl.network/v1","inputs":[{"name":"x","shape":[4]}],'
            '"layers":[{"type":"Dense","units":3,"units":2}],"inputs":[{"name":"y","shape":[5]}]}'
        ),
    )
    yield (
        "number spellings",
        (
            '{"format":"sparkdl.network/v1","inputs":[{"name":"x","shape":[4]}],'
            '"layers":[{"type":"Dropout","rate":1E-1},{"type":"BatchNorm","epsilon":1e-7,'
            '"momentum":0}],"optimizer":{"name":"sgd","params":{"lr":10.0e-3,"m":-0}}}'
        ),
    )
    yield (
        "nan param",
        (
            '{"format":"sparkdl.network/v1","inputs":[{"name":"x","shape":[4]}],'
            '"layers":[{"type":"Flatten"}],"optimizer":{"name":"sgd","params":{"lr":NaN}}}'
        ),
    )
    yield (
        "nan rate",
        (
            '{"format":"sparkdl.network/v1","inputs":[{"name":"x","shape":[4]}],'
            '"layers":[{"type":"Dropout","rate":NaN}]}'
        ),
    )
    yield (
        "infinite epsilon",
        (
            '{"format":"sparkdl.network/v1","inputs":[{"name":"x","shape":[4]}],'
            '"layers":[{"type":"LayerNorm","epsilon":Infinity}]}'
        ),
    )
    yield (
        "infinite param in a list",
        (
            '{"format":"sparkdl.network/v1","inputs":[{"name":"x","shape":[4]}],'
            '"layers":[{"type":"Flatten"}],"optimizer":{"name":"adam","params":'
            '{"lr":0.1,"betas":[0.9,-Infinity]}}}'
        ),
    )
    yield (
        "reshape float minus one",
        (
            '{"format":"sparkdl.network/v1","inputs":[{"name":"x","shape":[4]}],'
            '"layers":[{"type":"Reshape","shape":[2,-1.0]}]}'
        ),
    )
    yield "not json", "{not json"
    yield "empty text", ""
    yield "trailing text", json.dumps({"format": FORMAT}) + " x"


def beyond_int32(text: str) -> bool:
    """Whether a layer or input attribute holds an int the JVM side refuses (> 2**31 - 1)."""
    try:
        spec = json.loads(text)
    except ValueError:
        return False
    if not isinstance(spec, dict):
        return False

    def big(value) -> bool:
        if isinstance(value, dict):
            return any(big(v) for v in value.values())
        if isinstance(value, list):
            return any(big(v) for v in value)
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**31 - 1

    return any(big(spec.get(key)) for key in ("inputs", "layers", "nodes"))


def shapes_beyond_int32(text: str) -> bool:
    """Whether the network, read by Python, has a dimension the JVM side refuses."""
    try:
        net = Network.from_json(text)
    except Exception:  # noqa: BLE001 - only networks Python accepts matter here
        return False
    shapes = [s for ins in net._shapes.values() for s in ins] + list(net._out_shapes)
    return any(d is not None and d > 2**31 - 1 for s in shapes for d in s)


def reprs() -> dict:
    """Python's repr of floats (by their IEEE bits) and strings, and json.dumps of strings."""
    rng = random.Random(20240601)
    floats = [
        0.1,
        1e-05,
        1e16,
        1e15,
        0.0001,
        1e22,
        1e23,
        2e23,
        5e-324,
        2.2250738585072014e-308,
        1.7976931348623157e308,
        1 / 3,
        2 / 3,
        100.0,
        123456789.0,
        0.3,
        9007199254740993.0,
        4.35,
        1.5e300,
        2.0**-1074 * 3,
        2.0**60,
        2.0**-20,
    ]
    floats += [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(600)]
    floats += [rng.uniform(-10, 10) for _ in range(200)]
    floats += [round(rng.uniform(0, 1), rng.randint(1, 6)) for _ in range(200)]
    floats += [2.0 ** rng.randint(-1074, 1023) for _ in range(100)]
    floats = [f for f in floats if math.isfinite(f)]
    strings = [
        "",
        "relu",
        "it's",
        'a"b',
        "both ' and \"",
        "\x7f\xe9\u2028\n\t\r\\",
        "\x00\x1f",
        "\U0001f600",
        "\ud800",
        "\u00a0 \u3000",
        "\ufeff",
        "\u0378",
        "\ue000",
        "日本",
    ]
    return {
        "floats": [[struct.unpack("<Q", struct.pack("<d", f))[0], repr(f)] for f in floats],
        "strings": [[s, repr(s), json.dumps(s)] for s in strings],
    }


def render() -> dict[Path, str]:
    """The two resource files' contents, keyed by path."""
    cases = [{"name": name, "text": text, "expected": verdict(text)} for name, text in texts()]
    for case in cases:
        if beyond_int32(case["text"]) or shapes_beyond_int32(case["text"]):
            case["beyond_int32"] = True
    doc = {"generated_by": "jvm/src/test/python/make_parity_cases.py", "cases": cases}
    return {
        OUT: json.dumps(doc, indent=0, ensure_ascii=True) + "\n",
        REPRS: json.dumps(reprs(), indent=0, ensure_ascii=True) + "\n",
    }


def main() -> None:
    for path, text in render().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
