"""The fitted model: a Spark ML Transformer holding a network and its weights."""

from __future__ import annotations

import hashlib
from functools import partial

import torch
from pyspark.ml import Model
from pyspark.ml.functions import array_to_vector
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

from sparkdl.architecture import Architecture, weights_from_bytes
from sparkdl.data.columns import require_columns
from sparkdl.errors import SchemaError
from sparkdl.history import TrainingHistory
from sparkdl.ml.params import TrainingParams
from sparkdl.ml.persistence import TorchModelReader, TorchModelWriter
from sparkdl.session import facts_for
from sparkdl.worker.score_task import ScoreSpec, score_batches


class TorchModel(Model, TrainingParams, MLWritable, MLReadable):
    """A trained network that scores DataFrames with ``mapInArrow``.

    Produced by :meth:`sparkdl.TorchEstimator.fit`; scores batch and streaming
    DataFrames. Classifiers add ``probability`` and ``rawPrediction`` vector
    columns next to ``prediction``, as Spark ML classifiers do.

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

    def __init__(self, architecture: Architecture | None = None, weights: bytes = b"",
                 history: TrainingHistory | None = None) -> None:
        super().__init__()
        self._architecture = architecture
        self._weights = weights
        self._history = history or TrainingHistory()
        self._shared: dict[str, object] = {}

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

    def getTask(self) -> str:
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
        feature_cols = self.getFeatureColumns()
        require_columns(dataset.schema, feature_cols, "features")
        outputs = self._output_fields()
        clash = [f.name for f in outputs if f.name in dataset.columns]
        if clash:
            raise SchemaError(
                f"Output column(s) {clash} already exist in the DataFrame. Rename them or "
                "set predictionCol/probabilityCol/rawPredictionCol to new names.")
        # Workers convert the columns as they are (vectors, double arrays) batch by
        # batch: casting in the JVM would ship the features to Python twice.
        spec = self._score_spec(tuple(dataset.columns))
        schema = StructType(list(dataset.schema.fields) + outputs)
        scored = dataset.mapInArrow(
            partial(score_batches, spec, self._payload(dataset.sparkSession)), schema)
        vectors = {spec.raw_col, spec.probability_col} & {f.name for f in outputs}
        return scored.select(*[array_to_vector(c).alias(c) if c in vectors else c
                               for c in scored.columns])

    def _score_spec(self, keep_cols: tuple[str, ...]) -> ScoreSpec:
        shape = self.getFeatureShape()
        return ScoreSpec(
            model_key=self.version, feature_cols=tuple(self.getFeatureColumns()),
            feature_shape=tuple(shape) if shape else None,
            keep_cols=keep_cols, task=self.getTask(),
            batch_size=self.getBatchSize(), prediction_col=self.getPredictionCol(),
            probability_col=self.getProbabilityCol(), raw_col=self.getRawPredictionCol(),
            scalar_prediction=self._scalar_prediction(),
            version_col=self.getModelVersionCol())

    def _scalar_prediction(self) -> bool:
        shape = self.getOrDefault(self.outputShape)
        return int(torch.Size(shape).numel()) == 1

    def _output_fields(self) -> list[StructField]:
        task = self.getTask()
        scalar = self._scalar_prediction()
        pred_type = DoubleType() if (task == "multiclass" or scalar) else ArrayType(DoubleType())
        fields = [StructField(self.getPredictionCol(), pred_type)]
        if task != "regression":
            if self.getRawPredictionCol():
                fields.append(StructField(self.getRawPredictionCol(), ArrayType(DoubleType())))
            if self.getProbabilityCol():
                fields.append(StructField(self.getProbabilityCol(), ArrayType(DoubleType())))
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
                and refuses a cloudpickled module or factory, which would run its
                code on load.

        Raises:
            UntrustedCodeError: with ``trusted=False``, for a pickled architecture.
            ModelNotFoundError: if nothing is at ``path``.
            CorruptModelError: naming the file, if one is missing or malformed (no
                metadata, truncated weights, weights that do not fit the network).

        Example::

            TorchModel.load("hdfs:///models/digits", trusted=False)
        """
        return cls.read(trusted).load(path)
