"""Malformed inputs from a user or a file: every one is a SparkDLError naming the file.

Issue 13 ("Also"): network JSON, safetensors weights, pickled code, a saved model's
metadata and a checkpoint are fed systematic truncations, byte flips, wrong types
and shapes and seeded random bytes. Each either loads (a flip can leave a valid
file) or raises a ``SparkDLError`` subclass whose message names the file; never a
raw ``json``/``safetensors``/``pickle`` error, a hang or a crash.
"""

from __future__ import annotations

import copy
import io
import json
import os
import random
import struct

import pytest
import torch

from sparkdl.architecture import (
    Architecture,
    check_weights,
    dumps_code,
    loads_code,
    weights_from_bytes,
    weights_to_bytes,
)
from sparkdl.checkpoints import (
    OPTIMIZER,
    STATE,
    WEIGHTS,
    RunOutputs,
    RunWriter,
    checkpoint_at,
    latest_checkpoint,
    load_optimizer_state,
    parameter_shapes,
    parse_state,
)
from sparkdl.errors import ConfigError, CorruptModelError, SparkDLError
from sparkdl.ml.persistence import _expected_shapes, parse_metadata
from sparkdl.nn import (
    LSTM,
    Add,
    BatchNorm,
    Conv2d,
    Dense,
    Embedding,
    Flatten,
    Input,
    Network,
    Sequential,
)
from sparkdl.storage import StorageLocation

SEED = 13
#: Values of every JSON type, and sizes no integer type or memory holds.
WRONG_VALUES = [None, True, 0, -1, 2**31, 2**63, 10**30, 1.5, float("1e308"), "", "relu",
                "float32", [], [-1], [0, 0], [2**40, 2**40], {}, {"units": 3}, [[1]]]


def graph_net() -> Network:
    x = Input((3, 8, 8), name="x")
    h = Flatten()(Conv2d(4, 3, activation="relu")(x))
    out = Dense(5)(Add()(Dense(16, activation="relu")(h), Dense(16)(h)))
    return Network(inputs=x, outputs=out)


def sequential_nets() -> list[Network]:
    return [Sequential([Input((10, 6)), LSTM(8), Dense(3)]),
            Sequential([Input((7,), dtype="int64"), Embedding(50, 4), Flatten(), BatchNorm(),
                        Dense(2)])]


SPECS = [graph_net().to_json().encode()] + [n.to_json().encode() for n in sequential_nets()]


def flips(data: bytes, rng: random.Random, per_offset: int = 1):
    """Every offset of ``data`` with one random bit flipped, ``per_offset`` times."""
    for i in range(len(data)):
        for _ in range(per_offset):
            out = bytearray(data)
            out[i] ^= 1 << rng.randrange(8)
            yield i, bytes(out)


def random_blobs(rng: random.Random, count: int, max_len: int = 96):
    return [bytes(rng.randrange(256) for _ in range(rng.randrange(max_len)))
            for _ in range(count)]


def paths(obj, prefix=()):
    """JSON paths to every value inside ``obj``."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return
    for key, value in items:
        yield prefix + (key,)
        yield from paths(value, prefix + (key,))


def replaced(obj, path, value):
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = copy.deepcopy(value)
    return out


_DELETE = object()


def load_spec(text) -> dict | None:
    """What a saved model's loader does with network.json: parse, check, shape on meta."""
    arch = Architecture("spec", text if isinstance(text, bytes) else text.encode())
    return _expected_shapes(arch, "/m/network.json")


def assert_names(error: SparkDLError, name: str) -> None:
    assert name in str(error), f"{name!r} not named in: {error}"


# -- network spec JSON -----------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=["graph", "lstm", "embedding"])
def test_every_truncation_of_a_network_spec_is_refused_naming_the_file(spec):
    assert load_spec(spec)  # the whole file loads
    for end in range(len(spec)):
        with pytest.raises(CorruptModelError) as caught:
            load_spec(spec[:end])
        assert_names(caught.value, "/m/network.json")


def sampled(items: list, count: int, rng: random.Random) -> list:
    """All of ``items``, or ``count`` of them: the graph's spec is slow to validate."""
    return items if len(items) <= count else rng.sample(items, count)


@pytest.mark.parametrize("spec", SPECS, ids=["graph", "lstm", "embedding"])
def test_bit_flips_in_a_network_spec_load_or_are_refused(spec):
    rng = random.Random(SEED)
    refused = 0
    cases = sampled(list(flips(spec, rng, per_offset=2)), 400, rng)
    for _, data in cases:
        try:
            shapes = load_spec(data)
        except CorruptModelError as e:
            assert_names(e, "/m/network.json")
            refused += 1
        else:
            assert isinstance(shapes, dict) and shapes
    assert refused > len(cases) / 2  # most flips break the JSON or the schema


@pytest.mark.parametrize("spec", SPECS, ids=["graph", "lstm", "embedding"])
def test_every_value_of_a_network_spec_replaced_by_a_wrong_one(spec):
    obj = json.loads(spec)
    rng = random.Random(SEED)
    refused = 0
    cases = [(path, value) for path in paths(obj) for value in [*WRONG_VALUES, _DELETE]]
    for path, value in sampled(cases, 500, rng):
        try:
            shapes = load_spec(json.dumps(replaced(obj, path, value)))
        except CorruptModelError as e:
            assert_names(e, "/m/network.json")
            refused += 1
        else:
            assert isinstance(shapes, dict)
    assert refused > len(cases) / 4


def test_an_unknown_layer_type_is_named():
    obj = json.loads(SPECS[1])
    obj["layers"][0]["type"] = "Quantum"
    with pytest.raises(CorruptModelError, match=r"/m/network.json.*'Quantum'"):
        load_spec(json.dumps(obj))


def test_sizes_no_memory_holds_are_refused_without_allocating():
    obj = json.loads(SPECS[1])
    obj["layers"][1]["units"] = 2**62  # Dense(2**62): exabytes if allocated
    with pytest.raises(CorruptModelError, match=r"/m/network.json"):
        load_spec(json.dumps(obj))


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_refused(depth):
    for text in ["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth]:
        with pytest.raises(ConfigError, match="network spec"):
            Network.from_json(text)
        with pytest.raises(CorruptModelError, match="/m/network.json"):
            load_spec(text)
    obj = json.loads(SPECS[1])
    nested = 3
    for _ in range(min(depth, 500)):  # json.dumps itself cannot write deeper
        nested = [nested]
    obj["layers"][1]["units"] = nested
    with pytest.raises(CorruptModelError, match="/m/network.json"):
        load_spec(json.dumps(obj))


def test_random_bytes_and_non_json_are_refused_as_a_network_spec():
    rng = random.Random(SEED)
    odd = [b"\xff\xfe\x00", "\ud800".encode("utf-8", "surrogatepass"), b"null", b"[]",
           b'"x"', b"1e999"]
    for blob in random_blobs(rng, 500) + odd:
        with pytest.raises(CorruptModelError, match="/m/network.json"):
            load_spec(blob)
    with pytest.raises(ConfigError, match="must be JSON"):
        Network.from_json(12)


# -- safetensors weights -----------------------------------------------------------------


def small_module() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3),
                               torch.nn.Linear(3, 2))


def expected_of(module: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_every_truncation_of_a_weights_file_is_refused_naming_it():
    data = weights_to_bytes(small_module())
    for end in range(len(data)):
        with pytest.raises(CorruptModelError) as caught:
            weights_from_bytes(data[:end], "/m/weights.safetensors")
        assert_names(caught.value, "/m/weights.safetensors")
        assert f"({end} bytes)" in str(caught.value)


def test_bit_flips_in_a_weights_file_load_with_the_same_shapes_or_are_refused():
    module = small_module()
    data, expected = weights_to_bytes(module), expected_of(module)
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    refused = 0
    for i, flipped in flips(data, random.Random(SEED), per_offset=3):
        try:
            state = weights_from_bytes(flipped, "/m/weights.safetensors")
            check_weights(state, expected, "/m/weights.safetensors")
        except CorruptModelError as e:
            assert_names(e, "/m/weights.safetensors")
            refused += 1
            assert i < header_end, "a flip in the tensor data cannot be detected as damage"
    assert refused > header_end  # nearly every header flip is caught


def test_weights_of_another_shape_are_refused_listing_the_tensors():
    expected = expected_of(small_module())
    other = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.BatchNorm1d(3),
                                torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    state = weights_from_bytes(weights_to_bytes(other))
    with pytest.raises(CorruptModelError) as caught:
        check_weights(state, expected, "/m/weights.safetensors")
    message = str(caught.value)
    assert_names(caught.value, "/m/weights.safetensors")
    assert "0.weight has shape [3, 5], the network needs [3, 4]" in message
    assert "unexpected 3.weight" in message
    with pytest.raises(CorruptModelError, match="missing 2.bias"):
        check_weights({k: v for k, v in state.items() if k != "2.bias"}, expected_of(other),
                      "/m/weights.safetensors")


def test_weights_that_do_not_fit_a_pickled_architecture_are_refused_on_build():
    arch = Architecture.of(small_module())
    state = weights_from_bytes(weights_to_bytes(torch.nn.Linear(4, 3)))
    with pytest.raises(CorruptModelError, match=r"/m/initial_weights.safetensors does not fit "
                                                r"/m/architecture.pkl \(module\)"):
        arch.build(state, source="/m/architecture.pkl",
                   weights_source="/m/initial_weights.safetensors")


def test_random_bytes_and_huge_headers_are_refused_as_weights():
    rng = random.Random(SEED)
    blobs = random_blobs(rng, 1000) + [
        struct.pack("<Q", 2**63) + b"{}",  # a header longer than any file
        struct.pack("<Q", 2) + b"{}",  # a valid, empty file...
        struct.pack("<Q", 60) + b'{"w":{"dtype":"F32","shape":[1000000],"data_offsets":[0,4]}}',
    ]
    for blob in blobs:
        try:
            state = weights_from_bytes(blob, "/m/weights.safetensors")
        except CorruptModelError as e:
            assert_names(e, "/m/weights.safetensors")
        else:
            assert state == {}  # ...which only the empty file is
    with pytest.raises(CorruptModelError, match="missing 0.weight"):
        check_weights(weights_from_bytes(blobs[-2]), expected_of(small_module()),
                      "/m/weights.safetensors")


# -- pickled code ----------------------------------------------------------------------


def test_truncated_or_random_pickles_are_refused_naming_the_file():
    payload = dumps_code(small_module)
    for end in range(0, len(payload), max(1, len(payload) // 400)):
        with pytest.raises(CorruptModelError, match=r"^/m/architecture.pkl does not unpickle"):
            loads_code(payload[:end], "/m/architecture.pkl")
    for blob in random_blobs(random.Random(SEED), 1000):
        try:
            loads_code(blob, "/m/loss.pkl")
        except CorruptModelError as e:
            assert_names(e, "/m/loss.pkl")


def by_reference(module: str, name: str) -> bytes:
    """A pickle of ``module.name`` by reference (protocol 4: STACK_GLOBAL)."""
    def text(s: str) -> bytes:
        return b"\x8c" + bytes([len(s)]) + s.encode()
    return b"\x80\x04" + text(module) + text(name) + b"\x93."


@pytest.mark.parametrize("module, name, error", [
    ("not_a_module", "Net", "No module named 'not_a_module'"),
    ("torch.nn", "NoSuchNet", "Can't get attribute 'NoSuchNet'"),
])
def test_a_pickle_of_code_that_is_not_importable_says_so(module, name, error):
    assert loads_code(by_reference("torch.nn", "Linear")) is torch.nn.Linear
    with pytest.raises(CorruptModelError, match=f"/m/architecture.pkl.*{error}.*install the "
                                                 "package"):
        loads_code(by_reference(module, name), "/m/architecture.pkl")


@pytest.mark.parametrize("kind, value, message", [
    ("module", 5, "must hold a torch.nn.Module. Received: int"),
    ("factory", "text", "must hold a model factory"),
])
def test_a_pickle_of_the_wrong_thing_is_refused_on_build(kind, value, message):
    arch = Architecture(kind, dumps_code(value))
    with pytest.raises(CorruptModelError, match=f"/m/architecture.pkl {message}"):
        arch.build(source="/m/architecture.pkl")


def test_an_unknown_architecture_kind_is_refused():
    with pytest.raises(ConfigError, match=r"kind must be one of .*Received: kind='zip'"):
        Architecture("zip", b"")


# -- a saved model's metadata ----------------------------------------------------------


def model_metadata() -> dict:
    return {"class": "sparkdl.ml.model.TorchModel", "timestamp": 1, "sparkVersion": "4.3.0",
            "uid": "TorchModel_1", "paramMap": {"batchSize": 32},
            "defaultParamMap": {"batchSize": 256}, "architectureKind": "spec",
            "history": {"epochs": [{"epoch": 1, "train_loss": "NaN"}], "backend": "torch",
                        "num_workers": 2, "workers": [], "resumed_from_epoch": 0}}


def test_every_truncation_of_metadata_is_refused_naming_the_file():
    text = json.dumps(model_metadata())
    assert parse_metadata(text, "/m/metadata", "TorchModel")["uid"] == "TorchModel_1"
    for end in range(len(text)):
        with pytest.raises(CorruptModelError, match=r"^/m/metadata "):
            parse_metadata(text[:end], "/m/metadata", "TorchModel")


@pytest.mark.parametrize("expected", ["TorchModel", "TorchEstimator"])
def test_every_metadata_value_replaced_by_a_wrong_one(expected):
    obj = model_metadata()
    if expected == "TorchEstimator":
        obj.update({"class": "sparkdl.ml.estimator.TorchEstimator", "customCode": ["loss"]})
        del obj["history"]
    for path in paths(obj):
        for value in [*WRONG_VALUES, _DELETE]:
            try:
                metadata = parse_metadata(json.dumps(replaced(obj, path, value)),
                                          "/m/metadata", expected)
            except CorruptModelError as e:
                assert_names(e, "/m/metadata")
            except ConfigError as e:  # the other class: names what to load it with
                assert path == ("class",) and "/m/metadata says" in str(e)
            else:  # what the readers rely on holds
                assert isinstance(metadata["uid"], str)
                assert isinstance(metadata["paramMap"], dict)
                assert isinstance(metadata["defaultParamMap"], dict)
                if expected == "TorchModel":
                    assert metadata["architectureKind"] in ("spec", "module", "factory")
                    assert isinstance(metadata["history"].epochs, list)
                else:
                    assert set(metadata["customCode"]) <= {"loss", "optimizer"}


def test_a_model_loaded_as_an_estimator_says_which_load_to_use():
    with pytest.raises(ConfigError, match=r"saved TorchModel, not a TorchEstimator.*"
                                          r"TorchModel.load"):
        parse_metadata(json.dumps(model_metadata()), "/m/metadata", "TorchEstimator")


def test_random_bytes_are_refused_as_metadata():
    for blob in random_blobs(random.Random(SEED), 500):
        with pytest.raises(CorruptModelError, match="^/m/metadata "):
            parse_metadata(blob.decode("latin-1"), "/m/metadata", "TorchModel")


# -- checkpoints -------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path):
    """A real checkpoint after epoch 1 (Adam, so the optimizer has state), and its shapes."""
    module = small_module()
    optimizer = torch.optim.Adam(module.parameters(), lr=0.1)
    module(torch.randn(8, 4)).sum().backward()
    optimizer.step()
    location = StorageLocation("local", str(tmp_path), url=str(tmp_path))
    RunWriter(RunOutputs(checkpoints=location), epochs=3).after_epoch(
        {"epoch": 1, "train_loss": 0.5}, module, optimizer)
    return location, parameter_shapes(module.state_dict()), tmp_path / "epoch-0001"


def rewrite(path, data: bytes) -> None:
    path.write_bytes(data)


def test_an_intact_checkpoint_resumes(checkpoint):
    location, shapes, _ = checkpoint
    resume = latest_checkpoint(location, shapes)
    assert resume.epoch == 1 and resume.history == [{"epoch": 1, "train_loss": 0.5}]
    optimizer = torch.optim.Adam(small_module().parameters(), lr=0.1)
    load_optimizer_state(optimizer, resume.optimizer_state, torch.device("cpu"))
    assert optimizer.state_dict()["state"][0]["step"] == 1


@pytest.mark.parametrize("file", [WEIGHTS, OPTIMIZER])
def test_a_damaged_checkpoint_file_is_refused_naming_it(checkpoint, file):
    location, shapes, where = checkpoint
    data = (where / file).read_bytes()
    rng = random.Random(SEED)
    damaged = [data[:end] for end in range(0, len(data), max(1, len(data) // 100))]
    damaged += [flipped for _, flipped in flips(data, rng)][:: max(1, len(data) // 100)]
    for blob in damaged:
        rewrite(where / file, blob)
        with pytest.raises(CorruptModelError) as caught:
            checkpoint_at(location, 1, shapes)
        assert_names(caught.value, f"{where}/{file}")
        assert f"Delete {where}" in str(caught.value)
    os.remove(where / file)
    with pytest.raises(CorruptModelError, match=f"{where}/{file} is missing"):
        checkpoint_at(location, 1, shapes)


def test_every_truncation_of_state_json_is_refused_naming_it(checkpoint):
    location, shapes, where = checkpoint
    text = (where / STATE).read_bytes()
    for end in range(len(text)):
        rewrite(where / STATE, text[:end])
        with pytest.raises(CorruptModelError, match=f"^{where}/{STATE} "):
            checkpoint_at(location, 1, shapes)


def test_every_state_json_value_replaced_by_a_wrong_one(checkpoint):
    location, shapes, where = checkpoint
    obj = json.loads((where / STATE).read_bytes())
    for path in paths(obj):
        for value in [*WRONG_VALUES, _DELETE]:
            changed = replaced(obj, path, value)
            try:
                resume = parse_state(json.dumps(changed).encode(), f"{where}/{STATE}", 1)
            except CorruptModelError as e:
                assert_names(e, f"{where}/{STATE}")
            else:
                assert resume["epoch"] == 1 and isinstance(resume["history"], list)
            rewrite(where / STATE, json.dumps(changed).encode())
            try:
                checkpoint_at(location, 1, shapes)
            except CorruptModelError as e:
                assert_names(e, str(where))
            except ConfigError as e:  # other parameter shapes: another network's
                assert "holds checkpoints of another network" in str(e)


def test_checkpoints_written_before_fingerprints_are_still_checked(checkpoint):
    location, shapes, where = checkpoint
    state = json.loads((where / STATE).read_bytes())
    del state["files"]
    rewrite(where / STATE, json.dumps(state).encode())
    assert latest_checkpoint(location, shapes).epoch == 1  # no fingerprints: still loads
    for file in (WEIGHTS, OPTIMIZER):
        good = (where / file).read_bytes()
        for end in range(0, len(good), max(1, len(good) // 50)):
            rewrite(where / file, good[:end])
            with pytest.raises(CorruptModelError) as caught:
                checkpoint_at(location, 1, shapes)
            assert_names(caught.value, f"{where}/{file}")
        rewrite(where / file, good)
    # Weights of other shapes than state.json recorded.
    rewrite(where / WEIGHTS, weights_to_bytes(torch.nn.Linear(4, 3)))
    with pytest.raises(CorruptModelError, match=f"{where}/{WEIGHTS} holds parameters"):
        checkpoint_at(location, 1, shapes)


def test_the_newest_checkpoint_damaged_falls_back_to_the_one_before(checkpoint, caplog):
    location, shapes, where = checkpoint
    module = small_module()
    optimizer = torch.optim.Adam(module.parameters(), lr=0.1)
    RunWriter(RunOutputs(checkpoints=location), epochs=3).after_epoch(
        {"epoch": 2, "train_loss": 0.4}, module, optimizer)
    newest = where.parent / "epoch-0002"
    rewrite(newest / WEIGHTS, (newest / WEIGHTS).read_bytes()[:-7])
    with caplog.at_level("WARNING", logger="sparkdl.checkpoints"):
        assert latest_checkpoint(location, shapes).epoch == 1
    assert f"{newest}/{WEIGHTS}" in caplog.text and "skipping a damaged checkpoint" in caplog.text
    rewrite(where / STATE, b"{")  # the one before damaged too: start from the first epoch
    assert latest_checkpoint(location, shapes) is None


def test_random_bytes_are_refused_as_optimizer_state():
    for blob in random_blobs(random.Random(SEED), 300):
        with pytest.raises(CorruptModelError, match="^ckpt/optimizer.pt "):
            load_optimizer_state(torch.optim.SGD(small_module().parameters(), lr=0.1), blob,
                                 torch.device("cpu"), source="ckpt/optimizer.pt")
    buffer = io.BytesIO()
    torch.save([1, 2], buffer)
    with pytest.raises(CorruptModelError, match="holds a list, not a dict"):
        load_optimizer_state(torch.optim.SGD(small_module().parameters(), lr=0.1),
                             buffer.getvalue(), torch.device("cpu"), source="ckpt/optimizer.pt")


def test_another_optimizers_state_is_a_config_error(checkpoint):
    location, shapes, _ = checkpoint
    resume = latest_checkpoint(location, shapes)
    other = torch.optim.Adam(torch.nn.Linear(4, 3).parameters())
    with pytest.raises(ConfigError, match=r"state of another optimizer.*new checkpointDir"):
        load_optimizer_state(other, resume.optimizer_state, torch.device("cpu"))
