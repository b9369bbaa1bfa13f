"""How :class:`~sparkdl.TorchEstimator` and :class:`~sparkdl.TorchModel` are saved.

Both follow Spark ML's layout: ``metadata/`` written by pyspark's
``DefaultParamsWriter`` (class, uid, every Param as JSON), so ``Pipeline``,
``CrossValidator`` and ``TrainValidationSplit`` save and load them like any stage,
plus files beside it::

    network.json                 a sparkdl.nn network's JSON spec (kind "spec")
    architecture.pkl             a module's structure or a factory, cloudpickled
    weights.safetensors          a model's trained weights
    initial_weights.safetensors  an estimator's module weights before training
    loss.pkl, optimizer.pkl      an estimator's custom loss / optimizer callable

Weights are never pickled. ``.pkl`` files run code when loaded, as any pickle
does: load them from trusted paths only. The Scala classes read and write the
same files, so either language loads the other's models.
"""

from __future__ import annotations

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReader, MLWriter

from sparkdl.architecture import Architecture, dumps_code, loads_code, weights_to_bytes
from sparkdl.errors import UntrustedCodeError
from sparkdl.history import TrainingHistory
from sparkdl.ml.files import exists, read_bytes, write_bytes

#: The file of an architecture, by kind: a JSON spec is not a pickle.
ARCHITECTURE_FILES = {"spec": "network.json", "module": "architecture.pkl",
                      "factory": "architecture.pkl"}
#: Where models saved before the file was named by kind keep any architecture.
LEGACY_ARCHITECTURE_FILE = "architecture.pkl"
WEIGHTS_FILE = "weights.safetensors"
INITIAL_WEIGHTS_FILE = "initial_weights.safetensors"
CODE_FILES = {"loss": "loss.pkl", "optimizer": "optimizer.pkl"}


def _write_architecture(sc, path: str, arch: Architecture) -> None:
    write_bytes(sc, f"{path}/{ARCHITECTURE_FILES[arch.kind]}", arch.payload)


def _read_architecture(sc, path: str, kind: str) -> Architecture:
    name = ARCHITECTURE_FILES[kind]
    if not exists(sc, f"{path}/{name}"):
        name = LEGACY_ARCHITECTURE_FILE
    return Architecture(kind, read_bytes(sc, f"{path}/{name}"))


def _set_params(instance, metadata: dict) -> None:
    """Set the saved Params this class has.

    A model saved by the Scala ``TorchModel`` also records JVM-only Params (such as
    ``pythonExec``), which pyspark's reader would fail on.
    """
    known = {p.name for p in instance.params}
    metadata = {**metadata,
                "paramMap": {k: v for k, v in metadata["paramMap"].items() if k in known},
                "defaultParamMap": {k: v for k, v in metadata.get("defaultParamMap", {}).items()
                                    if k in known}}
    DefaultParamsReader.getAndSetParams(instance, metadata)


class TorchModelWriter(MLWriter):
    """Writes a :class:`~sparkdl.TorchModel`: metadata, architecture, weights."""

    def __init__(self, instance) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        model = self.instance
        DefaultParamsWriter.saveMetadata(
            model, path, self.sc,
            extraMetadata={"architectureKind": model._architecture.kind,
                           "history": model.history.to_dict()})
        _write_architecture(self.sc, path, model._architecture)
        write_bytes(self.sc, f"{path}/{WEIGHTS_FILE}", model._weights)


class TorchModelReader(MLReader):
    """Reads what :class:`TorchModelWriter` (or the Scala ``TorchModel``) wrote."""

    def __init__(self, cls, trusted: bool = True) -> None:
        super().__init__()
        self.cls = cls
        self.trusted = trusted

    def load(self, path: str):
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        kind = metadata["architectureKind"]
        if not self.trusted and kind != "spec":
            raise UntrustedCodeError(
                f"The model at {path} stores its architecture as pickled Python code "
                f"(architectureKind={kind!r}, {ARCHITECTURE_FILES[kind]}), which runs when "
                "loaded; trusted=False loads only sparkdl.nn networks (network.json). Load "
                "it with trusted=True only if you trust whoever wrote that path.")
        arch = _read_architecture(self.sc, path, kind)
        model = self.cls(arch, read_bytes(self.sc, f"{path}/{WEIGHTS_FILE}"),
                         TrainingHistory.from_dict(metadata.get("history") or {}))
        model._resetUid(metadata["uid"])
        _set_params(model, metadata)
        return model


class TorchEstimatorWriter(MLWriter):
    """Writes a :class:`~sparkdl.TorchEstimator`: metadata, network, callables.

    A module given as an instance keeps its current weights, so the loaded
    estimator starts from the same point and fits the same weights.
    """

    def __init__(self, instance) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        est = self.instance
        model = est.getModel()
        arch = Architecture.of(model) if model is not None else None
        custom = [name for name in CODE_FILES if est._custom_code(name) is not None]
        DefaultParamsWriter.saveMetadata(
            est, path, self.sc,
            extraMetadata={"architectureKind": arch.kind if arch else None,
                           "customCode": custom})
        if arch is None:
            return
        _write_architecture(self.sc, path, arch)
        if arch.kind == "module":
            write_bytes(self.sc, f"{path}/{INITIAL_WEIGHTS_FILE}", weights_to_bytes(model))
        for name in custom:
            write_bytes(self.sc, f"{path}/{CODE_FILES[name]}", dumps_code(est._custom_code(name)))


class TorchEstimatorReader(MLReader):
    """Reads what :class:`TorchEstimatorWriter` wrote."""

    def __init__(self, cls) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        est = self.cls()
        est._resetUid(metadata["uid"])
        _set_params(est, metadata)
        kind = metadata.get("architectureKind")
        if kind is not None:
            arch = _read_architecture(self.sc, path, kind)
            initial = read_bytes(self.sc, f"{path}/{INITIAL_WEIGHTS_FILE}") \
                if kind == "module" else None
            est.setModel(arch.model(initial))
        for name in metadata.get("customCode") or []:
            code = read_bytes(self.sc, f"{path}/{CODE_FILES[name]}")
            est._set_custom_code(name, loads_code(code))
        return est
