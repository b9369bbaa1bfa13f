"""The Spark ML Estimator that trains a PyTorch network across executors."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import torch
from pyspark import keyword_only
from pyspark.ml import Estimator
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkdl.architecture import Architecture, weights_to_bytes
from sparkdl.checkpoints import RunOutputs, latest_checkpoint
from sparkdl.collective import check_backend, default_backend
from sparkdl.data.columns import (
    as_float_tensor,
    as_tensor,
    collect_stats,
    input_specs,
    require_boolean,
    require_columns,
)
from sparkdl.data.images import check_transform, sample_shape
from sparkdl.data.inputs import Padding
from sparkdl.data.partitioning import one_partition_per_rank
from sparkdl.data.shard import ShardLayout
from sparkdl.errors import ConfigError, SchemaError
from sparkdl.history import TrainingHistory
from sparkdl.lr_schedulers import SchedulerPlan, check_scheduler
from sparkdl.metrics import METRICS, check_metrics, default_metrics
from sparkdl.ml import preflight
from sparkdl.ml.mlflow_tracking import MlflowRun, require_mlflow
from sparkdl.ml.model import TorchModel
from sparkdl.ml.params import TrainingParams
from sparkdl.ml.persistence import TorchEstimatorReader, TorchEstimatorWriter
from sparkdl.ml.progress import FitProgress, progress_interval
from sparkdl.ml.recovery import RestartPolicy, train_with_restarts
from sparkdl.objective import Objective
from sparkdl.optimizers import check_optimizer
from sparkdl.rendezvous import rendezvous_mode
from sparkdl.session import facts_for
from sparkdl.storage.resolve import resolve_location
from sparkdl.validation import require_fraction, require_positive, require_positive_int
from sparkdl.worker.early_stopping import EarlyStopping
from sparkdl.worker.precision import check_precision
from sparkdl.worker.spec import TrainSpec

log = logging.getLogger(__name__)

_FEATURE = "__sparkdl_f"
_LABEL = "__sparkdl_label"
_VALID = "__sparkdl_is_val"
_ORDER = "__sparkdl_row"
_WEIGHT = "__sparkdl_weight"
#: Per-image transforms of image inputs: code kept beside the Params, as custom losses.
IMAGE_HOOKS = ("transform", "scoreTransform")


def _as_list(value) -> list:
    if value is None:
        return []
    if callable(value) or hasattr(value, "on_epoch_end"):
        return [value]
    return list(value)


def _require_gpu_tasks(spark) -> None:
    """float16 training needs GPUs, which Spark hands tasks only when they ask for them."""
    try:
        amount = spark.conf.get("spark.task.resource.gpu.amount", None)
    except Exception:  # noqa: BLE001 - a conf the session cannot read is not set
        amount = None
    if not amount:
        raise ConfigError(
            "precision='16-mixed' needs a GPU per training task, and this session gives "
            "tasks none: set spark.executor.resource.gpu.amount and "
            "spark.task.resource.gpu.amount (with a discovery script), or use "
            "precision='bf16-mixed', which autocasts on CPUs too.")


class TorchEstimator(Estimator, TrainingParams, MLWritable, MLReadable):
    """Trains a ``torch.nn.Module`` data-parallel across Spark executors.

    ``fit`` validates the DataFrame and the cluster, then runs one Spark barrier
    job of ``numWorkers`` tasks; each task is a rank that keeps its partition as a
    local memory-mapped Arrow shard and trains in lock-step with the others,
    gradients summed by the allreduce ``backend``.

    It is a full Spark ML stage: it saves and loads (``est.save(path)``,
    ``TorchEstimator.load(path)``; a ``sparkdl.nn`` network as its JSON spec, a
    module, factory or custom loss/optimizer with cloudpickle, so load those from
    trusted paths only), goes into an unfitted ``Pipeline``, and is tuned by
    ``CrossValidator``/``TrainValidationSplit`` over a ``ParamGridBuilder`` grid
    of ``optimizerParams``, ``epochs``, ``batchSize``, ``numWorkers``, ...

    Args:
        model: a ``torch.nn.Module``, a zero-argument callable returning one, or a
            declarative ``sparkdl.nn.Network`` (stored as JSON, no pickle).
        loss: ``"cross_entropy"``, ``"nll"``, ``"bce_with_logits"``, ``"mse"`` or a
            callable ``(output, target) -> scalar``.
        optimizer: ``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"`` or a callable
            ``(params) -> torch.optim.Optimizer``.
        lrScheduler: ``"step"``, ``"cosine"``, ``"onecycle"``, ``"plateau"`` or a callable
            ``(optimizer) -> scheduler``, with ``lrSchedulerParams``; the learning rate
            of every epoch is in the history (``lr``).
        gradientClipNorm: clip the summed gradients' norm to this before each step.
        earlyStopping: e.g. ``{"monitor": "val_loss", "patience": 3, "mode": "min",
            "restoreBest": True}``: all ranks stop after the same epoch; the history's
            ``stopped_epoch``/``stop_reason`` say when and why.
        precision: ``"32"`` (default), ``"bf16-mixed"`` (CPU or GPU autocast) or
            ``"16-mixed"`` (GPU autocast with a gradient scaler).
        inputCols: columns passed to ``forward`` one tensor each, in order
            (``model(a, b)``): integer columns (token ids) as int64, vectors and
            float arrays as float32, each with its own shape.
        padding: e.g. ``{"value": 0, "maxLength": 256}``: ragged array columns are
            padded per batch to its longest row (cut at ``maxLength``) and their
            lengths follow the inputs: ``forward(x, lengths)``. ``"bucketing": True``
            batches rows of similar length together; ``"cols"`` limits it to some
            array columns.
        sampleWeightCol: per-row loss weights; each global batch's loss is the
            weighted mean over all ranks' rows.
        transform: with image columns in ``inputCols`` (binaryFile's ``content``, the
            ``image`` source's struct), a callable applied on the worker to each
            decoded uint8 RGB image ``(3, H, W)`` of training batches, e.g. a
            torchvision ``v2.Compose`` (see :meth:`setTransform`).
        scoreTransform: the same for validation batches and the fitted model's scoring.
        labelCols: the label columns of a multi-output model: ``forward`` returns a
            tuple, output ``i`` is compared with ``labelCols[i]`` by ``loss[i]``
            (``loss=["cross_entropy", "mse"]``, or one name for all), weighted by
            ``lossWeights``; the history has each output's loss and metrics
            (``train_<label>_loss``), scoring one set of columns per output
            (``prediction_<label>``, ...).
        metrics: any of ``"accuracy"``, ``"top5_accuracy"``, ``"f1"``, ``"auc"``
            (classifiers), ``"mae"``, ``"rmse"`` (regression), computed exactly over the
            rows of all ranks as ``train_<name>`` and ``val_<name>``.
        **params: any Param by name (``featuresCol``, ``labelCol``, ``batchSize``,
            ``epochs``, ``numWorkers``, ``seed``, ``validationFraction``, ``backend``,
            ``backendOptions``, ``backwardPassesPerStep``, ``checkpointDir``,
            ``checkpointInterval``, ``logDir``, ``maxRestarts``,
            ``driverStateInterval``, ...).

    Example:
        >>> import torch
        >>> from sparkdl import TorchEstimator
        >>> est = TorchEstimator(model=torch.nn.Linear(4, 3), loss="cross_entropy",
        ...                      optimizer="adam", optimizerParams={"lr": 1e-2},
        ...                      batchSize=32, epochs=3, numWorkers=2)
        >>> est.getOrDefault("numWorkers")
        2
        >>> model = est.fit(train_df)  # doctest: +SKIP
        >>> from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
        >>> grid = (ParamGridBuilder()
        ...         .addGrid(est.optimizerParams, [{"lr": 1e-3}, {"lr": 1e-2}]).build())
        >>> cv = CrossValidator(estimator=est, estimatorParamMaps=grid, numFolds=3,
        ...                     evaluator=MulticlassClassificationEvaluator())  # doctest: +SKIP
        >>> cv.fit(train_df).bestModel.getOptimizerParams()  # doctest: +SKIP
        {'lr': 0.01}
    """

    @keyword_only
    def __init__(self, *, model=None, loss: str | Callable = "cross_entropy",
                 optimizer: str | Callable = "adam", optimizerParams=None,
                 featuresCol=None, featuresCols=None, labelCol=None, predictionCol=None,
                 probabilityCol=None, rawPredictionCol=None, featureShape=None,
                 batchSize=None, epochs=None, numWorkers=None, seed=None,
                 validationFraction=None, validationCol=None, backend=None,
                 backendOptions=None, backwardPassesPerStep=None, shuffle=None,
                 timeout=None, checkpointDir=None, checkpointInterval=None,
                 logDir=None, maxRestarts=None, driverStateInterval=None, verbose=None,
                 onEpochEnd=None, callbacks=None, mlflowExperiment=None,
                 lrScheduler=None, lrSchedulerParams=None, gradientClipNorm=None,
                 earlyStopping=None, precision=None, metrics=None, inputCols=None,
                 padding=None, sampleWeightCol=None, labelCols=None,
                 lossWeights=None, transform=None,
                 scoreTransform=None) -> None:
        super().__init__()
        self._setDefault(backend=default_backend())
        self._model = None
        self._loss_fn = None
        self._optimizer_fn = None
        self._lrScheduler_fn = None
        self._callbacks: list[Callable[[int, dict], object]] = []
        self._transform_fn = self._scoreTransform_fn = None  # image hooks: code, no Params
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, model=None, loss=None, optimizer=None, optimizerParams=None,
                  featuresCol=None, featuresCols=None, labelCol=None, predictionCol=None,
                  probabilityCol=None, rawPredictionCol=None, featureShape=None,
                  batchSize=None, epochs=None, numWorkers=None, seed=None,
                  validationFraction=None, validationCol=None, backend=None,
                  backendOptions=None, backwardPassesPerStep=None, shuffle=None,
                  timeout=None, checkpointDir=None, checkpointInterval=None,
                  logDir=None, maxRestarts=None, driverStateInterval=None, verbose=None,
                  onEpochEnd=None, callbacks=None, mlflowExperiment=None,
                  lrScheduler=None, lrSchedulerParams=None, gradientClipNorm=None,
                  earlyStopping=None, precision=None, metrics=None, inputCols=None,
                  padding=None, sampleWeightCol=None, labelCols=None,
                  lossWeights=None, transform=None,
                  scoreTransform=None) -> TorchEstimator:
        """Set any Param by name, plus ``model``, callable ``loss``/``optimizer``."""
        kwargs = {k: v for k, v in self._input_kwargs.items() if v is not None}
        if "model" in kwargs:
            self.setModel(kwargs.pop("model"))
        if "onEpochEnd" in kwargs or "callbacks" in kwargs:
            self.setOnEpochEnd(_as_list(kwargs.pop("onEpochEnd", None))
                               + _as_list(kwargs.pop("callbacks", None)))
        for name in IMAGE_HOOKS:
            if name in kwargs:
                self._set_custom_code(name, check_transform(name, kwargs.pop(name)))
        if isinstance(kwargs.get("loss"), (list, tuple)) and any(
                callable(one) for one in kwargs["loss"]):
            raise ConfigError("loss=[...] (one per labelCols column) takes loss names; "
                              "loss=<callable> applies one custom (output, target) -> scalar "
                              "loss to every output.")
        for name in ("loss", "optimizer", "lrScheduler"):
            if name in kwargs and callable(kwargs[name]):
                self._set_custom_code(name, kwargs.pop(name))
            elif name in kwargs:
                setattr(self, f"_{name}_fn", None)
        return self._set(**kwargs)

    def setOnEpochEnd(self, callbacks) -> TorchEstimator:
        """Call ``callback(epoch, metrics)`` on the driver as each epoch ends.

        ``metrics`` is the epoch's history record (``train_loss``, ``train_accuracy``,
        ``val_loss``, ``seconds``, ...). Callbacks run while the job trains where ranks
        reach the driver (a classic session's default), else when it returns; what one
        raises is logged, not raised. They are driver-side code: copies of the
        estimator (Pipelines, CrossValidator) keep them, ``save`` does not.

        Args:
            callbacks: a callable, a list of them, or None for none. A callback may
                also be an object with an ``on_epoch_end(epoch, metrics)`` method
                (``callbacks=[...]`` in the constructor takes the same).

        Example::

            curve = []
            est.setOnEpochEnd(lambda epoch, m: curve.append(m["train_loss"]))
        """
        callbacks = [getattr(c, "on_epoch_end", c) for c in _as_list(callbacks)]
        bad = [c for c in callbacks if not callable(c)]
        if bad:
            raise ConfigError(f"onEpochEnd takes a callable(epoch, metrics) or a list of them. "
                              f"Received: {bad[0]!r}")
        self._callbacks = callbacks
        return self

    def getOnEpochEnd(self) -> list[Callable[[int, dict], object]]:
        """The ``onEpochEnd`` callbacks."""
        return list(self._callbacks)

    def _custom_code(self, name: str) -> Callable | None:
        """The callable behind ``loss``/``optimizer`` = ``"custom"`` or an image hook
        (``transform``, ``scoreTransform``), else None."""
        if name in IMAGE_HOOKS:
            return getattr(self, f"_{name}_fn")
        return getattr(self, f"_{name}_fn") if self.getOrDefault(name) == "custom" else None

    def _set_custom_code(self, name: str, fn: Callable) -> None:
        setattr(self, f"_{name}_fn", fn)
        if name not in IMAGE_HOOKS:
            self._set(**{name: "custom"})

    def setTransform(self, fn: Callable | None) -> TorchEstimator:
        """Set the per-image transform of training batches (image ``inputCols``).

        Each image arrives as a uint8 RGB tensor ``(3, H, W)``, decoded on the worker;
        ``fn`` returns a tensor (a uint8 result is scaled to [0, 1], any other cast to
        float32) and the batch is stacked into ``(batch, C, H, W)``. Like a custom
        loss it is code: copies of the estimator keep it, ``save`` pickles it
        (``load(path, trusted=False)`` refuses it).

        Args:
            fn: a callable on one image tensor (a torchvision v2 ``Compose``), or
                ``None`` for none.

        Example::

            from torchvision.transforms import v2
            est.setTransform(v2.Compose([v2.RandomResizedCrop(32, scale=(0.8, 1)),
                                         v2.ToDtype(torch.float32, scale=True)]))
        """
        self._set_custom_code("transform", check_transform("transform", fn))
        return self

    def getTransform(self) -> Callable | None:
        """The training batches' per-image transform, or ``None``."""
        return self._transform_fn

    def setScoreTransform(self, fn: Callable | None) -> TorchEstimator:
        """Set the per-image transform of validation batches and of the fitted model's
        scoring (deterministic: resize, convert), as :meth:`setTransform` describes.

        Example::

            est.setScoreTransform(v2.Compose([v2.Resize((32, 32)),
                                              v2.ToDtype(torch.float32, scale=True)]))
        """
        self._set_custom_code("scoreTransform", check_transform("scoreTransform", fn))
        return self

    def getScoreTransform(self) -> Callable | None:
        """The validation and scoring per-image transform, or ``None``."""
        return self._scoreTransform_fn

    def _image_inputs(self, dataset: DataFrame, inputs):
        """``inputs`` with each image column's per-image shape (after the transforms),
        from its first image, decoded on the driver so the network can be probed."""
        if not inputs or not any(i.image for i in inputs):
            return inputs
        images = [i for i in inputs if i.image]
        row = dataset.select(*[i.column for i in images]).first()
        hooks = {name: self._custom_code(name) for name in IMAGE_HOOKS
                 if self._custom_code(name) is not None}
        shapes = {i.column: sample_shape(row[i.column], i.image, i.column, hooks)
                  for i in images}
        return tuple(dataclasses.replace(i, shape=shapes[i.column]) if i.image else i
                     for i in inputs)

    def setModel(self, model) -> TorchEstimator:
        """Set the network: a ``torch.nn.Module``, a zero-argument factory returning
        one, or a declarative ``sparkdl.nn.Network``."""
        Architecture.of(model)  # type check now, not at fit time
        self._model = model
        return self

    def setLoss(self, value) -> TorchEstimator:
        """Set the loss: a name or a callable ``(output, target) -> scalar``."""
        return self.setParams(loss=value)

    def setOptimizer(self, value) -> TorchEstimator:
        """Set the optimizer: a name or a callable ``(params) -> Optimizer``."""
        return self.setParams(optimizer=value)

    def getModel(self):
        """The network (module, factory or ``sparkdl.nn.Network``) this estimator trains."""
        return self._model

    def setLabelCol(self, value: str) -> TorchEstimator:
        return self._set(labelCol=value)

    def setOptimizerParams(self, value: dict) -> TorchEstimator:
        return self._set(optimizerParams=value)

    def setEpochs(self, value: int) -> TorchEstimator:
        return self._set(epochs=value)

    def setNumWorkers(self, value: int) -> TorchEstimator:
        return self._set(numWorkers=value)

    def setSeed(self, value: int) -> TorchEstimator:
        return self._set(seed=value)

    def setValidationFraction(self, value: float) -> TorchEstimator:
        return self._set(validationFraction=value)

    def setValidationCol(self, value: str) -> TorchEstimator:
        return self._set(validationCol=value)

    def setBackend(self, value: str) -> TorchEstimator:
        return self._set(backend=value)

    def setBackendOptions(self, value: dict) -> TorchEstimator:
        return self._set(backendOptions=value)

    def setBackwardPassesPerStep(self, value: int) -> TorchEstimator:
        return self._set(backwardPassesPerStep=value)

    def setShuffle(self, value: bool) -> TorchEstimator:
        return self._set(shuffle=value)

    def setTimeout(self, value: float) -> TorchEstimator:
        return self._set(timeout=value)

    def setCheckpointDir(self, value: str) -> TorchEstimator:
        return self._set(checkpointDir=value)

    def setCheckpointInterval(self, value: int) -> TorchEstimator:
        return self._set(checkpointInterval=value)

    def setLogDir(self, value: str) -> TorchEstimator:
        return self._set(logDir=value)

    def setMaxRestarts(self, value: int) -> TorchEstimator:
        return self._set(maxRestarts=value)

    def setDriverStateInterval(self, value: int) -> TorchEstimator:
        return self._set(driverStateInterval=value)

    # -- persistence -----------------------------------------------------------

    def write(self) -> MLWriter:
        """A writer saving the Params, the network and any custom callables."""
        return TorchEstimatorWriter(self)

    @classmethod
    def read(cls, trusted: bool = True) -> MLReader:
        """A reader; ``trusted=False`` refuses estimators holding pickled code."""
        return TorchEstimatorReader(cls, trusted)

    @classmethod
    def load(cls, path: str, trusted: bool = True) -> TorchEstimator:
        """Load an estimator saved with :meth:`save`.

        Args:
            path: any Spark path (local, ``hdfs://``, ...).
            trusted: ``False`` loads only an estimator whose network is a
                ``sparkdl.nn`` network (``network.json``) and whose loss and optimizer
                are named, and refuses a cloudpickled module or factory
                (``architecture.pkl``) or custom loss or optimizer (``loss.pkl``,
                ``optimizer.pkl``), which would run their code on load.

        Raises:
            UntrustedCodeError: with ``trusted=False``, for pickled code.
            ModelNotFoundError: if nothing is at ``path``.
            CorruptModelError: naming the file, if one is missing or malformed.

        Example::

            TorchEstimator.load("hdfs:///estimators/digits", trusted=False)
        """
        return cls.read(trusted).load(path)

    # -- fit -----------------------------------------------------------------

    def _loss(self):
        return self._custom_code("loss") or self.getLoss()

    def _optimizer(self):
        return self._custom_code("optimizer") or self.getOptimizer()

    def _scheduler_plan(self) -> SchedulerPlan | None:
        scheduler = self._custom_code("lrScheduler") or self.getLrScheduler()
        return SchedulerPlan(scheduler, self.getLrSchedulerParams()) if scheduler else None

    def setLrScheduler(self, value) -> TorchEstimator:
        """Set the learning-rate scheduler: a name or a callable ``(optimizer) -> scheduler``."""
        return self.setParams(lrScheduler=value)

    def setLrSchedulerParams(self, value: dict) -> TorchEstimator:
        return self._set(lrSchedulerParams=value)

    def setGradientClipNorm(self, value: float) -> TorchEstimator:
        return self._set(gradientClipNorm=value)

    def setEarlyStopping(self, value: dict) -> TorchEstimator:
        return self._set(earlyStopping=value)

    def setPrecision(self, value: str) -> TorchEstimator:
        return self._set(precision=value)

    def setMetrics(self, value: list[str]) -> TorchEstimator:
        return self._set(metrics=value)

    def _backend(self) -> str:
        # "auto" is the Scala estimator's default (an estimator saved there loads here).
        backend = self.getBackend()
        return default_backend() if backend == "auto" else backend

    def _check_params(self) -> None:
        if self._model is None:
            raise ConfigError("No model: pass model=<torch.nn.Module or factory> to "
                              "TorchEstimator or call setModel().")
        for name in ("batchSize", "epochs", "numWorkers", "backwardPassesPerStep",
                     "checkpointInterval"):
            require_positive_int(name, self.getOrDefault(name))
        frac = require_fraction("validationFraction", self.getValidationFraction())
        if frac > 0 and self.isSet(self.validationCol):
            raise ConfigError("Set validationFraction or validationCol, not both.")
        require_positive("timeout", self.getTimeout())
        if self.getOrDefault(self.verbose) not in (0, 1, 2):
            raise ConfigError(f"verbose must be 0 (quiet), 1 (a progress bar) or 2 (a line "
                              f"per epoch). Received: verbose={self.getOrDefault(self.verbose)}")
        require_mlflow(self.getOrDefault(self.mlflowExperiment))
        self._restart_policy()
        for name in ("loss", "optimizer", "lrScheduler"):
            if self.getOrDefault(name) == "custom" and self._custom_code(name) is None:
                raise ConfigError(f"{name}='custom' needs a callable: pass {name}=<callable>.")
        if self.getLossWeights() is not None and self.getLabelCols() is None:
            raise ConfigError("lossWeights weighs the losses of a multi-output model's outputs: "
                              "set labelCols=[...] too, or drop lossWeights.")
        objective = self._objective()
        check_optimizer(self._optimizer(), self.getOrDefault(self.optimizerParams))
        check_scheduler(self._scheduler_plan())
        clip = self.getGradientClipNorm()
        if clip < 0 or clip != clip:
            raise ConfigError(f"gradientClipNorm must be >= 0 (0: no clipping). "
                              f"Received: gradientClipNorm={clip}")
        check_precision(self.getPrecision())
        padding = Padding.from_param(self.getPadding())
        if self.getInputCols() is not None:
            for name in ("featuresCols", "featureShape"):
                if self.isSet(name):
                    raise ConfigError(f"Set inputCols or {name}, not both: with inputCols "
                                      "each column is its own tensor, shaped as the data is.")
        elif padding is not None and len(self.getFeatureColumns()) > 1:
            raise ConfigError("padding applies to array columns read one tensor each: use "
                              "inputCols=[...] instead of featuresCols with padding.")
        if self.getMetrics() is not None:
            check_metrics(self.getMetrics(), objective.tasks)
        stopping = EarlyStopping.from_param(self.getEarlyStopping())
        if stopping is not None:
            stopping.check_monitor(self._history_keys(objective))
        plan = self._scheduler_plan()
        if plan is not None and plan.scheduler == "plateau":
            monitor = plan.monitor(self.getValidationFraction() > 0
                                   or self.isSet(self.validationCol))
            if monitor not in self._history_keys(objective):
                raise ConfigError(f"lrScheduler='plateau' monitors {monitor!r}, which the "
                                  f"history will not have; it will have "
                                  f"{self._history_keys(objective)}. Set "
                                  "lrSchedulerParams={'monitor': ...} to one of them.")
        check_backend(self._backend(), self.getBackendOptions())

    def _history_keys(self, objective: Objective) -> list[str]:
        """The numbers every epoch's history record will hold."""
        validating = self.getValidationFraction() > 0 or self.isSet(self.validationCol)
        keys = []
        for prefix in ("train", "val") if validating else ("train",):
            keys.append(f"{prefix}_loss")
            for i, task in enumerate(objective.tasks):
                names = default_metrics(task) if self.getMetrics() is None else [
                    m for m in self.getMetrics() if task in METRICS[m]
                    and (prefix == "val" or m != "auc")]  # auc: validation rows only
                if objective.labels is None:
                    keys += [f"{prefix}_{m}" for m in names]
                else:
                    label = objective.labels[i]
                    keys += [f"{prefix}_{label}_{m}" for m in ("loss", *names)]
        return keys + ["lr"]

    def _objective(self) -> Objective:
        return Objective.of(self._loss(), self.getLabelCols(), self.getLossWeights())

    def _restart_policy(self) -> RestartPolicy:
        return RestartPolicy(self.getMaxRestarts(), self.getDriverStateInterval(),
                             self.getTimeout())

    def _fit(self, dataset: DataFrame) -> TorchModel:
        self._check_params()
        if self.getPrecision() == "16-mixed":
            _require_gpu_tasks(dataset.sparkSession)
        objective = self._objective()
        losses = objective.specs
        loss = losses[0]
        integer_labels = loss.task == "multiclass"
        input_cols = self._input_columns()
        padding = Padding.from_param(self.getPadding())
        feature_cols = input_cols or self.getFeatureColumns()
        label_cols = list(objective.labels) if objective.labels else [self.getLabelCol()]
        label_col = label_cols[0]
        weight_col = self.getSampleWeightCol() or None
        schema = dataset.schema
        meet = rendezvous_mode(dataset.sparkSession)  # checked before any job
        outputs = self._output_locations(dataset.sparkSession)  # so are these paths
        kinds = require_columns(schema, feature_cols, "features", stacked=input_cols is None)
        if weight_col is not None:
            if require_columns(schema, [weight_col], "sample weight")[weight_col][0] != "number":
                raise SchemaError(f"Sample weight column {weight_col!r} must be numeric; found "
                                  f"{schema[weight_col].dataType.simpleString()}.")
            if any(spec.per_row is None for spec in losses):
                raise ConfigError("sampleWeightCol needs a named loss (cross_entropy, nll, "
                                  "bce_with_logits, mse): a custom loss returns the batch mean "
                                  "and cannot weight rows.")
        label_kinds = require_columns(schema, label_cols, "label", stacked=False)
        for col, spec in zip(label_cols, losses):
            if spec.task == "multiclass" and label_kinds[col][0] != "number":
                raise SchemaError(
                    f"Label column {col!r} is {schema[col].dataType.simpleString()} but "
                    f"loss={spec.name!r} needs one integer class id per row.")
        label_kind = label_kinds[label_col]
        val_col = self.getOrDefault(self.validationCol) if self.isSet(self.validationCol) \
            else None
        if val_col:
            require_boolean(schema, val_col, "validation")
        # Before the data query: bad padding cols fail here; which columns are padded
        # sequences is input_specs' rule alone (the query lets their lengths vary).
        inputs = input_specs(schema, input_cols, kinds, padding) if input_cols else None
        ragged = [i.column for i in inputs or () if i.ragged]
        stats = collect_stats(dataset, kinds, label_col, label_kind, integer_labels, ragged,
                              weight_col, {c: (label_kinds[c], spec.task == "multiclass")
                                           for c, spec in zip(label_cols[1:], losses[1:])})
        if input_cols:
            inputs = input_specs(schema, input_cols, kinds, padding, stats.shapes)
            inputs = self._image_inputs(dataset, inputs)
            feature_shape = None
        else:
            feature_shape = preflight.feature_shape(stats, feature_cols,
                                                    self.getFeatureShape())
        multi = objective.labels is not None
        output_shape, shapes = preflight.probe_output(
            self._model, feature_shape, inputs, len(label_cols) if multi else None)
        output_shapes = list(output_shape) if multi else [output_shape]
        for col, spec, shape in zip(label_cols, losses, output_shapes):
            preflight.check_labels(spec.task, shape, stats.for_label(col), col)
        num_workers = self.getNumWorkers()
        spark = dataset.sparkSession
        facts = facts_for(spark)  # a classic or a Spark Connect session
        slots = facts.check_capacity(num_workers)
        # Before the barrier job (and once, not per restart): can the executors' Python
        # import sparkdl and torch at the driver's versions? Remembered per application.
        facts.check_executor_python(slots, num_workers, self._backend())
        if outputs.checkpoints:  # a checkpoint of another network fails before the job
            outputs = dataclasses.replace(
                outputs, resume=latest_checkpoint(outputs.checkpoints, shapes))

        temp = [f"{_FEATURE}{i}" for i in range(len(feature_cols))]
        label_names = [f"{_LABEL}{i}" for i in range(len(label_cols))] if multi else [_LABEL]
        label_exprs = [(F.col(c).cast("long") if spec.task == "multiclass"
                        else as_float_tensor(c, label_kinds[c])).alias(name)
                       for c, spec, name in zip(label_cols, losses, label_names)]
        seed = self.getOrDefault(self.seed)
        frac = self.getOrDefault(self.validationFraction)
        valid = F.col(val_col) if val_col else (F.rand(seed) < F.lit(frac))
        columns = [as_tensor(c, kinds[c], spec.dtype == "int64").alias(t)
                   for c, t, spec in zip(feature_cols, temp, inputs)] if inputs else \
            [as_float_tensor(c, kinds[c]).alias(t) for c, t in zip(feature_cols, temp)]
        # each image's file, so a worker that cannot decode it names it
        columns += [F.col(i.origin).alias(f"{t}_origin") for i, t in zip(inputs or (), temp)
                    if i.origin]
        if weight_col is not None:
            columns.append(F.col(weight_col).cast("float").alias(_WEIGHT))
        prepared = one_partition_per_rank(dataset.select(
            *columns, *label_exprs, valid.alias(_VALID),
            F.monotonically_increasing_id().alias(_ORDER),
        ), num_workers, _ORDER)

        model = self._model
        is_module = isinstance(model, torch.nn.Module)
        spec = TrainSpec(
            architecture=Architecture.of(model),
            initial_weights=weights_to_bytes(model) if is_module else None,
            loss=objective.losses if multi else self._loss(), optimizer=self._optimizer(),
            optimizer_params=dict(self.getOrDefault(self.optimizerParams)),
            layout=ShardLayout(tuple(temp), None if multi else _LABEL, integer_labels,
                               tuple(feature_shape) if feature_shape else None,
                               _VALID if (val_col or frac > 0) else None, _ORDER,
                               tuple(dataclasses.replace(
                                   i, column=t, name=i.column, origin=i.origin and f"{t}_origin")
                                     for i, t in zip(inputs, temp)) if inputs else None,
                               _WEIGHT if weight_col else None,
                               tuple(label_names) if multi else None,
                               tuple(spec.task == "multiclass" for spec in losses)),
            batch_size=self.getBatchSize(), epochs=self.getOrDefault(self.epochs),
            seed=seed, num_workers=num_workers, backend=self._backend(),
            shuffle=self.getOrDefault(self.shuffle), timeout_s=self.getOrDefault(self.timeout),
            backend_options=dict(self.getOrDefault(self.backendOptions)),
            backward_passes_per_step=self.getOrDefault(self.backwardPassesPerStep),
            outputs=outputs,
            progress_interval_s=progress_interval(spark) if meet == "driver" else 0.0,
            lr_scheduler=self._scheduler_plan(),
            gradient_clip_norm=self.getGradientClipNorm(),
            early_stopping=EarlyStopping.from_param(self.getEarlyStopping()),
            precision=self.getPrecision(),
            metrics=None if self.getMetrics() is None else tuple(self.getMetrics()),
            loss_weights=objective.weights if multi else None,
            labels=objective.labels,
        )
        if inputs and any(i.image for i in inputs):  # code, like a custom loss
            spec = dataclasses.replace(spec, layout=dataclasses.replace(
                spec.layout, train_transform=self._transform_fn,
                eval_transform=self._scoreTransform_fn))
        start = outputs.resume
        if start is not None and start.epoch >= spec.epochs:
            log.info("sparkdl: checkpointDir holds epoch %d of %d: nothing left to train",
                     start.epoch, spec.epochs)
        else:
            log.info("sparkdl: training on %d workers with backend=%s%s", num_workers,
                     spec.backend, f", resuming after epoch {start.epoch}" if start else "")
        tracking = MlflowRun.start(self.getOrDefault(self.mlflowExperiment), self.uid)
        if tracking is not None:
            tracking.log_params(self._tracked_params())
        callbacks = self._callbacks + ([tracking.log_epoch] if tracking else [])
        progress = FitProgress(self.getOrDefault(self.verbose), spec.epochs, callbacks,
                               start.epoch if start else 0)
        try:
            run = train_with_restarts(prepared, spec, slots, meet, self._restart_policy(),
                                      shapes, on_progress=progress.on_message)
            progress.replay(run.job.epochs)  # what no live report showed (barrier mode)
        except BaseException:
            if tracking is not None:
                tracking.end(failed=True)
            raise
        finally:
            progress.close()
        weights, epochs, workers = run.job.weights, run.job.epochs, run.job.workers
        resume = run.resume
        history = TrainingHistory((resume.history if resume else []) + epochs, spec.backend,
                                  num_workers, workers, start.epoch if start else 0,
                                  run.attempts)
        fitted = TorchModel(spec.architecture, bytes(weights), history)
        fitted._resetUid(self.uid.replace("TorchEstimator", "TorchModel"))
        self._copyValues(fitted)
        fitted._score_transform = self._scoreTransform_fn
        if feature_shape is not None:
            fitted._set(featureShape=list(feature_shape))
        fitted._set(task=loss.task, outputShape=list(output_shapes[0]))
        if multi:
            fitted._set(outputTasks=[spec.task for spec in losses],
                        outputShapes=[list(o) for o in output_shapes])
        if tracking is not None:
            tracking.log_model(fitted, spark)
            tracking.end()
        return fitted

    def _tracked_params(self) -> dict:
        """What MLflow records of this fit: every Param, and the network's kind."""
        params = {p.name: v for p, v in self.extractParamMap().items()}
        model = self._model
        params["model"] = type(model).__name__ if isinstance(model, torch.nn.Module) \
            else getattr(model, "__name__", type(model).__name__)
        for name in ("loss", "optimizer", "lrScheduler"):
            code = self._custom_code(name)
            if code is not None:
                params[name] = getattr(code, "__name__", "custom")
        return params

    def _output_locations(self, spark) -> RunOutputs:
        ckpt_url = self.getOrDefault(self.checkpointDir)
        log_url = self.getOrDefault(self.logDir)
        return RunOutputs(
            checkpoints=resolve_location(spark, ckpt_url, "checkpointDir") if ckpt_url
            else None,
            interval=self.getOrDefault(self.checkpointInterval),
            logs=resolve_location(spark, log_url, "logDir") if log_url else None)
