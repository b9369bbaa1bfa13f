package sparkdl.ml

import org.apache.spark.ml.param._
import org.apache.spark.ml.param.shared.{HasFeaturesCol, HasLabelCol, HasPredictionCol, HasSeed}

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

  setDefault(labelCol -> "label", loss -> "cross_entropy", optimizer -> "adam", optimizerParams -> "{\"lr\":0.001}",
    epochs -> 5, numWorkers -> 1, validationFraction -> 0.0, backend -> "auto", backendOptions -> "{}",
    backwardPassesPerStep -> 1, shuffle -> true, timeout -> 600.0, seed -> 42L, maxRestarts -> 3,
    driverStateInterval -> 1)

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
}

object TorchTrainingParams {
  /** Loss name to the task it implies, as Python's `sparkdl.losses`. */
  val Losses: Map[String, String] = Map("cross_entropy" -> "multiclass", "nll" -> "multiclass",
    "bce_with_logits" -> "binary", "mse" -> "regression")
  val Optimizers: Seq[String] = Seq("sgd", "adam", "adamw", "rmsprop")
  /** Python's name for a loss or optimizer given as a callable. */
  val Custom = "custom"

  /** `value` if it is >= 0, else an IllegalArgumentException naming the param, as Python's
    * `require_non_negative_int`: "maxRestarts must be >= 0. Received: maxRestarts=-1".
    */
  private[ml] def nonNegative(name: String, value: Int): Int = {
    if (value < 0) throw new IllegalArgumentException(s"$name must be >= 0. Received: $name=$value")
    value
  }
}
