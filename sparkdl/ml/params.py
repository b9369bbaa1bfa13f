"""Params shared by :class:`TorchEstimator` and :class:`TorchModel`.

Every Param holds a JSON-friendly value so that Spark ML persistence works;
callables (a custom loss or optimizer) and the network itself live outside Params.
"""

from __future__ import annotations

import json

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasFeaturesCol, HasLabelCol, HasPredictionCol, HasSeed


def _to_dict(value) -> dict:
    # A JSON object string is what the Scala estimator stores for the same Params, so
    # a model saved from Scala loads in Python.
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise TypeError(f"expected a dict or a JSON object, got {value!r}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"expected a dict with string keys, got {value!r}")
    return dict(value)


def _to_loss(value) -> str | list[str]:
    # One name, or one per output of a multi-output model (labelCols).
    if isinstance(value, (list, tuple)):
        return TypeConverters.toListString(value)
    return TypeConverters.toString(value)


def _to_shape(value) -> list[int]:
    shape = TypeConverters.toListInt(value)
    if not shape or any(d < 1 for d in shape):
        raise TypeError(f"expected a non-empty list of positive sizes, got {value!r}")
    return shape


class ScoringParams(HasFeaturesCol, HasPredictionCol):
    """Params needed to turn feature columns into predictions."""

    featuresCols = Param(Params._dummy(), "featuresCols",
                         "several numeric feature columns, used instead of featuresCol",
                         typeConverter=TypeConverters.toListString)
    inputCols = Param(Params._dummy(), "inputCols",
                      "columns passed to forward one tensor each, in order (model(a, b)); "
                      "integer columns as int64, the rest float32; used instead of "
                      "featuresCol/featuresCols",
                      typeConverter=TypeConverters.toListString)
    padding = Param(Params._dummy(), "padding",
                    "pad ragged array columns per batch: {'value': 0, 'maxLength': 256, "
                    "'bucketing': False, 'cols': [...]}; the lengths follow the inputs in "
                    "forward(x, lengths); {} refuses ragged columns",
                    typeConverter=_to_dict)
    featureShape = Param(Params._dummy(), "featureShape",
                         "per-row tensor shape, e.g. [1, 8, 8]; default: what the data has",
                         typeConverter=_to_shape)
    probabilityCol = Param(Params._dummy(), "probabilityCol",
                           "column for class probabilities (classifiers); '' to skip",
                           typeConverter=TypeConverters.toString)
    rawPredictionCol = Param(Params._dummy(), "rawPredictionCol",
                             "column for raw network output (classifiers); '' to skip",
                             typeConverter=TypeConverters.toString)
    batchSize = Param(Params._dummy(), "batchSize", "rows per batch (per worker)",
                      typeConverter=TypeConverters.toInt)
    modelVersionCol = Param(Params._dummy(), "modelVersionCol",
                            "column naming the model version that scored each row "
                            "(uid and weights digest); '' to skip",
                            typeConverter=TypeConverters.toString)

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(featuresCol="features", predictionCol="prediction",
                         probabilityCol="probability", rawPredictionCol="rawPrediction",
                         batchSize=64, modelVersionCol="", padding={})

    def getFeatureColumns(self) -> list[str]:
        """The feature columns read: ``featuresCols`` if set, else ``[featuresCol]``."""
        if self.isSet(self.featuresCols) and self.getOrDefault(self.featuresCols):
            return list(self.getOrDefault(self.featuresCols))
        return [self.getFeaturesCol()]

    def getInputCols(self) -> list[str] | None:
        """The ``inputCols``, or ``None`` when the features are stacked into one tensor."""
        if self.isDefined(self.inputCols) and self.getOrDefault(self.inputCols):
            return list(self.getOrDefault(self.inputCols))
        return None

    def getPadding(self) -> dict:
        """The padding of ragged columns (``{}``: ragged columns are refused)."""
        return dict(self.getOrDefault(self.padding))

    def _input_columns(self) -> list[str] | None:
        """The columns read one tensor each: ``inputCols``, or with ``padding`` the
        single ``featuresCol``; ``None`` for stacked features."""
        cols = self.getInputCols()
        if cols is None and self.getPadding():
            cols = self.getFeatureColumns()
        return cols

    def setInputCols(self, value: list[str]):
        return self._set(inputCols=value)

    def setPadding(self, value: dict):
        return self._set(padding=value)

    def getFeatureShape(self) -> list[int] | None:
        """The per-row tensor shape, or ``None``."""
        return self.getOrDefault(self.featureShape) if self.isDefined(self.featureShape) else None

    def getProbabilityCol(self) -> str:
        """The class-probability output column (``""``: none)."""
        return self.getOrDefault(self.probabilityCol)

    def getRawPredictionCol(self) -> str:
        """The raw-output column (``""``: none)."""
        return self.getOrDefault(self.rawPredictionCol)

    def getBatchSize(self) -> int:
        """Rows per batch, per worker."""
        return self.getOrDefault(self.batchSize)

    def getModelVersionCol(self) -> str:
        """The model-version output column (``""``: none)."""
        return self.getOrDefault(self.modelVersionCol)

    def setFeaturesCol(self, value: str):
        return self._set(featuresCol=value)

    def setFeaturesCols(self, value: list[str]):
        return self._set(featuresCols=value)

    def setFeatureShape(self, value: list[int]):
        return self._set(featureShape=value)

    def setPredictionCol(self, value: str):
        return self._set(predictionCol=value)

    def setProbabilityCol(self, value: str):
        return self._set(probabilityCol=value)

    def setRawPredictionCol(self, value: str):
        return self._set(rawPredictionCol=value)

    def setBatchSize(self, value: int):
        return self._set(batchSize=value)

    def setModelVersionCol(self, value: str):
        return self._set(modelVersionCol=value)


class TrainingParams(ScoringParams, HasLabelCol, HasSeed):
    """Params of a training run, with getters.

    :class:`~sparkdl.TorchEstimator` sets them; the :class:`~sparkdl.TorchModel` it
    fits carries them too, as Spark ML models do, so ``cvModel.bestModel.getEpochs()``
    and ``bestModel.extractParamMap()`` show which setting won.

    Example:
        >>> from sparkdl import TorchEstimator
        >>> est = TorchEstimator(epochs=3, optimizerParams={"lr": 0.01})
        >>> est.getEpochs(), est.getOptimizerParams(), est.getNumWorkers()
        (3, {'lr': 0.01}, 1)
    """

    loss = Param(Params._dummy(), "loss",
                 "cross_entropy, nll, bce_with_logits, mse, or 'custom' for a callable; with "
                 "labelCols a list with one loss per label column",
                 typeConverter=_to_loss)
    labelCols = Param(Params._dummy(), "labelCols",
                      "label columns of a multi-output model (forward returns a tuple, one "
                      "output per column), used instead of labelCol",
                      typeConverter=TypeConverters.toListString)
    lossWeights = Param(Params._dummy(), "lossWeights",
                        "with labelCols, the weight of each output's loss in the sum "
                        "minimised (default: 1 each)",
                        typeConverter=TypeConverters.toListFloat)
    optimizer = Param(Params._dummy(), "optimizer",
                      "sgd, adam, adamw, rmsprop, or 'custom' for a callable",
                      typeConverter=TypeConverters.toString)
    optimizerParams = Param(Params._dummy(), "optimizerParams",
                            "keyword arguments of the optimizer, e.g. {'lr': 0.001}",
                            typeConverter=_to_dict)
    epochs = Param(Params._dummy(), "epochs", "passes over the training data",
                   typeConverter=TypeConverters.toInt)
    numWorkers = Param(Params._dummy(), "numWorkers",
                       "ranks (Spark barrier tasks) training in parallel",
                       typeConverter=TypeConverters.toInt)
    validationFraction = Param(Params._dummy(), "validationFraction",
                               "fraction of rows held out for validation, in [0, 1)",
                               typeConverter=TypeConverters.toFloat)
    validationCol = Param(Params._dummy(), "validationCol",
                          "boolean column marking validation rows (instead of a fraction)",
                          typeConverter=TypeConverters.toString)
    backend = Param(Params._dummy(), "backend",
                    "allreduce backend: horovod (default where installed), torch, or auto "
                    "(horovod where installed, else torch)",
                    typeConverter=TypeConverters.toString)
    backendOptions = Param(Params._dummy(), "backendOptions",
                           "backend settings; horovod: compression ('none'|'fp16'), op "
                           "('sum'|'adasum'), fusion_threshold_mb, cycle_time_ms, warm_process "
                           "(keep an imported rank process per executor; default True), "
                           "warm_idle_s (how long it waits for the next fit; default 300)",
                           typeConverter=_to_dict)
    backwardPassesPerStep = Param(Params._dummy(), "backwardPassesPerStep",
                                  "batches whose gradients accumulate before each step",
                                  typeConverter=TypeConverters.toInt)
    shuffle = Param(Params._dummy(), "shuffle", "reshuffle each worker's rows every epoch",
                    typeConverter=TypeConverters.toBoolean)
    timeout = Param(Params._dummy(), "timeout",
                    "seconds to wait at rendezvous and in collectives before failing",
                    typeConverter=TypeConverters.toFloat)
    checkpointDir = Param(Params._dummy(), "checkpointDir",
                          "directory (local, file:, hdfs://, webhdfs://) for a checkpoint "
                          "every checkpointInterval epochs; a fit resumes from the latest "
                          "one there; '' for none",
                          typeConverter=TypeConverters.toString)
    checkpointInterval = Param(Params._dummy(), "checkpointInterval",
                               "epochs between checkpoints (the last epoch always has one)",
                               typeConverter=TypeConverters.toInt)
    maxRestarts = Param(Params._dummy(), "maxRestarts",
                        "times the training job runs again after it failed for a reason "
                        "outside the user's code (a lost executor, a killed rank, a timeout), "
                        "resuming from the newest state; 0: never",
                        typeConverter=TypeConverters.toInt)
    driverStateInterval = Param(Params._dummy(), "driverStateInterval",
                                "epochs between the training states (weights, optimizer "
                                "state, history) rank 0 hands the driver for restarts; 0: "
                                "none (a restart resumes from checkpointDir or the start)",
                                typeConverter=TypeConverters.toInt)
    verbose = Param(Params._dummy(), "verbose",
                    "live progress on the driver while fitting: 0 quiet, 1 a progress bar "
                    "(a widget in notebooks), 2 a line per epoch (log files, spark-submit)",
                    typeConverter=TypeConverters.toInt)
    mlflowExperiment = Param(Params._dummy(), "mlflowExperiment",
                             "MLflow experiment to log the fit to (params, metrics per epoch, "
                             "the model) when no MLflow run is active on the driver; '' for "
                             "none (an active run is always logged to)",
                             typeConverter=TypeConverters.toString)
    sampleWeightCol = Param(Params._dummy(), "sampleWeightCol",
                            "numeric column of per-row loss weights (>= 0); the loss is the "
                            "weighted mean over each global batch; '' for none",
                            typeConverter=TypeConverters.toString)
    lrScheduler = Param(Params._dummy(), "lrScheduler",
                        "learning-rate scheduler: step, cosine, onecycle, plateau, '' for none, "
                        "or 'custom' for a callable (optimizer) -> scheduler",
                        typeConverter=TypeConverters.toString)
    lrSchedulerParams = Param(Params._dummy(), "lrSchedulerParams",
                              "keyword arguments of the scheduler, e.g. {'step_size': 2, "
                              "'gamma': 0.5}; plus 'interval' ('epoch' or 'step') and, for "
                              "plateau, 'monitor' (default val_loss, else train_loss)",
                              typeConverter=_to_dict)
    gradientClipNorm = Param(Params._dummy(), "gradientClipNorm",
                             "clip the total norm of the summed gradients to this before each "
                             "step; 0 for no clipping",
                             typeConverter=TypeConverters.toFloat)
    earlyStopping = Param(Params._dummy(), "earlyStopping",
                          "stop when a metric stops improving, e.g. {'monitor': 'val_loss', "
                          "'patience': 3, 'mode': 'min', 'restoreBest': True, 'minDelta': 0}; "
                          "{} for never",
                          typeConverter=_to_dict)
    precision = Param(Params._dummy(), "precision",
                      "32 (float32), bf16-mixed (bfloat16 autocast, CPU or GPU) or 16-mixed "
                      "(float16 autocast with loss scaling, GPU)",
                      typeConverter=TypeConverters.toString)
    metrics = Param(Params._dummy(), "metrics",
                    "metrics in the history, computed over all ranks' rows: accuracy, "
                    "top5_accuracy, f1, auc (classifiers), mae, rmse (regression); default: "
                    "accuracy for classifiers",
                    typeConverter=TypeConverters.toListString)
    logDir = Param(Params._dummy(), "logDir",
                   "directory (local, file:, hdfs://, webhdfs://) for metrics.jsonl, one "
                   "line per epoch, updated as training runs; '' for none",
                   typeConverter=TypeConverters.toString)

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(labelCol="label", loss="cross_entropy", optimizer="adam",
                         optimizerParams={"lr": 1e-3}, epochs=5, numWorkers=1, seed=42,
                         validationFraction=0.0, backend="torch", backendOptions={},
                         backwardPassesPerStep=1, shuffle=True, timeout=600.0,
                         checkpointDir="", checkpointInterval=1, logDir="", maxRestarts=3,
                         driverStateInterval=1, verbose=1, mlflowExperiment="",
                         lrScheduler="", lrSchedulerParams={}, gradientClipNorm=0.0,
                         earlyStopping={}, precision="32", sampleWeightCol="")

    def getLoss(self) -> str | list[str]:
        """The loss name (``"custom"`` for a callable), or one per ``labelCols`` column."""
        return self.getOrDefault(self.loss)

    def getLabelCols(self) -> list[str] | None:
        """The label columns of a multi-output model, or ``None``."""
        if self.isDefined(self.labelCols) and self.getOrDefault(self.labelCols):
            return list(self.getOrDefault(self.labelCols))
        return None

    def getLossWeights(self) -> list[float] | None:
        """The weights of the outputs' losses, or ``None`` (1 each)."""
        return list(self.getOrDefault(self.lossWeights)) if self.isDefined(self.lossWeights) \
            else None

    def setLabelCols(self, value: list[str]):
        return self._set(labelCols=value)

    def setLossWeights(self, value: list[float]):
        return self._set(lossWeights=value)

    def getOptimizer(self) -> str:
        """The optimizer name (``"custom"`` for a callable)."""
        return self.getOrDefault(self.optimizer)

    def getOptimizerParams(self) -> dict:
        """The optimizer's keyword arguments, e.g. ``{"lr": 0.001}``."""
        return dict(self.getOrDefault(self.optimizerParams))

    def getEpochs(self) -> int:
        """Passes over the training data."""
        return self.getOrDefault(self.epochs)

    def getNumWorkers(self) -> int:
        """Ranks (Spark barrier tasks) that train in parallel."""
        return self.getOrDefault(self.numWorkers)

    def getValidationFraction(self) -> float:
        """Fraction of rows held out for validation."""
        return self.getOrDefault(self.validationFraction)

    def getValidationCol(self) -> str | None:
        """The boolean validation column, or ``None``."""
        return self.getOrDefault(self.validationCol) if self.isDefined(self.validationCol) \
            else None

    def getBackend(self) -> str:
        """The allreduce backend: ``"horovod"``, ``"torch"`` or ``"auto"``."""
        return self.getOrDefault(self.backend)

    def getBackendOptions(self) -> dict:
        """The backend's settings."""
        return dict(self.getOrDefault(self.backendOptions))

    def getBackwardPassesPerStep(self) -> int:
        """Batches whose gradients accumulate before each optimizer step."""
        return self.getOrDefault(self.backwardPassesPerStep)

    def getShuffle(self) -> bool:
        """Whether each worker reshuffles its rows every epoch."""
        return self.getOrDefault(self.shuffle)

    def getTimeout(self) -> float:
        """Seconds to wait at rendezvous and in collectives."""
        return self.getOrDefault(self.timeout)

    def getCheckpointDir(self) -> str:
        """Where checkpoints go (``""``: none)."""
        return self.getOrDefault(self.checkpointDir)

    def getCheckpointInterval(self) -> int:
        """Epochs between checkpoints."""
        return self.getOrDefault(self.checkpointInterval)

    def getLogDir(self) -> str:
        """Where ``metrics.jsonl`` goes (``""``: none)."""
        return self.getOrDefault(self.logDir)

    def getMaxRestarts(self) -> int:
        """Restarts of the training job after an infrastructure failure."""
        return self.getOrDefault(self.maxRestarts)

    def getDriverStateInterval(self) -> int:
        """Epochs between the training states rank 0 hands the driver (0: none)."""
        return self.getOrDefault(self.driverStateInterval)

    def getSampleWeightCol(self) -> str:
        """The sample-weight column (``""``: none)."""
        return self.getOrDefault(self.sampleWeightCol)

    def getLrScheduler(self) -> str:
        """The scheduler name (``""``: none; ``"custom"`` for a callable)."""
        return self.getOrDefault(self.lrScheduler)

    def getLrSchedulerParams(self) -> dict:
        """The scheduler's keyword arguments (and ``interval``/``monitor``)."""
        return dict(self.getOrDefault(self.lrSchedulerParams))

    def getGradientClipNorm(self) -> float:
        """The gradient norm clipped to (0: none)."""
        return self.getOrDefault(self.gradientClipNorm)

    def getEarlyStopping(self) -> dict:
        """The early-stopping settings (``{}``: none)."""
        return dict(self.getOrDefault(self.earlyStopping))

    def getPrecision(self) -> str:
        """``"32"``, ``"bf16-mixed"`` or ``"16-mixed"``."""
        return self.getOrDefault(self.precision)

    def getMetrics(self) -> list[str] | None:
        """The metrics asked for, or ``None`` for the task's default."""
        return list(self.getOrDefault(self.metrics)) if self.isDefined(self.metrics) else None
