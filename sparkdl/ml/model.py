"""The fitted model: a Spark ML Transformer holding a network and its weights.

A model also comes from a network trained elsewhere, without ``fit``:
:meth:`TorchModel.fromModule`, :meth:`TorchModel.fromTorchScript` and
:meth:`TorchModel.fromSpec` (Spark's ``predict_batch_udf`` is the peer).
"""

from __future__ import annotations

import dataclasses
import hashlib
from functools import partial

import torch
from pyspark.ml import Model
from pyspark.ml.functions import array_to_vector
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

from sparkdl.architecture import (
    Architecture,
    check_weights,
    load_torchscript,
    weights_from_bytes,
    weights_to_bytes,
)
from sparkdl.data.columns import input_specs, require_columns
from sparkdl.data.inputs import Padding
from sparkdl.errors import ConfigError, SchemaError
from sparkdl.history import TrainingHistory
from sparkdl.losses import TASKS
from sparkdl.ml.files import read_user_file
from sparkdl.ml.params import TrainingParams
from sparkdl.ml.persistence import TorchModelReader, TorchModelWriter
from sparkdl.session import facts_for
from sparkdl.worker.score_task import ScoreSpec, score_batches


class TorchModel(Model, TrainingParams, MLWritable, MLReadable):
    """A trained network that scores DataFrames with ``mapInArrow``.

    Produced by :meth:`sparkdl.TorchEstimator.fit`, or from a network trained
    elsewhere by :meth:`fromModule`, :meth:`fromTorchScript` or :meth:`fromSpec`;
    scores batch and streaming DataFrames. Classifiers add ``probability`` and
    ``rawPrediction`` vector columns next to ``prediction``, as Spark ML classifiers do.

    It carries the Params it was fitted with, as Spark ML models do
    (``getEpochs()``, ``getOptimizerParams()``, ``extractParamMap()``), so a
    ``CrossValidatorModel``'s ``bestModel`` shows which setting won.

    Persistence writes Spark ML metadata (JSON params), the weights as
    safetensors and the architecture: a ``sparkdl.nn`` network as its JSON spec,
    anything else with cloudpickle (see :mod:`sparkdl.ml.persistence`). Loading
    runs pickled architecture code: load such models from trusted paths only.

    Example::

        model = est.fit(train_df)
        model.transform(test_df).select("prediction", "probability")
        model.save("/tmp/m")
        same = TorchModel.load("/tmp/m")
    """

    task = Param(Params._dummy(), "task", "multiclass, binary or regression",
                 typeConverter=TypeConverters.toString)
    outputShape = Param(Params._dummy(), "outputShape", "per-row shape of the network output",
                        typeConverter=TypeConverters.toListInt)
    outputTasks = Param(Params._dummy(), "outputTasks",
                        "with labelCols, the task of each output",
                        typeConverter=TypeConverters.toListString)
    outputShapes = Param(Params._dummy(), "outputShapes",
                         "with labelCols, the per-row shape of each output",
                         typeConverter=lambda v: [TypeConverters.toListInt(s) for s in v])

    def __init__(self, architecture: Architecture | None = None, weights: bytes = b"",
                 history: TrainingHistory | None = None) -> None:
        super().__init__()
        self._architecture = architecture
        self._weights = weights
        self._history = history or TrainingHistory()
        self._shared: dict[str, object] = {}
        # image inputs' per-image scoring transform: code, not a Param (nor named
        # ``transform``, which is Spark's method)
        self._score_transform = None

    # -- a model trained elsewhere ------------------------------------------------

    @classmethod
    def fromModule(cls, module: torch.nn.Module, *, task: str = "multiclass",
                   featureShape: list[int] | None = None, featuresCol: str = "features",
                   featuresCols: list[str] | None = None, predictionCol: str = "prediction",
                   probabilityCol: str = "probability",
                   rawPredictionCol: str = "rawPrediction", batchSize: int = 64,
                   modelVersionCol: str = "") -> TorchModel:
        """A model scoring with ``module`` and its current weights, without ``fit``.

        The module is captured as :meth:`sparkdl.TorchEstimator.fit` captures it (a
        weightless skeleton with cloudpickle, a ``torch.jit.ScriptModule`` as its
        TorchScript archive; the weights as safetensors), rebuilt on CPU and run
        once on two rows of zeros of ``featureShape``: its per-row output shape
        becomes ``outputShape``. The model saves, loads and scores like a fitted
        one, with an empty :attr:`history`.

        Args:
            module: the trained ``torch.nn.Module`` (any device; weights are copied
                to CPU). Its train/eval flag is left as it is; scoring runs in eval mode.
            task: ``"multiclass"`` (outputs ``(batch, classes)`` logits: prediction
                is the argmax, probability the softmax), ``"binary"`` (logits:
                probability is the sigmoid) or ``"regression"`` (prediction is the output).
            featureShape: per-row input shape, e.g. ``[1, 28, 28]``. Default: the
                ``in_features`` of a leading ``torch.nn.Linear`` (of nested
                ``Sequential``), or ``[len(featuresCols)]``; otherwise required.
            featuresCol: the feature column (a vector or numeric array).
            featuresCols: several numeric columns, instead of ``featuresCol``.
            predictionCol, probabilityCol, rawPredictionCol: output columns (``""``
                skips probability or rawPrediction).
            batchSize: rows per forward pass.
            modelVersionCol: a column naming :attr:`version` on each row; ``""`` for none.

        Raises:
            ConfigError: for an unknown ``task`` (the valid ones are listed), a
                missing ``featureShape`` that cannot be inferred, a module that fails
                on rows of ``featureShape``, a multiclass module whose output is not
                ``(batch, classes)``, or a Param value of the wrong type.

        Example:
            >>> import torch
            >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
            ...                           torch.nn.Linear(8, 3))
            >>> model = TorchModel.fromModule(net, task="multiclass")
            >>> model.getFeatureShape(), model.getOrDefault("outputShape")
            ([4], [3])

            Then ``model.transform(df)`` adds ``prediction``, ``probability`` and
            ``rawPrediction``; ``model.save(path)`` and ``TorchModel.load(path)``.
        """
        from sparkdl.nn import Network

        if isinstance(module, Network):
            raise ConfigError("fromModule takes a torch.nn.Module; a sparkdl.nn.Network has "
                              "no trained weights: use TorchModel.fromSpec(network, "
                              "weightsPath) with its safetensors file.")
        if not isinstance(module, torch.nn.Module):
            raise ConfigError("fromModule takes a torch.nn.Module (or a torch.jit.ScriptModule). "
                              f"Received: module={type(module).__name__}")
        return cls._trained_elsewhere(
            Architecture.of(module), weights_to_bytes(module), _leading_features(module),
            task=task, featureShape=featureShape, featuresCol=featuresCol,
            featuresCols=featuresCols, predictionCol=predictionCol,
            probabilityCol=probabilityCol, rawPredictionCol=rawPredictionCol,
            batchSize=batchSize, modelVersionCol=modelVersionCol)

    @classmethod
    def fromTorchScript(cls, path: str, *, task: str = "multiclass",
                        featureShape: list[int] | None = None, featuresCol: str = "features",
                        featuresCols: list[str] | None = None,
                        predictionCol: str = "prediction", probabilityCol: str = "probability",
                        rawPredictionCol: str = "rawPrediction", batchSize: int = 64,
                        modelVersionCol: str = "") -> TorchModel:
        """A model scoring with a TorchScript file (what ``torch.jit.save`` writes).

        The archive is kept as it is (architecture kind ``"torchscript"``): no
        Python code is pickled, so the saved model loads with
        ``TorchModel.load(path, trusted=False)``. Its state dict is also kept as
        safetensors, as every model's weights are (see :mod:`sparkdl.ml.persistence`).

        Args:
            path: the file: a local path, or any URI the active SparkSession's
                Hadoop file system reads (``hdfs://``, ``s3a://``, ...).
            task, featureShape, featuresCol, featuresCols, predictionCol,
                probabilityCol, rawPredictionCol, batchSize, modelVersionCol: as in
                :meth:`fromModule`. ``featureShape`` is required unless
                ``featuresCols`` gives it (a TorchScript module does not say its input).

        Raises:
            ModelNotFoundError: no file is at ``path``.
            CorruptModelError: naming ``path``, if it is not a TorchScript archive.
            ConfigError: as :meth:`fromModule`.

        Example::

            torch.jit.save(torch.jit.script(net), "/tmp/net.pt")
            model = TorchModel.fromTorchScript("/tmp/net.pt", featureShape=[4],
                                               task="multiclass")
            model.transform(df).select("prediction", "probability")
        """
        data = read_user_file(path, "a TorchScript file (torch.jit.save)", "path")
        module = load_torchscript(data, str(path))
        return cls._trained_elsewhere(
            Architecture("torchscript", data), weights_to_bytes(module), None,
            task=task, featureShape=featureShape, featuresCol=featuresCol,
            featuresCols=featuresCols, predictionCol=predictionCol,
            probabilityCol=probabilityCol, rawPredictionCol=rawPredictionCol,
            batchSize=batchSize, modelVersionCol=modelVersionCol)

    @classmethod
    def fromSpec(cls, network, weightsPath: str, *, task: str = "multiclass",
                 featureShape: list[int] | None = None, featuresCol: str = "features",
                 featuresCols: list[str] | None = None, predictionCol: str = "prediction",
                 probabilityCol: str = "probability", rawPredictionCol: str = "rawPrediction",
                 batchSize: int = 64, modelVersionCol: str = "") -> TorchModel:
        """A model scoring with a ``sparkdl.nn`` network and a safetensors weights file.

        The weights must have exactly the network's tensor names and shapes; they
        are kept byte for byte, so :attr:`version` digests that file. Nothing is
        pickled: the saved model loads with ``TorchModel.load(path, trusted=False)``,
        and in Scala.

        Args:
            network: a ``sparkdl.nn.Network``, its JSON text (``network.to_json()``),
                or the path of a file holding it.
            weightsPath: a safetensors file (``safetensors.torch.save_file(
                net.build().state_dict(), path)``): a local path or any URI the
                active SparkSession reads.
            task, featuresCol, featuresCols, predictionCol, probabilityCol,
                rawPredictionCol, batchSize, modelVersionCol: as in :meth:`fromModule`.
            featureShape: default: the shape of the network's ``Input``.

        Raises:
            ModelNotFoundError: no file is at ``weightsPath`` (or the network's path).
            CorruptModelError: naming ``weightsPath``, if it is not safetensors or
                does not fit the network (each missing, unexpected or misshapen tensor
                named).
            ConfigError: for an invalid network spec, or as :meth:`fromModule`.

        Example::

            net = Sequential([Input((4,)), Dense(8, activation="relu"), Dense(3)])
            save_file(trained_state_dict, "/tmp/net.safetensors")
            model = TorchModel.fromSpec(net, "/tmp/net.safetensors", task="multiclass")
        """
        from sparkdl.nn import Network

        if isinstance(network, str) and not network.lstrip().startswith("{"):
            network = read_user_file(network, "a network spec (network.to_json())", "network")
        if isinstance(network, (str, bytes)):
            network = Network.from_json(network)
        if not isinstance(network, Network):
            raise ConfigError("network must be a sparkdl.nn.Network, its JSON or a path to "
                              f"it. Received: network={type(network).__name__}")
        if len(network.inputs) != 1:
            raise ConfigError(f"A TorchModel feeds one input; this network has "
                              f"{len(network.inputs)}: {[i.name for i in network.inputs]}.")
        arch = Architecture.of(network)
        weights = read_user_file(weightsPath, "a safetensors file", "weightsPath")
        check_weights(weights_from_bytes(weights, str(weightsPath)), arch.expected_shapes(),
                      str(weightsPath))
        return cls._trained_elsewhere(
            arch, weights, tuple(network.inputs[0].shape),
            task=task, featureShape=featureShape, featuresCol=featuresCol,
            featuresCols=featuresCols, predictionCol=predictionCol,
            probabilityCol=probabilityCol, rawPredictionCol=rawPredictionCol,
            batchSize=batchSize, modelVersionCol=modelVersionCol)

    @classmethod
    def _trained_elsewhere(cls, arch: Architecture, weights: bytes,
                           inferred: tuple[int, ...] | None, *, task: str,
                           featureShape, **params) -> TorchModel:
        """The model of ``arch`` and ``weights``, its Params set and checked, its
        output shape probed on the module executors will build."""
        from sparkdl.ml.preflight import probe_output

        if task not in TASKS:
            raise ConfigError(f"task must be one of {list(TASKS)}. Received: task={task!r}")
        model = cls(arch, weights)
        for name, value in {**params, "featureShape": featureShape}.items():
            if value is None:
                continue
            try:
                model._set(**{name: value})
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{name} does not fit its Param ({e}). "
                                  f"Received: {name}={value!r}") from None
        if model.getBatchSize() < 1:
            raise ConfigError(f"batchSize must be >= 1. Received: batchSize={model.getBatchSize()}")
        shape = model.getFeatureShape()
        if shape is None:
            if params.get("featuresCols"):
                shape = [len(params["featuresCols"])]
            elif inferred is not None:
                shape = list(inferred)
            else:
                raise ConfigError(
                    "featureShape is required: the per-row input shape cannot be inferred "
                    "from this network (e.g. featureShape=[784] for vectors of 784 values, "
                    "featureShape=[1, 28, 28] for images).")
        net = arch.build(weights_from_bytes(weights)).eval()
        output_shape, _ = probe_output(net, tuple(shape))
        if task == "multiclass" and len(output_shape) != 1:
            raise ConfigError(
                "A multiclass model must output (batch, classes); this model outputs "
                f"(batch, {', '.join(map(str, output_shape))}). Use task='regression' or "
                "'binary', or reshape the output.")
        return model._set(task=task, featureShape=list(shape), outputShape=list(output_shape))

    @property
    def history(self) -> TrainingHistory:
        """Per-epoch train/validation metrics, the backend used and the workers."""
        return self._history

    def getModel(self) -> torch.nn.Module:
        """The trained ``torch.nn.Module``, on CPU, in eval mode.

        Example::

            net = model.getModel()
            net(torch.zeros(1, 64))
        """
        return self._architecture.build(weights_from_bytes(self._weights)).eval()

    def setScoreTransform(self, fn) -> TorchModel:
        """Set the per-image transform applied when scoring image ``inputCols``.

        Each image is decoded on the worker into a uint8 RGB tensor ``(3, H, W)``;
        ``fn`` returns a tensor (uint8 results are scaled to [0, 1], others cast to
        float32). A fitted model starts with the estimator's ``scoreTransform``;
        ``save`` pickles it (``load(path, trusted=False)`` refuses it).

        Args:
            fn: a callable on one image tensor (a torchvision ``v2.Compose``), or None.

        Example::

            model.setScoreTransform(v2.Compose([v2.Resize((32, 32)),
                                                v2.ToDtype(torch.float32, scale=True)]))
        """
        from sparkdl.data.images import check_transform

        self._score_transform = check_transform("scoreTransform", fn)
        return self

    def getScoreTransform(self):
        """The per-image scoring transform of image inputs, or ``None``."""
        return self._score_transform

    def getTask(self) -> str:
        """``"multiclass"``, ``"binary"`` or ``"regression"``: how outputs become predictions."""
        return self.getOrDefault(self.task)

    @property
    def version(self) -> str:
        """``<uid>-<first 16 hex digits of the weights' SHA-1>``: which model scored a row.

        ``modelVersionCol`` puts it on every scored row; it changes with any weight
        and survives ``save``/``load``.

        Example::

            model.setModelVersionCol("modelVersion").transform(df).select("modelVersion")
            # TorchModel_4a1f..-9c2e51b07d3a4f10
        """
        return f"{self.uid}-{hashlib.sha1(self._weights).hexdigest()[:16]}"

    def _payload(self, spark: SparkSession):
        """The network for scoring tasks, shared once per session (a broadcast in a
        classic session; over Spark Connect, see :mod:`sparkdl.worker.model_payload`)."""
        facts = facts_for(spark)
        session = getattr(spark, "session_id", None) or facts.app_id
        if session not in self._shared:
            arch = self._architecture
            self._shared[session] = facts.share_model(
                self.version, (arch.kind, arch.payload, self._weights))
        return self._shared[session]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        input_cols = self._input_columns()
        feature_cols = input_cols or self.getFeatureColumns()
        kinds = require_columns(dataset.schema, feature_cols, "features",
                                stacked=input_cols is None)
        inputs = input_specs(dataset.schema, input_cols, kinds,
                             Padding.from_param(self.getPadding())) if input_cols else None
        outputs = self._output_fields()
        clash = [f.name for f in outputs if f.name in dataset.columns]
        if clash:
            raise SchemaError(
                f"Output column(s) {clash} already exist in the DataFrame. Rename them or "
                "set predictionCol/probabilityCol/rawPredictionCol to new names.")
        # Workers convert the columns as they are (vectors, double arrays) batch by
        # batch: casting in the JVM would ship the features to Python twice.
        spec = dataclasses.replace(self._score_spec(tuple(dataset.columns)), inputs=inputs,
                                   transform=self._score_transform)
        schema = StructType(list(dataset.schema.fields) + outputs)
        scored = dataset.mapInArrow(
            partial(score_batches, spec, self._payload(dataset.sparkSession)), schema)
        vectors = {c for h in spec.heads or (spec,) for c in (h.raw_col, h.probability_col)} \
            & {f.name for f in outputs}
        return scored.select(*[array_to_vector(c).alias(c) if c in vectors else c
                               for c in scored.columns])

    def _score_spec(self, keep_cols: tuple[str, ...]) -> ScoreSpec:
        shape = self.getFeatureShape()
        heads = self._heads()
        spec = ScoreSpec(
            model_key=self.version, feature_cols=tuple(self.getFeatureColumns()),
            feature_shape=tuple(shape) if shape else None,
            keep_cols=keep_cols, task=heads[0][0],
            batch_size=self.getBatchSize(), prediction_col=self.getPredictionCol(),
            probability_col=self.getProbabilityCol(), raw_col=self.getRawPredictionCol(),
            scalar_prediction=_scalar(heads[0][1]),
            version_col=self.getModelVersionCol())
        if len(heads) == 1 and not heads[0][2]:
            return spec
        return dataclasses.replace(spec, heads=tuple(
            dataclasses.replace(spec, task=task, scalar_prediction=_scalar(shape),
                                prediction_col=_named(spec.prediction_col, suffix),
                                probability_col=_named(spec.probability_col, suffix),
                                raw_col=_named(spec.raw_col, suffix))
            for task, shape, suffix in heads))

    def _heads(self) -> list[tuple[str, list[int], str]]:
        """Per network output: its task, per-row shape and output-column suffix
        (``_<label column>`` for a multi-output model, else none)."""
        labels = self.getLabelCols()
        if labels and self.isDefined(self.outputTasks):
            return [(task, shape, f"_{label}") for task, shape, label in zip(
                self.getOrDefault(self.outputTasks), self.getOrDefault(self.outputShapes),
                labels)]
        return [(self.getTask(), self.getOrDefault(self.outputShape), "")]

    def _scalar_prediction(self) -> bool:
        return _scalar(self.getOrDefault(self.outputShape))

    def _output_fields(self) -> list[StructField]:
        fields = []
        for task, shape, suffix in self._heads():
            scalar = _scalar(shape)
            pred_type = DoubleType() if (task == "multiclass" or scalar) \
                else ArrayType(DoubleType())
            fields.append(StructField(_named(self.getPredictionCol(), suffix), pred_type))
            if task != "regression":
                for col in (self.getRawPredictionCol(), self.getProbabilityCol()):
                    if col:
                        fields.append(StructField(_named(col, suffix), ArrayType(DoubleType())))
        if self.getModelVersionCol():
            fields.append(StructField(self.getModelVersionCol(), StringType()))
        return fields

    def write(self) -> MLWriter:
        return TorchModelWriter(self)

    @classmethod
    def read(cls, trusted: bool = True) -> MLReader:
        """A reader; ``trusted=False`` refuses models whose architecture is pickled code."""
        return TorchModelReader(cls, trusted)

    @classmethod
    def load(cls, path: str, trusted: bool = True) -> TorchModel:
        """Load a model saved with :meth:`save`.

        Args:
            path: any Spark path (local, ``hdfs://``, ...).
            trusted: ``False`` loads only a ``sparkdl.nn`` network (``network.json``)
                or a TorchScript archive (``torchscript.pt``, which ``torch.jit.load``
                reads without importing Python code), and refuses a cloudpickled
                module or factory, which would run its code on load.

        Raises:
            UntrustedCodeError: with ``trusted=False``, for a pickled architecture.
            ModelNotFoundError: if nothing is at ``path``.
            CorruptModelError: naming the file, if one is missing or malformed (no
                metadata, truncated weights, weights that do not fit the network).

        Example::

            TorchModel.load("hdfs:///models/digits", trusted=False)
        """
        return cls.read(trusted).load(path)


def _leading_features(module: torch.nn.Module) -> tuple[int, ...] | None:
    """``(in_features,)`` of the ``Linear`` a (nested) ``Sequential`` starts with."""
    first = module
    while isinstance(first, torch.nn.Sequential) and len(first):
        first = first[0]
    return (first.in_features,) if isinstance(first, torch.nn.Linear) else None


def _scalar(shape) -> bool:
    return int(torch.Size(shape).numel()) == 1


def _named(column: str, suffix: str) -> str:
    """A multi-output model's column for one output (``prediction_<label>``); ``""``
    (no such column) stays ``""``."""
    return f"{column}{suffix}" if column else ""
