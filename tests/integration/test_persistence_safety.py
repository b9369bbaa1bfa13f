"""Saving never leaves a half-written model; loading a damaged one names the file.

Issue 13: item 7 (a save writes a temporary sibling and renames it into place, data
before metadata, so a failed or killed save keeps the old model), the fuzzing
bullet (a directory with missing or malformed files raises a ``SparkDLError``
naming the file) and ``TorchEstimator.load(path, trusted=False)``.
"""

from __future__ import annotations

import os

import pytest
import torch
from pyspark.ml.util import DefaultParamsWriter

from sparkdl import (
    ConfigError,
    CorruptModelError,
    ModelNotFoundError,
    PathExistsError,
    TorchEstimator,
    TorchModel,
    UntrustedCodeError,
)
from sparkdl.architecture import Architecture, weights_to_bytes
from sparkdl.ml import files
from sparkdl.ml.files_hadoop import HadoopFiles
from sparkdl.nn import Dense, Input, Sequential

pytestmark = [pytest.mark.spark]


def network():
    return Sequential([Input((5,)), Dense(8, activation="tanh"), Dense(3)])


def spec_model(seed: int) -> TorchModel:
    """A model as a fit returns it, without the fit: a network, its weights, Params."""
    torch.manual_seed(seed)
    net = network()
    model = TorchModel(Architecture.of(net), weights_to_bytes(net.build()))
    return model._set(task="multiclass", outputShape=[3], batchSize=16 + seed)


def module_model() -> TorchModel:
    module = torch.nn.Linear(5, 3)
    return TorchModel(Architecture.of(module), weights_to_bytes(module))._set(
        task="multiclass", outputShape=[3])


def visible(directory) -> list[str]:
    """What a user sees in ``directory``: no hidden names (Hadoop's ``.crc`` files)."""
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


def leftovers(directory) -> list[str]:
    return [n for n in os.listdir(directory) if files.TEMP_MARK in n or files.OLD_MARK in n]


def assert_is(loaded: TorchModel, model: TorchModel) -> None:
    assert loaded.uid == model.uid and loaded._weights == model._weights
    assert loaded.getBatchSize() == model.getBatchSize()


@pytest.fixture
def record_writes(monkeypatch):
    """The files written through persistence, in order."""
    written = []
    real = HadoopFiles.write_bytes

    def write_bytes(self, path, data):
        written.append(path)
        real(self, path, data)

    monkeypatch.setattr(HadoopFiles, "write_bytes", write_bytes)
    return written


@pytest.fixture
def fail_metadata(monkeypatch):
    """Call it to make the metadata write, a save's last step, fail like a full disk."""
    def fail(*args, **kwargs):
        raise OSError("No space left on device")

    return lambda: monkeypatch.setattr(DefaultParamsWriter, "saveMetadata", staticmethod(fail))


# -- atomic save -----------------------------------------------------------------------


def test_a_save_writes_the_same_files_and_leaves_no_temporary(spark, tmp_path, record_writes):
    path = str(tmp_path / "m")
    model = spec_model(1)
    model.save(path)
    assert visible(path) == ["metadata", "network.json", "weights.safetensors"]
    assert visible(tmp_path) == ["m"] and leftovers(tmp_path) == []
    assert [os.path.basename(p) for p in record_writes] == ["weights.safetensors",
                                                           "network.json"]
    assert all(files.TEMP_MARK in p for p in record_writes)  # never the final path
    assert_is(TorchModel.load(path), model)


def test_an_overwrite_that_fails_after_the_weights_keeps_the_old_model(
        spark, tmp_path, record_writes, fail_metadata):
    path = str(tmp_path / "m")
    old = spec_model(1)
    old.write().save(path)
    record_writes.clear()
    fail_metadata()
    with pytest.raises(OSError, match="No space left"):
        spec_model(2).write().overwrite().save(path)
    assert "weights.safetensors" in os.path.basename(record_writes[0])  # it failed midway
    assert visible(tmp_path) == ["m"] and leftovers(tmp_path) == []
    assert_is(TorchModel.load(path), old)


def test_a_fresh_save_that_fails_leaves_nothing_at_the_path(spark, tmp_path, fail_metadata):
    fail_metadata()
    with pytest.raises(OSError, match="No space left"):
        spec_model(1).save(str(tmp_path / "m"))
    assert os.listdir(tmp_path) == []


def test_an_interrupted_save_cleans_up_too(spark, tmp_path, monkeypatch):
    path = str(tmp_path / "m")
    old = spec_model(1)
    old.save(path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(DefaultParamsWriter, "saveMetadata", staticmethod(interrupted))
    with pytest.raises(KeyboardInterrupt):
        spec_model(2).write().overwrite().save(path)
    assert visible(tmp_path) == ["m"] and leftovers(tmp_path) == []
    assert_is(TorchModel.load(path), old)


def test_an_overwrite_whose_rename_fails_puts_the_old_model_back(spark, tmp_path, monkeypatch):
    path = str(tmp_path / "m")
    old = spec_model(1)
    old.save(path)
    real = HadoopFiles.rename
    renames = []

    def rename(self, src, dst):
        renames.append((os.path.basename(src), os.path.basename(dst)))
        if files.TEMP_MARK in src:
            raise OSError(f"Could not rename {src} to {dst}")
        real(self, src, dst)

    monkeypatch.setattr(HadoopFiles, "rename", rename)
    with pytest.raises(OSError, match="Could not rename"):
        spec_model(2).write().overwrite().save(path)
    assert [dst for _, dst in renames][0].startswith(".m" + files.OLD_MARK)  # moved aside
    assert renames[-1][1] == "m"  # and back
    assert visible(tmp_path) == ["m"] and leftovers(tmp_path) == []
    assert_is(TorchModel.load(path), old)


def test_an_overwrite_replaces_the_model(spark, tmp_path):
    path = str(tmp_path / "m")
    spec_model(1).save(path)
    new = module_model()
    new.write().overwrite().save(path)
    assert visible(path) == ["architecture.pkl", "metadata", "weights.safetensors"]
    assert visible(tmp_path) == ["m"] and leftovers(tmp_path) == []
    assert_is(TorchModel.load(path), new)


def test_saving_onto_an_existing_path_fails_before_writing(spark, tmp_path, record_writes):
    path = str(tmp_path / "m")
    old = spec_model(1)
    old.save(path)
    record_writes.clear()
    with pytest.raises(PathExistsError, match=r"already exists. To overwrite it, please use "
                                            r"write.overwrite\(\).save\(path\)"):
        spec_model(2).save(path)
    assert record_writes == []
    assert visible(tmp_path) == ["m"]
    assert_is(TorchModel.load(path), old)


def test_a_relative_path_saves_where_spark_resolves_it(spark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    jvm_cwd = spark.sparkContext._jvm.java.lang.System.getProperty("user.dir")
    rel = os.path.relpath(tmp_path / "m", jvm_cwd)
    model = spec_model(1)
    model.save(rel)
    assert visible(tmp_path) == ["m"] and leftovers(tmp_path) == []
    assert_is(TorchModel.load(str(tmp_path / "m")), model)


def test_an_estimator_save_is_atomic_too(spark, tmp_path, monkeypatch, fail_metadata):
    path = str(tmp_path / "est")
    old = TorchEstimator(model=torch.nn.Linear(5, 3), epochs=3)
    old.save(path)
    assert visible(path) == ["architecture.pkl", "initial_weights.safetensors", "metadata"]
    fail_metadata()
    with pytest.raises(OSError, match="No space left"):
        TorchEstimator(model=network(), epochs=7).write().overwrite().save(path)
    monkeypatch.undo()
    loaded = TorchEstimator.load(path)
    assert loaded.uid == old.uid and loaded.getEpochs() == 3
    assert isinstance(loaded.getModel(), torch.nn.Linear)
    assert visible(tmp_path) == ["est"] and leftovers(tmp_path) == []


# -- loading a damaged directory -------------------------------------------------------


def _remove(path, name):
    target = os.path.join(path, name)
    if os.path.isdir(target):
        for root, dirs, names in os.walk(target, topdown=False):
            for n in names:
                os.remove(os.path.join(root, n))
            for d in dirs:
                os.rmdir(os.path.join(root, d))
        os.rmdir(target)
    else:
        os.remove(target)
    crc = os.path.join(path, f".{name}.crc")
    if os.path.exists(crc):
        os.remove(crc)


def _replace(path, name, data: bytes):
    """Rewrite a file as a damaged disk or a careless copy would: no checksum."""
    _remove(path, name)
    with open(os.path.join(path, name), "wb") as f:
        f.write(data)


def _metadata_file(path) -> str:
    directory = os.path.join(path, "metadata")
    return next(n for n in os.listdir(directory) if n.startswith("part-"))


def _truncate(path, name):
    with open(os.path.join(path, name), "rb") as f:
        data = f.read()
    _replace(path, name, data[: len(data) // 2])


def _other_weights(path, name):
    """Weights of the same layers, one of another width."""
    other = Sequential([Input((5,)), Dense(9, activation="tanh"), Dense(3)]) \
        if name == "weights.safetensors" else torch.nn.Linear(5, 9)
    _replace(path, name, weights_to_bytes(
        other.build() if isinstance(other, Sequential) else other))


def _damaged_metadata(text: bytes):
    def damage(path, _):
        meta = os.path.join(path, "metadata")
        _replace(meta, _metadata_file(path), text)
    return damage


@pytest.mark.parametrize("name, damage, message", [
    ("metadata", _remove, r"{path}/metadata is missing: {path} is not a complete saved model"),
    ("weights.safetensors", _remove, r"{path}/weights.safetensors is missing"),
    ("network.json", _remove, r"{path}/network.json is missing"),
    ("weights.safetensors", _truncate,
     r"{path}/weights.safetensors is not a valid safetensors file \(\d+ bytes\)"),
    ("weights.safetensors", _other_weights,
     r"{path}/weights.safetensors does not fit the network: 0.0.weight has shape \[9, 5\], "
     r"the network needs \[8, 5\]; 0.0.bias has shape \[9\]"),
    ("network.json", _truncate, r"{path}/network.json is not a valid network spec: "
                                r"A network spec must be JSON"),
    ("network.json", lambda p, n: _replace(p, n, b'{"format": "sparkdl.network/v1"}'),
     r"{path}/network.json is not a valid network spec: Invalid network spec at <root>"),
    ("metadata", _damaged_metadata(b'{"class": "sparkdl.ml.model.TorchModel", "uid'),
     r"{path}/metadata is not valid JSON"),
    ("metadata", _damaged_metadata(b'{"class": "sparkdl.ml.model.TorchModel", "uid": 7}'),
     r"{path}/metadata is not the metadata of a saved TorchModel: uid must be a string. "
     r"Received: uid=7"),
    ("metadata", _damaged_metadata(b""), r"{path}/metadata is empty"),
], ids=["no-metadata", "no-weights", "no-network", "truncated-weights", "wrong-shapes",
        "truncated-network", "network-no-inputs", "truncated-metadata", "metadata-types",
        "empty-metadata"])
def test_a_damaged_model_directory_names_the_file(spark, tmp_path, name, damage, message):
    path = str(tmp_path / "m")
    spec_model(1).save(path)
    damage(path, name)
    with pytest.raises(CorruptModelError, match=message.format(path=path)):
        TorchModel.load(path)


def test_a_damaged_file_with_its_checksum_left_is_refused_naming_it(spark, tmp_path):
    path = str(tmp_path / "m")
    spec_model(1).save(path)
    with open(os.path.join(path, "weights.safetensors"), "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")  # Hadoop's .crc file no longer matches
    with pytest.raises(CorruptModelError, match=rf"{path}/weights.safetensors cannot be read: "
                                                r".*ChecksumException"):
        TorchModel.load(path)


def test_a_missing_path_and_the_wrong_class_are_named(spark, tmp_path):
    with pytest.raises(ModelNotFoundError, match=rf"Nothing is saved at {tmp_path}/nope"):
        TorchModel.load(str(tmp_path / "nope"))
    TorchEstimator(model=network()).save(str(tmp_path / "est"))
    with pytest.raises(ConfigError, match=r"saved TorchEstimator, not a TorchModel. Load it "
                                          r"with TorchEstimator.load"):
        TorchModel.load(str(tmp_path / "est"))


@pytest.mark.parametrize("name, damage, message", [
    ("loss.pkl", _remove, r"{path}/loss.pkl is missing: {path} is not a complete saved "
                          r"estimator"),
    ("loss.pkl", lambda p, n: _replace(p, n, b"\x80\x04K"),
     r"{path}/loss.pkl does not unpickle \(3 bytes\)"),
    ("architecture.pkl", _truncate, r"{path}/architecture.pkl does not unpickle"),
    ("initial_weights.safetensors", _truncate,
     r"{path}/initial_weights.safetensors is not a valid safetensors file"),
    ("initial_weights.safetensors", _other_weights,
     r"{path}/initial_weights.safetensors does not fit {path}/architecture.pkl \(module\)"),
])
def test_a_damaged_estimator_directory_names_the_file(spark, tmp_path, name, damage, message):
    path = str(tmp_path / "est")
    TorchEstimator(model=torch.nn.Linear(5, 3), loss=_half_squared_error).save(path)
    damage(path, name)
    with pytest.raises(CorruptModelError, match=message.format(path=path)):
        TorchEstimator.load(path)


def _half_squared_error(output, target):
    return 0.5 * ((output - target) ** 2).mean()


# -- TorchEstimator.load(path, trusted=False) ---------------------------------------------


def _sgd(params):
    return torch.optim.SGD(params, lr=0.1)


@pytest.mark.parametrize("params, refused", [
    ({"model": torch.nn.Linear(5, 3)}, ["architectureKind='module', architecture.pkl"]),
    ({"model": lambda: torch.nn.Linear(5, 3)}, ["architectureKind='factory', architecture.pkl"]),
    ({"model": network(), "loss": _half_squared_error}, ["custom loss (loss.pkl)"]),
    ({"model": network(), "optimizer": _sgd}, ["custom optimizer (optimizer.pkl)"]),
    ({"model": torch.nn.Linear(5, 3), "loss": _half_squared_error, "optimizer": _sgd},
     ["architecture.pkl", "custom loss (loss.pkl) and its custom optimizer (optimizer.pkl)"]),
], ids=["module", "factory", "loss", "optimizer", "all"])
def test_untrusted_estimator_load_refuses_pickled_code_before_reading_it(spark, tmp_path, params,
                                                                          refused):
    path = str(tmp_path / "est")
    est = TorchEstimator(**params)
    est.save(path)
    for name in ("architecture.pkl", "loss.pkl", "optimizer.pkl"):
        if os.path.exists(os.path.join(path, name)):  # would fail if it were unpickled
            _replace(path, name, b"not a pickle")
    for load in (lambda: TorchEstimator.load(path, trusted=False),
                 lambda: TorchEstimator.read(trusted=False).load(path)):
        with pytest.raises(UntrustedCodeError) as caught:
            load()
        message = str(caught.value)
        assert f"The estimator at {path} stores its" in message
        assert all(part in message for part in refused), message
        assert "Load it with trusted=True only if you trust whoever wrote that path" in message
    with pytest.raises(CorruptModelError, match="does not unpickle"):  # trusted: it reads them
        TorchEstimator.load(path)


def test_untrusted_estimator_load_accepts_a_spec_network_and_named_callables(spark, tmp_path):
    path = str(tmp_path / "est")
    est = TorchEstimator(model=network(), loss="cross_entropy", optimizer="adam",
                         optimizerParams={"lr": 0.01}, epochs=4)
    est.save(path)
    loaded = TorchEstimator.load(path, trusted=False)
    assert loaded.uid == est.uid and loaded.getModel() == network()
    assert (loaded.getOptimizer(), loaded.getOptimizerParams(), loaded.getEpochs()) == (
        "adam", {"lr": 0.01}, 4)
    empty = str(tmp_path / "empty")
    TorchEstimator(epochs=2).save(empty)  # no network yet: nothing pickled either
    assert TorchEstimator.load(empty, trusted=False).getModel() is None


def test_trusted_estimator_load_is_the_default(spark, tmp_path):
    path = str(tmp_path / "est")
    TorchEstimator(model=torch.nn.Linear(5, 3), loss=_half_squared_error).save(path)
    loaded = TorchEstimator.load(path)
    assert isinstance(loaded.getModel(), torch.nn.Linear)
    assert loaded._loss()(torch.ones(2), torch.zeros(2)).item() == 0.5
