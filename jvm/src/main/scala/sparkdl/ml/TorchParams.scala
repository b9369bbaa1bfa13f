package sparkdl.ml

import org.apache.spark.ml.param._
import org.apache.spark.ml.param.shared.{HasFeaturesCol, HasLabelCol, HasPredictionCol, HasSeed}

import sparkdl.json.{JsonParser, PyRepr}
import sparkdl.json.Json._

/** Params a fitted model needs to score: the same names and defaults as Python's
  * `sparkdl.ml.params.ScoringParams`, so saved models carry the same metadata.
  */
trait TorchScoringParams extends Params with HasFeaturesCol with HasPredictionCol {
  final val featuresCols = new StringArrayParam(this, "featuresCols",
    "several numeric feature columns, used instead of featuresCol")
  final val featureShape = new IntArrayParam(this, "featureShape",
    "per-row tensor shape, e.g. [1, 8, 8]; default: what the data has", ParamValidators.arrayLengthGt(0))
  final val probabilityCol = new Param[String](this, "probabilityCol",
    "column for class probabilities (classifiers); '' to skip")
  final val rawPredictionCol = new Param[String](this, "rawPredictionCol",
    "column for raw network output (classifiers); '' to skip")
  final val batchSize = new IntParam(this, "batchSize", "rows per batch (per worker)", ParamValidators.gt(0))

  setDefault(featuresCol -> "features", predictionCol -> "prediction", probabilityCol -> "probability",
    rawPredictionCol -> "rawPrediction", batchSize -> 64)

  /** `featuresCols` if set and non-empty, else `Seq(featuresCol)`. */
  def getFeatureColumns: Seq[String] =
    if (isSet(featuresCols) && $(featuresCols).nonEmpty) $(featuresCols).toSeq else Seq($(featuresCol))
  def getFeatureShape: Option[Array[Int]] = get(featureShape)
  def getProbabilityCol: String = $(probabilityCol)
  def getRawPredictionCol: String = $(rawPredictionCol)
  def getBatchSize: Int = $(batchSize)
}

/** Training params: the names and defaults of Python's `sparkdl.ml.params.TrainingParams`,
  * shared by [[TorchEstimator]] and the [[TorchModel]] it fits (which carries the values it
  * was fitted with, as Spark ML models do). `optimizerParams` and `backendOptions` are JSON
  * objects ([[JsonObjectParam]]): canonical JSON text here, a dict in Python, the object
  * itself in saved metadata.
  *
  * `loss` and `optimizer` also accept Python's `"custom"` (a callable), so a model Python
  * fitted with one still loads here; the Scala estimator trains with the named ones only.
  */
trait TorchTrainingParams extends TorchScoringParams with HasLabelCol with HasSeed {
  final val loss = new Param[String](this, "loss", "loss name: cross_entropy, nll, bce_with_logits or mse",
    ParamValidators.inArray((TorchTrainingParams.Losses.keys.toSeq :+ TorchTrainingParams.Custom).toArray))
  final val optimizer = new Param[String](this, "optimizer", "optimizer name: sgd, adam, adamw or rmsprop",
    ParamValidators.inArray((TorchTrainingParams.Optimizers :+ TorchTrainingParams.Custom).toArray))
  final val optimizerParams = new JsonObjectParam(this, "optimizerParams",
    "keyword arguments of the optimizer, as a JSON object, e.g. {\"lr\": 0.001}")
  final val epochs = new IntParam(this, "epochs", "passes over the training data", ParamValidators.gt(0))
  final val numWorkers = new IntParam(this, "numWorkers", "ranks (barrier tasks) that train", ParamValidators.gt(0))
  final val validationFraction = new DoubleParam(this, "validationFraction",
    "fraction of rows held out for validation", ParamValidators.inRange(0.0, 1.0, true, false))
  final val validationCol = new Param[String](this, "validationCol", "boolean column marking validation rows")
  final val backend = new Param[String](this, "backend",
    "collective backend: auto (horovod where the executors' Python has it, else torch, as Python's default), " +
      "torch or horovod", ParamValidators.inArray(Array("auto", "torch", "horovod")))
  final val backendOptions = new JsonObjectParam(this, "backendOptions", "backend settings, as a JSON object")
  final val backwardPassesPerStep = new IntParam(this, "backwardPassesPerStep",
    "batches accumulated locally per optimizer step", ParamValidators.gt(0))
  final val shuffle = new BooleanParam(this, "shuffle", "reshuffle each worker's rows every epoch")
  final val timeout = new DoubleParam(this, "timeout", "rendezvous and collective timeout in seconds",
    ParamValidators.gt(0.0))
  /** Times the barrier job runs again after it failed for a reason outside the user's code (a
    * lost executor, a killed or crashed rank process, a rank that stopped answering, a
    * collective or rendezvous timeout), once the cluster has `numWorkers` task slots again
    * (waiting at most `timeout` seconds for them). An error in the user's code, settings or
    * data (the worker's `TrainingCodeError`, `ConfigError`, `SchemaError`, ...) is never
    * retried. 0: never, the behaviour before restarts. Default 3.
    *
    * A restart resumes from the last epoch whose training state rank 0 handed the driver (see
    * `driverStateInterval`; Python's estimator also from `checkpointDir`), with the same final
    * weights as an uninterrupted run (same data, seed, numWorkers). The model's history lists
    * each attempt under `attempts`, with the epoch it resumed from.
    */
  final val maxRestarts = new IntParam(this, "maxRestarts",
    "times the training job runs again after it failed for a reason outside the user's code (a lost executor, " +
      "a killed rank, a timeout), resuming from the newest state; 0: never", ParamValidators.gtEq(0))
  /** Epochs between the training states (weights, optimizer state, history) rank 0 hands the
    * driver during training, which a restart after a lost executor resumes from (0: none; a
    * restart then trains from the first epoch). Default 1: every epoch but the last. Each costs
    * rank 0 one copy of the weights and optimizer state sent to the driver, which holds the
    * newest (at most `spark.driver.maxResultSize`; a larger state is not taken). Needs the
    * driver's rendezvous (`spark.sparkdl.rendezvous=driver`, the default).
    */
  final val driverStateInterval = new IntParam(this, "driverStateInterval",
    "epochs between the training states (weights, optimizer state, history) rank 0 hands the driver for " +
      "restarts; 0: none (a restart resumes from checkpointDir or the start)",
    ParamValidators.gtEq(0))

  /** The learning-rate scheduler: "step", "cosine", "onecycle", "plateau", or "" (the
    * default) for none. Python's "custom" (a callable) is read from a saved model, but the
    * Scala estimator trains with the named ones only.
    */
  final val lrScheduler = new Param[String](this, "lrScheduler",
    "learning-rate scheduler: step, cosine, onecycle, plateau, '' for none, " +
      "or 'custom' for a callable (optimizer) -> scheduler",
    ParamValidators.inArray(("" +: TorchTrainingParams.Schedulers :+ TorchTrainingParams.Custom).toArray))
  /** The scheduler's keyword arguments as a JSON object, plus sparkdl's own `interval`
    * ("epoch" or "step") and, for plateau, `monitor`; e.g. `{"step_size": 2, "gamma": 0.5}`.
    */
  final val lrSchedulerParams = new JsonObjectParam(this, "lrSchedulerParams",
    "keyword arguments of the scheduler, e.g. {'step_size': 2, 'gamma': 0.5}; plus 'interval' ('epoch' or " +
      "'step') and, for plateau, 'monitor' (default val_loss, else train_loss)")
  final val gradientClipNorm = new DoubleParam(this, "gradientClipNorm",
    "clip the total norm of the summed gradients to this before each step; 0 for no clipping",
    ParamValidators.gtEq(0.0))
  /** When to stop early, as a JSON object, e.g. `{"monitor": "val_loss", "patience": 3,
    * "mode": "min", "restoreBest": true, "minDelta": 0}`; `{}` (the default) for never.
    */
  final val earlyStopping = new JsonObjectParam(this, "earlyStopping",
    "stop when a metric stops improving, e.g. {'monitor': 'val_loss', 'patience': 3, 'mode': 'min', " +
      "'restoreBest': True, 'minDelta': 0}; {} for never")
  final val precision = new Param[String](this, "precision",
    "32 (float32), bf16-mixed (bfloat16 autocast, CPU or GPU) or 16-mixed (float16 autocast with loss scaling, GPU)",
    ParamValidators.inArray(TorchTrainingParams.Precisions.toArray))
  /** The metrics in the history; unset: the task's default (accuracy for classifiers). */
  final val metrics = new StringArrayParam(this, "metrics",
    "metrics in the history, computed over all ranks' rows: accuracy, top5_accuracy, f1, auc (classifiers), " +
      "mae, rmse (regression); default: accuracy for classifiers")

  setDefault(labelCol -> "label", loss -> "cross_entropy", optimizer -> "adam", optimizerParams -> "{\"lr\":0.001}",
    epochs -> 5, numWorkers -> 1, validationFraction -> 0.0, backend -> "auto", backendOptions -> "{}",
    backwardPassesPerStep -> 1, shuffle -> true, timeout -> 600.0, seed -> 42L, maxRestarts -> 3,
    driverStateInterval -> 1, lrScheduler -> "", lrSchedulerParams -> "{}", gradientClipNorm -> 0.0,
    earlyStopping -> "{}", precision -> "32")

  def getLoss: String = $(loss)
  def getOptimizer: String = $(optimizer)
  /** The optimizer's keyword arguments, as canonical JSON object text, e.g. `{"lr":0.001}`. */
  def getOptimizerParams: String = $(optimizerParams)
  def getEpochs: Int = $(epochs)
  def getNumWorkers: Int = $(numWorkers)
  def getValidationFraction: Double = $(validationFraction)
  /** The boolean column marking validation rows, if set. */
  def getValidationCol: Option[String] = get(validationCol)
  def getBackend: String = $(backend)
  /** The backend settings, as canonical JSON object text. */
  def getBackendOptions: String = $(backendOptions)
  def getBackwardPassesPerStep: Int = $(backwardPassesPerStep)
  def getShuffle: Boolean = $(shuffle)
  def getTimeout: Double = $(timeout)
  def getMaxRestarts: Int = $(maxRestarts)
  def getDriverStateInterval: Int = $(driverStateInterval)
  /** The scheduler name ("": none). */
  def getLrScheduler: String = $(lrScheduler)
  /** The scheduler's keyword arguments, as canonical JSON object text. */
  def getLrSchedulerParams: String = $(lrSchedulerParams)
  /** The gradient norm clipped to (0: none). */
  def getGradientClipNorm: Double = $(gradientClipNorm)
  /** The early-stopping settings, as canonical JSON object text ("{}": none). */
  def getEarlyStopping: String = $(earlyStopping)
  def getPrecision: String = $(precision)
  /** The metrics asked for, or None for the task's default. */
  def getMetrics: Option[Array[String]] = get(metrics)
}

object TorchTrainingParams {
  /** Loss name to the task it implies, as Python's `sparkdl.losses`. */
  val Losses: Map[String, String] = Map("cross_entropy" -> "multiclass", "nll" -> "multiclass",
    "bce_with_logits" -> "binary", "mse" -> "regression")
  val Optimizers: Seq[String] = Seq("sgd", "adam", "adamw", "rmsprop")
  /** Python's name for a loss or optimizer given as a callable. */
  val Custom = "custom"

  /** Names `lrScheduler` accepts besides "" (Python's `scheduler_names()`). */
  val Schedulers: Seq[String] = Seq("cosine", "onecycle", "plateau", "step")
  /** What `precision` accepts (Python's `sparkdl.worker.precision.PRECISIONS`). */
  val Precisions: Seq[String] = Seq("32", "bf16-mixed", "16-mixed")
  /** Each metric and the tasks it applies to, in the order of Python's `sparkdl.metrics.METRICS`. */
  val Metrics: Seq[(String, Seq[String])] = Seq(
    "accuracy" -> Seq("multiclass", "binary"), "top5_accuracy" -> Seq("multiclass"),
    "f1" -> Seq("multiclass", "binary"), "auc" -> Seq("multiclass", "binary"),
    "mae" -> Seq("regression"), "rmse" -> Seq("regression"))
  /** Keys of `earlyStopping`, sorted (Python's `sparkdl.worker.early_stopping._KEYS`). */
  val EarlyStoppingKeys: Seq[String] = Seq("minDelta", "mode", "monitor", "patience", "restoreBest")
  private val Intervals = Seq("epoch", "step")

  private def fail(message: String): Nothing = throw new sparkdl.ConfigException(message)

  /** Checks an `lrScheduler` name the Scala estimator trains with ("" or a named one).
    *
    * @throws sparkdl.ConfigException naming the valid choices
    */
  def checkSchedulerName(name: String): String = {
    if (name == Custom)
      fail(s"lrScheduler='custom' needs a Python callable; the Scala TorchEstimator schedules with one of " +
        s"${PyRepr.list(Schedulers)} (or '' for none). Received: lrScheduler='custom'")
    if (name == null || (name.nonEmpty && !Schedulers.contains(name)))
      fail(s"Unknown lrScheduler ${pyStr(name)}. Valid choices: ${PyRepr.list(Schedulers)}, or '' for none. " +
        s"Received: lrScheduler=${pyStr(name)}")
    name
  }

  /** Checks `lrScheduler` with its `lrSchedulerParams` as Python's `SchedulerPlan` does
    * (the scheduler's own keyword arguments are checked by the worker, which builds it).
    */
  def checkScheduler(name: String, params: String): Unit = {
    checkSchedulerName(name)
    if (name.nonEmpty) {
      val fields = JsonParser.parse(params).asInstanceOf[JObj]
      val interval = fields.get("interval").getOrElse(JStr(if (name == "onecycle") "step" else "epoch"))
      if (!Intervals.exists(i => interval == JStr(i)))
        fail(s"lrSchedulerParams interval must be one of ${PyRepr.list(Intervals)}. " +
          s"Received: interval=${PyRepr(interval)}")
      if (name == "plateau" && interval != JStr("epoch"))
        fail("lrScheduler='plateau' steps once per epoch on a metric: drop interval='step' from lrSchedulerParams.")
    }
  }

  /** @throws sparkdl.ConfigException for a negative or NaN norm */
  def checkGradientClipNorm(value: Double): Double = {
    if (!(value >= 0)) fail(s"gradientClipNorm must be >= 0 (0: no clipping). " +
      s"Received: gradientClipNorm=${PyRepr.float(value)}")
    value
  }

  /** @throws sparkdl.ConfigException for anything but [[Precisions]] */
  def checkPrecision(value: String): String = {
    if (!Precisions.contains(value))
      fail(s"precision must be one of ${PyRepr.list(Precisions)}. Received: precision=${pyStr(value)}")
    value
  }

  /** Checks `metrics` names (known, none twice), and, given the loss's task, that each applies
    * to it, as Python's `check_metrics`.
    */
  def checkMetrics(names: Seq[String], task: Option[String] = None): Seq[String] = {
    val shown = PyRepr.list(names)
    names.foreach { name =>
      val applies = Metrics.collectFirst { case (`name`, tasks) => tasks }.getOrElse(
        fail(s"Unknown metric ${pyStr(name)}. Valid choices: ${PyRepr.list(Metrics.map(_._1).sorted)}. " +
          s"Received: metrics=$shown"))
      task.filterNot(applies.contains).foreach { t =>
        fail(s"Metric ${pyStr(name)} does not apply to a $t loss; for it use " +
          s"${PyRepr.list(Metrics.collect { case (m, ts) if ts.contains(t) => m })}. Received: metrics=$shown")
      }
    }
    if (names.distinct.length != names.length)
      fail(s"metrics lists a metric twice. Received: metrics=$shown")
    names
  }

  /** The metric `earlyStopping` watches, or None for `{}`; checks its keys and values as
    * Python's `EarlyStopping.from_param`.
    */
  def checkEarlyStopping(text: String): Option[String] = {
    val value = JsonParser.parse(text) match {
      case o: JObj => o
      case _ => fail(s"earlyStopping must be a JSON object. Received: earlyStopping=$text")
    }
    if (value.fields.isEmpty) None
    else {
      val unknown = value.keys.filterNot(EarlyStoppingKeys.contains).distinct.sorted
      if (unknown.nonEmpty)
        fail(s"earlyStopping has unknown key(s) ${PyRepr.list(unknown)}. Valid: ${PyRepr.list(EarlyStoppingKeys)}. " +
          s"Received: earlyStopping=${PyRepr(value)}")
      val monitor = value.get("monitor") match {
        case None => "val_loss"
        case Some(JStr(m)) if m.nonEmpty => m
        case Some(other) => fail(s"earlyStopping monitor must be a metric name such as 'val_loss'. " +
          s"Received: monitor=${PyRepr(other)}")
      }
      value.get("patience").foreach {
        case JInt(p) if p >= 0 => ()
        case other => fail(s"earlyStopping patience must be an integer >= 0. Received: patience=${PyRepr(other)}")
      }
      value.get("mode").foreach {
        case JStr("min" | "max") => ()
        case other => fail(s"earlyStopping mode must be 'min' or 'max'. Received: mode=${PyRepr(other)}")
      }
      value.get("minDelta").foreach {
        case JInt(d) if d >= 0 => ()
        case JFloat(d) if d >= 0 => ()
        case other => fail(s"earlyStopping minDelta must be a number >= 0. Received: minDelta=${PyRepr(other)}")
      }
      Some(monitor)
    }
  }

  /** The numbers every epoch's history record holds, as Python's `_history_keys`. */
  def historyKeys(task: String, metrics: Option[Seq[String]], validating: Boolean): Seq[String] = {
    val names = metrics.getOrElse(if (task == "regression") Nil else Seq("accuracy"))
      .filter(m => Metrics.exists { case (name, tasks) => name == m && tasks.contains(task) })
    (if (validating) Seq("train", "val") else Seq("train")).flatMap { prefix =>
      s"${prefix}_loss" +: names.map(m => s"${prefix}_$m")
    } :+ "lr"
  }

  /** Checks the training options against the loss's `task` on the driver, before any job:
    * the scheduler, clipping, precision, metrics and early stopping (its monitor must be in
    * the history), as Python's `TorchEstimator._check_params` does.
    */
  private[ml] def checkTrainingOptions(p: TorchTrainingParams, task: String, validating: Boolean): Unit = {
    checkScheduler(p.getLrScheduler, p.getLrSchedulerParams)
    checkGradientClipNorm(p.getGradientClipNorm)
    checkPrecision(p.getPrecision)
    p.getMetrics.foreach(m => checkMetrics(m.toSeq, Some(task)))
    val available = historyKeys(task, p.getMetrics.map(_.toSeq), validating)
    checkEarlyStopping(p.getEarlyStopping).filterNot(available.contains).foreach { monitor =>
      val hint = if (monitor.startsWith("val_")) " A val_* metric needs a validation set: set validationFraction " +
        "or validationCol." else ""
      fail(s"earlyStopping monitors ${pyStr(monitor)}, which the history will not have; it will have " +
        s"${PyRepr.list(available)}.$hint")
    }
    if (p.getLrScheduler == "plateau") {
      JsonParser.parse(p.getLrSchedulerParams).asInstanceOf[JObj].get("monitor").foreach {
        case JStr(m) if available.contains(m) => ()
        case other => fail(s"lrScheduler='plateau' monitors ${PyRepr(other)}, which the history will not have " +
          s"(it will have ${PyRepr.list(available.filter(_ != "lr"))}). Set lrSchedulerParams={'monitor': ...} " +
          "to one of them.")
      }
    }
  }

  private def pyStr(s: String): String = if (s == null) "None" else PyRepr.string(s)

  /** `value` if it is >= 0, else an IllegalArgumentException naming the param, as Python's
    * `require_non_negative_int`: "maxRestarts must be >= 0. Received: maxRestarts=-1".
    */
  private[ml] def nonNegative(name: String, value: Int): Int = {
    if (value < 0) throw new IllegalArgumentException(s"$name must be >= 0. Received: $name=$value")
    value
  }
}
