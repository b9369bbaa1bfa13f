"""How :class:`~sparkdl.TorchEstimator` and :class:`~sparkdl.TorchModel` are saved.

Both follow Spark ML's layout: ``metadata/`` written by pyspark's
``DefaultParamsWriter`` (class, uid, every Param as JSON), so ``Pipeline``,
``CrossValidator`` and ``TrainValidationSplit`` save and load them like any stage,
plus files beside it::

    network.json                 a sparkdl.nn network's JSON spec (kind "spec")
    torchscript.pt               a TorchScript archive (kind "torchscript")
    architecture.pkl             a module's structure or a factory, cloudpickled
    weights.safetensors          a model's trained weights
    initial_weights.safetensors  an estimator's module weights before training
    loss.pkl, optimizer.pkl      an estimator's custom loss / optimizer callable
    lr_scheduler.pkl             ... and learning-rate scheduler callable
    transform.pkl                an estimator's per-image training transform
    score_transform.pkl          an estimator's or model's per-image scoring transform

A save writes everything into a hidden sibling directory, data files before the
metadata, and renames it into place (:mod:`sparkdl.ml.files_hadoop`): a failed or
killed save leaves the path as it was. Over Spark Connect, which has no rename, the
files go into the path itself, metadata last (:mod:`sparkdl.ml.files_connect`).
Loading checks every file and raises :class:`~sparkdl.errors.CorruptModelError`
naming the one that is missing or malformed, before anything is built.

Weights are never pickled. ``.pkl`` files run code when loaded, as any pickle
does: load them from trusted paths only (``load(path, trusted=False)`` refuses
them). ``load(path, trusted=False)`` loads only a network spec: a TorchScript
archive imports no Python code (``torch.jit.load`` reads its data with a restricted
unpickler and runs TorchScript in torch's interpreter) but is still a program whose
operators can read files and allocate memory, so it is refused there too. The model
of a TorchScript archive keeps ``weights.safetensors`` as every model does (the
archive's state dict, loaded over the archive's own tensors): the weights are stored
twice, and ``TorchModel.version`` digests them.
The Scala classes read and write the same files (except ``torchscript.pt``, which
only Python loads), so either language loads the other's models.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.ml.util import DefaultParamsReader, MLReader, MLWriter

from sparkdl.architecture import (
    Architecture,
    check_weights,
    dumps_code,
    loads_code,
    weights_from_bytes,
    weights_to_bytes,
)
from sparkdl.errors import ConfigError, CorruptModelError, ModelNotFoundError, UntrustedCodeError
from sparkdl.history import TrainingHistory
from sparkdl.ml.files import ModelFiles, files_for

#: The file of an architecture, by kind: a JSON spec is not a pickle.
ARCHITECTURE_FILES = {"spec": "network.json", "module": "architecture.pkl",
                      "factory": "architecture.pkl", "torchscript": "torchscript.pt"}
#: Where models saved before the file was named by kind keep any architecture.
LEGACY_ARCHITECTURE_FILE = "architecture.pkl"
WEIGHTS_FILE = "weights.safetensors"
INITIAL_WEIGHTS_FILE = "initial_weights.safetensors"
CODE_FILES = {"loss": "loss.pkl", "optimizer": "optimizer.pkl",
              "lrScheduler": "lr_scheduler.pkl", "transform": "transform.pkl",
              "scoreTransform": "score_transform.pkl"}
METADATA_DIR = "metadata"
_SPARK_VERSION = re.compile(r"\d+\.\d+")
_SPARKDL_CLASSES = ("TorchModel", "TorchEstimator")
#: Compared with ``==`` (a tuple, not a dict): a JSON list or object is no hashable key.
_KINDS = tuple(ARCHITECTURE_FILES)


class _AtomicWriter(MLWriter):
    """An ``MLWriter`` whose ``save`` writes a temporary sibling and renames it into place."""

    def __init__(self, instance) -> None:
        super().__init__()
        self.instance = instance
        self._files: ModelFiles | None = None

    @property
    def files(self) -> ModelFiles:
        """The files of this writer's session (Hadoop's FileSystem or Connect's APIs)."""
        if self._files is None:
            self._files = files_for(self.sparkSession)
        return self._files

    def save(self, path: str) -> None:
        """Save to ``path``; with ``overwrite()``, replace what is there (in a classic
        session only once the new directory is complete)."""
        if not isinstance(path, str):
            raise TypeError(f"path should be a string, got type {type(path).__name__}")
        self.files.save_directory(path, self.saveImpl, self.shouldOverwrite)


class TorchModelWriter(_AtomicWriter):
    """Writes a :class:`~sparkdl.TorchModel`: weights, architecture, then metadata."""

    def saveImpl(self, path: str) -> None:
        model = self.instance
        self.files.write_bytes(f"{path}/{WEIGHTS_FILE}", model._weights)
        arch = model._architecture
        self.files.write_bytes(f"{path}/{ARCHITECTURE_FILES[arch.kind]}", arch.payload)
        extra = {"architectureKind": arch.kind, "history": model.history.to_dict()}
        if model.getScoreTransform() is not None:  # only then: Scala reads the rest
            self.files.write_bytes(f"{path}/{CODE_FILES['scoreTransform']}",
                                   dumps_code(model.getScoreTransform()))
            extra["customCode"] = ["scoreTransform"]
        self.files.save_metadata(model, path, extra)


class TorchEstimatorWriter(_AtomicWriter):
    """Writes a :class:`~sparkdl.TorchEstimator`: network, callables, then metadata.

    A module given as an instance keeps its current weights, so the loaded
    estimator starts from the same point and fits the same weights.
    """

    def saveImpl(self, path: str) -> None:
        est = self.instance
        model = est.getModel()
        arch = Architecture.of(model) if model is not None else None
        custom = [name for name in CODE_FILES if est._custom_code(name) is not None]
        if arch is not None:
            self.files.write_bytes(f"{path}/{ARCHITECTURE_FILES[arch.kind]}", arch.payload)
            if arch.kind == "module":
                self.files.write_bytes(f"{path}/{INITIAL_WEIGHTS_FILE}", weights_to_bytes(model))
        for name in custom:
            self.files.write_bytes(f"{path}/{CODE_FILES[name]}", dumps_code(est._custom_code(name)))
        self.files.save_metadata(
            est, path, {"architectureKind": arch.kind if arch else None, "customCode": custom})


# -- reading ---------------------------------------------------------------------


class _SavedDir:
    """The files of one saved model or estimator, each checked as it is read."""

    def __init__(self, files: ModelFiles, path: str, what: str) -> None:
        self.files = files
        self.path = path
        self.what = what

    def file(self, name: str) -> str:
        return f"{self.path}/{name}"

    def has(self, name: str) -> bool:
        return self.files.exists(self.file(name))

    def missing(self, name: str, detail: str = "is missing") -> CorruptModelError:
        return CorruptModelError(
            f"{self.file(name)} {detail}: {self.path} is not a complete saved {self.what} "
            "(written by a save that did not finish, or files were removed). Save it again, "
            "or load another path.")

    def read(self, name: str) -> bytes:
        path = self.file(name)
        try:
            return self.files.read_file(path)
        except FileNotFoundError:
            raise self.missing(name) from None
        except IsADirectoryError:
            raise self.missing(name, "is not a file") from None
        except OSError as e:
            raise CorruptModelError(f"{path} cannot be read: {e}") from None

    def metadata(self, cls) -> dict:
        if not self.files.exists(self.path):
            raise ModelNotFoundError(
                f"Nothing is saved at {self.path}: no such file or directory. Check the "
                f"path given to {cls.__name__}.load.")
        if not self.has(METADATA_DIR):
            raise self.missing(METADATA_DIR)
        source = self.file(METADATA_DIR)
        try:
            line = self.files.read_metadata_line(source)
        except (PySparkException, Py4JJavaError, OSError) as e:
            raise CorruptModelError(f"{source} cannot be read: {_message(e)}") from None
        if line is None:
            raise self.missing(METADATA_DIR, "is empty")
        return parse_metadata(line, source, cls.__name__)


def _message(error: Exception) -> str:
    java = getattr(error, "java_exception", None)  # py4j's own text is its call, not why
    text = (java.toString() if java is not None else str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


def parse_metadata(text: str, source: str, expected: str) -> dict:
    """Parse and check the metadata JSON of a saved TorchModel or TorchEstimator.

    Checks what the readers rely on: the fields Spark ML writes (``class``,
    ``uid``, ``sparkVersion``, ``paramMap``, ``defaultParamMap``) and sparkdl's
    (``architectureKind``, ``customCode``, ``history``), each of the right type.

    Args:
        text: the metadata file's first line.
        source: the metadata file, for messages.
        expected: ``"TorchModel"`` or ``"TorchEstimator"``: what is being loaded.

    Raises:
        CorruptModelError: naming ``source`` and the field that is wrong.
        ConfigError: if it is the other sparkdl class (a model loaded as an estimator).

    Example:
        >>> parse_metadata('{"class": 1', "m/metadata", "TorchModel")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sparkdl.errors.CorruptModelError: m/metadata is not valid JSON: Expecting ',' delimiter: ...
    """
    try:
        metadata = json.loads(text)
    except RecursionError:
        raise CorruptModelError(f"{source} is not valid JSON: nested too deeply") from None
    except ValueError as e:
        raise CorruptModelError(f"{source} is not valid JSON: {e}") from None

    def bad(field: str, want: str, value) -> CorruptModelError:
        return CorruptModelError.of_field(f"{source} is not the metadata of a saved {expected}",
                                          field, want, value)

    if not isinstance(metadata, dict):
        raise bad("the metadata", "a JSON object", metadata)
    for field, kind, want in (("class", str, "a string"), ("uid", str, "a string"),
                              ("sparkVersion", str, "a version string"),
                              ("paramMap", dict, "an object")):
        if not isinstance(metadata.get(field), kind):
            raise bad(field, want, metadata.get(field))
    if not _SPARK_VERSION.match(metadata["sparkVersion"]):
        raise bad("sparkVersion", "a version such as '4.0.0'", metadata["sparkVersion"])
    if not isinstance(metadata.setdefault("defaultParamMap", {}), dict):
        raise bad("defaultParamMap", "an object", metadata["defaultParamMap"])
    saved = metadata["class"].rsplit(".", 1)[-1]
    if saved in _SPARKDL_CLASSES and saved != expected:
        raise ConfigError(f"{source} says this is a saved {saved}, not a {expected}. Load it "
                          f"with {saved}.load, or give {expected}.load the path of a {expected}.")
    kind = metadata.get("architectureKind")
    if expected == "TorchModel":
        if kind not in _KINDS:
            raise bad("architectureKind", f"one of {list(_KINDS)}", kind)
        metadata["history"] = _history(metadata.get("history"), bad)
        custom = metadata.setdefault("customCode", [])
        if not isinstance(custom, list) or not all(c == "scoreTransform" for c in custom):
            raise bad("customCode", "absent or ['scoreTransform']", custom)
    else:
        if kind is not None and kind not in _KINDS:
            raise bad("architectureKind", f"null or one of {list(_KINDS)}", kind)
        custom = metadata.setdefault("customCode", [])
        if not isinstance(custom, list) or not all(c in tuple(CODE_FILES) for c in custom):
            raise bad("customCode", f"a list of {list(CODE_FILES)}", custom)
    return metadata


def _history(value, bad) -> TrainingHistory:
    if value is None:
        return TrainingHistory()
    if not isinstance(value, dict):
        raise bad("history", "an object", value)
    types = {"epochs": list, "workers": list, "attempts": list, "backend": str,
             "num_workers": int, "resumed_from_epoch": int}
    known = {f.name for f in fields(TrainingHistory)}
    for key, item in value.items():
        if key not in known:
            raise bad("history", f"an object with keys among {sorted(known)}", value)
        if not isinstance(item, types[key]) or isinstance(item, bool):
            raise bad(f"history.{key}", f"a {types[key].__name__}", item)
        if types[key] is list and not all(isinstance(e, dict) for e in item):
            raise bad(f"history.{key}", "a list of objects", item)
    return TrainingHistory.from_dict(value)


def _set_params(instance, metadata: dict, source: str) -> None:
    """Set the saved Params this class has.

    A model saved by the Scala ``TorchModel`` also records JVM-only Params (such as
    ``pythonExec``), which pyspark's reader would fail on.
    """
    known = {p.name for p in instance.params}
    metadata = {**metadata,
                "paramMap": {k: v for k, v in metadata["paramMap"].items() if k in known},
                "defaultParamMap": {k: v for k, v in metadata.get("defaultParamMap", {}).items()
                                    if k in known}}
    try:
        DefaultParamsReader.getAndSetParams(instance, metadata)
    except (TypeError, ValueError, KeyError, AttributeError, AssertionError) as e:
        raise CorruptModelError(f"{source} holds a Param value that does not fit: "
                                f"{type(e).__name__}: {e}") from None


def _architecture(saved: _SavedDir, kind: str) -> tuple[Architecture, str]:
    """The saved architecture and the file it came from."""
    name = ARCHITECTURE_FILES[kind]
    if not saved.has(name) and saved.has(LEGACY_ARCHITECTURE_FILE):
        name = LEGACY_ARCHITECTURE_FILE
    return Architecture(kind, saved.read(name)), saved.file(name)


def _expected_shapes(arch: Architecture, source: str) -> dict | None:
    """A spec's or TorchScript archive's parameter shapes (nothing allocated); a bad
    one names its file."""
    try:
        return arch.expected_shapes(source)
    except ConfigError as e:
        raise CorruptModelError(f"{source} is not a valid network spec: {e}") from None


def _refuse_untrusted(path: str, what: str, pickled: list[str]) -> None:
    if pickled:
        raise UntrustedCodeError(
            f"The {what} at {path} stores {' and '.join(pickled)} as code (pickled Python "
            "or a TorchScript program), which runs when loaded; trusted=False loads only "
            "sparkdl.nn networks (network.json) with named losses and optimizers. Load it "
            "with trusted=True "
            "only if you trust whoever wrote that path.")


class TorchModelReader(MLReader):
    """Reads what :class:`TorchModelWriter` (or the Scala ``TorchModel``) wrote."""

    def __init__(self, cls, trusted: bool = True) -> None:
        super().__init__()
        self.cls = cls
        self.trusted = trusted

    def load(self, path: str):
        return self.load_from(_SavedDir(files_for(self.sparkSession), path, "model"))

    def load_from(self, saved: _SavedDir):
        """The model in ``saved``, whichever files it is read through."""
        path = saved.path
        metadata = saved.metadata(self.cls)
        kind = metadata["architectureKind"]
        custom = metadata["customCode"]
        if not self.trusted and (kind not in Architecture.CODE_FREE_KINDS or custom):
            _refuse_untrusted(path, "model", (
                [f"its architecture (architectureKind={kind!r}, {ARCHITECTURE_FILES[kind]})"]
                if kind not in Architecture.CODE_FREE_KINDS else [])
                + [f"its {name} ({CODE_FILES[name]})" for name in custom])
        arch, arch_file = _architecture(saved, kind)
        expected = _expected_shapes(arch, arch_file)
        weights = saved.read(WEIGHTS_FILE)
        state = weights_from_bytes(weights, saved.file(WEIGHTS_FILE))
        if expected is not None:
            check_weights(state, expected, saved.file(WEIGHTS_FILE))
        del state
        model = self.cls(arch, weights, metadata["history"])
        model._resetUid(metadata["uid"])
        _set_params(model, metadata, saved.file(METADATA_DIR))
        for name in custom:
            code = loads_code(saved.read(CODE_FILES[name]), saved.file(CODE_FILES[name]))
            if not callable(code):
                raise CorruptModelError(f"{saved.file(CODE_FILES[name])} must hold a callable "
                                        f"{name}. Received: {type(code).__name__}")
            model.setScoreTransform(code)
        return model


class TorchEstimatorReader(MLReader):
    """Reads what :class:`TorchEstimatorWriter` (or the Scala ``TorchEstimator``) wrote."""

    def __init__(self, cls, trusted: bool = True) -> None:
        super().__init__()
        self.cls = cls
        self.trusted = trusted

    def load(self, path: str):
        saved = _SavedDir(files_for(self.sparkSession), path, "estimator")
        metadata = saved.metadata(self.cls)
        kind = metadata.get("architectureKind")
        custom = metadata["customCode"]
        if not self.trusted:
            _refuse_untrusted(path, "estimator", (
                [f"its network (architectureKind={kind!r}, {ARCHITECTURE_FILES[kind]})"]
                if kind not in (None, *Architecture.CODE_FREE_KINDS) else [])
                + [f"its custom {name} ({CODE_FILES[name]})" for name in custom])
        est = self.cls()
        est._resetUid(metadata["uid"])
        _set_params(est, metadata, saved.file(METADATA_DIR))
        if kind is not None:
            est.setModel(self._model(saved, kind))
        for name in custom:
            code = loads_code(saved.read(CODE_FILES[name]), saved.file(CODE_FILES[name]))
            if not callable(code):
                raise CorruptModelError(f"{saved.file(CODE_FILES[name])} must hold a callable "
                                        f"{name}. Received: {type(code).__name__}")
            est._set_custom_code(name, code)
        return est

    @staticmethod
    def _model(saved: _SavedDir, kind: str):
        arch, arch_file = _architecture(saved, kind)
        if kind == "spec":
            _expected_shapes(arch, arch_file)  # parses and checks the spec, naming the file
            return arch.model()
        if kind == "factory":
            factory = loads_code(arch.payload, arch_file)
            if not callable(factory):
                raise CorruptModelError(f"{arch_file} must hold a model factory (a callable). "
                                        f"Received: {type(factory).__name__}")
            return factory
        if kind == "torchscript":  # its weights are in the archive
            return arch.build(source=arch_file)
        initial = saved.file(INITIAL_WEIGHTS_FILE)
        state = weights_from_bytes(saved.read(INITIAL_WEIGHTS_FILE), initial)
        return arch.build(state, source=arch_file, weights_source=initial)


def load_local_model(cls, path: str):
    """A model saved under the local directory ``path``, read without Spark (for
    serving it outside Spark, e.g. the MLflow model :mod:`sparkdl.ml.mlflow_pyfunc`
    logs): :class:`TorchModelReader`'s checks, through :class:`LocalFiles`. It runs
    the architecture's pickled code, if any, as ``trusted=True`` does.

    Raises:
        ModelNotFoundError, CorruptModelError: as :meth:`TorchModel.load`.
    """
    from sparkdl.ml.files_local import LocalFiles

    return TorchModelReader(cls).load_from(_SavedDir(LocalFiles(None), path, "model"))
