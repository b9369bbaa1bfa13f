package sparkdl.ml

import java.nio.charset.StandardCharsets.UTF_8

import org.apache.arrow.memory.RootAllocator
import org.apache.spark.{BarrierTaskContext, SparkEnv, SparkException}
import org.apache.spark.ml.Estimator
import org.apache.spark.ml.param.{Param, ParamMap}
import org.apache.spark.ml.util.{Identifiable, MLReadable, MLReader, MLWritable, MLWriter}
import org.apache.spark.sql.{Dataset, Row}
import org.apache.spark.sql.functions.{col, lit, monotonically_increasing_id, rand}
import org.apache.spark.sql.types.{BooleanType, StructType}

import sparkdl.json.{CanonicalJson, JsonParser}
import sparkdl.json.Json._
import sparkdl.nn.Network

/** Trains a `sparkdl.nn` network data-parallel across Spark executors; the Scala twin of
  * Python's `sparkdl.TorchEstimator`.
  *
  * `fit` checks the columns, the data (nulls, ragged arrays, labels against the network's
  * classes: one aggregate query, as the Python estimator does) and the executors' Python on
  * the driver, then runs one barrier job of `numWorkers` tasks. Each task takes a warm
  * `python -m sparkdl.worker` from its executor's [[PythonWorkerPool]] (or starts one, with
  * the Python of `spark.pyspark.python`, else `PYSPARK_PYTHON`, else `python3`), streams its
  * partition to it as Arrow IPC over a loopback socket, and answers its `allGather`
  * requests; the worker runs the same training code as the Python estimator (same backends,
  * same results for the same seed). Rank 0 returns the weights.
  *
  * A barrier job that fails for a reason outside the user's code (a lost executor, a killed
  * rank process, a timeout) runs again, up to `maxRestarts` times, once the cluster has
  * `numWorkers` task slots again ([[Restarts]]), resuming from the newest training state rank
  * 0 handed the driver (every `driverStateInterval` epochs; [[EpochState]]), to the weights of
  * an uninterrupted run. The model's history lists each attempt.
  *
  * Python's training options have the same names, defaults and checks here: `lrScheduler`
  * (step, cosine, onecycle, plateau) with `lrSchedulerParams`, `gradientClipNorm`,
  * `earlyStopping`, `precision` and `metrics`; bad values fail on the driver before any job,
  * and the model's history shows each epoch's `lr`, the metrics and `stopped_early`.
  *
  * The default backend, "auto", is Python's default: horovod where the executors' Python can
  * import it, else torch; the model's history records the backend that ran.
  *
  * {{{
  * import sparkdl.nn._
  * val net = Sequential(Input(Seq(64)), Dense(32, activation = "relu"), Dense(10))
  * val model = new sparkdl.ml.TorchEstimator().setNetwork(net).setLoss("cross_entropy")
  *   .setOptimizer("adam").setLearningRate(1e-3).setNumWorkers(2).setEpochs(5).fit(train)
  * model.transform(test).select("prediction", "probability")
  * }}}
  *
  * It is a Spark ML stage like any other: `write.save(path)` / `TorchEstimator.load(path)`
  * keep its params and network (Spark ML metadata plus `network.json`), so a `Pipeline`,
  * `CrossValidator` or `TrainValidationSplit` holding it saves and loads, and a loaded
  * estimator fits the same weights as the original on the same data and seed. Fits running
  * at once (`CrossValidator.setParallelism`) share the cluster's task slots through
  * [[BarrierSlots]]: their barrier jobs run together where they fit, else one after another.
  */
class TorchEstimator(override val uid: String) extends Estimator[TorchModel] with TorchTrainingParams
    with MLWritable {

  def this() = this(Identifiable.randomUID("TorchEstimator"))

  private var network: Option[Network] = None

  def setNetwork(value: Network): this.type = { network = Some(value); this }
  /** The network as `sparkdl.network/v1` JSON (e.g. Python's `Network.to_json()`). */
  def setNetworkJson(value: String): this.type = setNetwork(Network.fromJson(value))
  def getNetwork: Option[Network] = network

  final val pythonExec = new Param[String](this, "pythonExec",
    "Python for the executors' workers; default: spark.pyspark.python, else PYSPARK_PYTHON, else python3")
  /** The Python set for the executors' workers, if any. */
  def getPythonExec: Option[String] = get(pythonExec).filter(_.nonEmpty)

  def setFeaturesCol(value: String): this.type = set(featuresCol, value)
  def setFeaturesCols(value: Array[String]): this.type = set(featuresCols, value)
  def setFeatureShape(value: Array[Int]): this.type = set(featureShape, value)
  def setLabelCol(value: String): this.type = set(labelCol, value)
  def setPredictionCol(value: String): this.type = set(predictionCol, value)
  def setProbabilityCol(value: String): this.type = set(probabilityCol, value)
  def setRawPredictionCol(value: String): this.type = set(rawPredictionCol, value)
  def setBatchSize(value: Int): this.type = set(batchSize, value)
  def setLoss(value: String): this.type = set(loss, value)
  def setOptimizer(value: String): this.type = set(optimizer, value)
  /** Optimizer keyword arguments as a JSON object, e.g. `{"lr": 0.01, "momentum": 0.9}`. */
  def setOptimizerParams(value: String): this.type =
    set(optimizerParams, JsonObjectParam.canonical(value, "optimizerParams"))
  /** Sets `lr` in `optimizerParams`, keeping the other optimizer arguments. */
  def setLearningRate(value: Double): this.type = {
    val others = JsonParser.parse($(optimizerParams)).asInstanceOf[JObj].fields.filter(_._1 != "lr")
    set(optimizerParams, CanonicalJson.write(JObj(others :+ ("lr" -> JFloat(value)))))
  }
  def setEpochs(value: Int): this.type = set(epochs, value)
  def setNumWorkers(value: Int): this.type = set(numWorkers, value)
  def setSeed(value: Long): this.type = set(seed, value)
  def setValidationFraction(value: Double): this.type = set(validationFraction, value)
  def setValidationCol(value: String): this.type = set(validationCol, value)
  def setBackend(value: String): this.type = set(backend, value)
  def setBackendOptions(value: String): this.type =
    set(backendOptions, JsonObjectParam.canonical(value, "backendOptions"))
  def setBackwardPassesPerStep(value: Int): this.type = set(backwardPassesPerStep, value)
  def setShuffle(value: Boolean): this.type = set(shuffle, value)
  def setTimeout(value: Double): this.type = set(timeout, value)
  /** Restarts of the barrier job after an infrastructure failure (>= 0; 0: none); see [[maxRestarts]]. */
  def setMaxRestarts(value: Int): this.type =
    set(maxRestarts, TorchTrainingParams.nonNegative("maxRestarts", value))
  /** Python's state interval (>= 0), kept for persistence; see [[driverStateInterval]]. */
  def setDriverStateInterval(value: Int): this.type =
    set(driverStateInterval, TorchTrainingParams.nonNegative("driverStateInterval", value))
  def setPythonExec(value: String): this.type = set(pythonExec, value)
  /** The learning-rate scheduler: "step", "cosine", "onecycle", "plateau", or "" for none. */
  def setLrScheduler(value: String): this.type =
    set(lrScheduler, TorchTrainingParams.checkSchedulerName(value))
  /** The scheduler's keyword arguments as a JSON object, e.g. `{"step_size": 2, "gamma": 0.5}`,
    * plus `interval` ("epoch" or "step") and, for plateau, `monitor`.
    */
  def setLrSchedulerParams(value: String): this.type =
    set(lrSchedulerParams, JsonObjectParam.canonical(value, "lrSchedulerParams"))
  def setLrSchedulerParams(value: Map[String, Any]): this.type =
    set(lrSchedulerParams, JsonObjectParam.fromMap(value, "lrSchedulerParams"))
  def setLrSchedulerParams(value: java.util.Map[String, Any]): this.type =
    set(lrSchedulerParams, JsonObjectParam.fromJavaMap(value, "lrSchedulerParams"))
  /** Clips the total gradient norm to this before each step (>= 0; 0: no clipping). */
  def setGradientClipNorm(value: Double): this.type =
    set(gradientClipNorm, TorchTrainingParams.checkGradientClipNorm(value))
  /** Early stopping as a JSON object, e.g. `{"monitor": "val_loss", "patience": 3, "mode": "min",
    * "restoreBest": true, "minDelta": 0}`; `{}` for never.
    */
  def setEarlyStopping(value: String): this.type = {
    val text = JsonObjectParam.canonical(value, "earlyStopping")
    TorchTrainingParams.checkEarlyStopping(text)
    set(earlyStopping, text)
  }
  def setEarlyStopping(value: Map[String, Any]): this.type =
    setEarlyStopping(JsonObjectParam.fromMap(value, "earlyStopping"))
  def setEarlyStopping(value: java.util.Map[String, Any]): this.type =
    setEarlyStopping(JsonObjectParam.fromJavaMap(value, "earlyStopping"))
  /** "32" (float32), "bf16-mixed" or "16-mixed" (GPU executors). */
  def setPrecision(value: String): this.type = set(precision, TorchTrainingParams.checkPrecision(value))
  /** The metrics in the history: accuracy, top5_accuracy, f1, auc (classifiers), mae, rmse (regression). */
  def setMetrics(value: Array[String]): this.type =
    set(metrics, TorchTrainingParams.checkMetrics(value.toSeq).toArray)
  /** [[setMetrics]] for a Java list (what py4j makes of a Python list). */
  def setMetrics(value: java.util.List[String]): this.type = {
    import scala.jdk.CollectionConverters._
    setMetrics(value.asScala.toArray)
  }

  override def write: MLWriter = new TorchEstimatorWriter(this)

  override def copy(extra: ParamMap): TorchEstimator = {
    val that = defaultCopy[TorchEstimator](extra)
    that.network = network
    that
  }

  override def transformSchema(schema: StructType): StructType = {
    prepare(schema)
    TorchModel.outputSchema(schema, this, TorchTrainingParams.Losses($(loss)), outputShape(requireNetwork))
  }

  private def requireNetwork: Network = network.getOrElse(throw new IllegalArgumentException(
    "No network: call setNetwork(<sparkdl.nn.Network>) or setNetworkJson(<spec JSON>) before fit."))

  private def outputShape(net: Network): Seq[Int] = net.outputShape

  /** Checks the params and columns; the per-row feature shape. */
  private def prepare(schema: StructType): Seq[Int] = {
    val net = requireNetwork
    if (net.inputs.length != 1)
      throw new IllegalArgumentException(s"The Scala TorchEstimator trains networks with one input; this one has " +
        s"${net.inputs.length}: ${net.inputs.map(_.name).mkString(", ")}.")
    if ($(validationFraction) > 0 && isSet(validationCol))
      throw new IllegalArgumentException("Set validationFraction or validationCol, not both.")
    val features = getFeatureColumns
    Columns.require(schema, features, "features")
    val labelKind = Columns.require(schema, Seq($(labelCol)), "label")($(labelCol))
    val task = TorchTrainingParams.Losses.getOrElse($(loss), throw new IllegalArgumentException(
      s"loss='${$(loss)}' needs a Python callable; the Scala TorchEstimator trains with one of " +
        s"${TorchTrainingParams.Losses.keys.toSeq.sorted.mkString("[", ", ", "]")}. Received: loss=${$(loss)}"))
    if ($(optimizer) == TorchTrainingParams.Custom)
      throw new IllegalArgumentException(s"optimizer='custom' needs a Python callable; the Scala TorchEstimator " +
        s"trains with one of ${TorchTrainingParams.Optimizers.mkString("[", ", ", "]")}. Received: optimizer=custom")
    TorchTrainingParams.checkTrainingOptions(this, task, validating = isSet(validationCol) || $(validationFraction) > 0)
    if (task == "multiclass" && labelKind != Columns.NumberKind)
      throw new IllegalArgumentException(s"Label column '${$(labelCol)}' is ${schema($(labelCol)).dataType.simpleString} " +
        s"but loss='${$(loss)}' needs one integer class id per row.")
    if (isSet(validationCol)) {
      val v = $(validationCol)
      if (!schema.fieldNames.contains(v) || schema(v).dataType != BooleanType)
        throw new IllegalArgumentException(s"validation column '$v' must exist and be boolean. " +
          s"Existing columns: ${schema.fieldNames.mkString("[", ", ", "]")}.")
    }
    val out = outputShape(net)
    if (task == "multiclass" && out.length != 1)
      throw new IllegalArgumentException(s"A classifier must output (batch, classes); this network outputs " +
        s"(batch, ${out.mkString(", ")}).")
    val shape = getFeatureShape.map(_.toSeq).getOrElse(net.inputs.head.shape)
    if (shape.product != net.inputs.head.shape.product)
      throw new IllegalArgumentException(s"featureShape=${shape.mkString("[", ", ", "]")} does not fit the network's " +
        s"input shape ${net.inputs.head.shape.mkString("[", ", ", "]")}.")
    if (features.length > 1 && features.length != shape.product)
      throw new IllegalArgumentException(s"${features.length} feature columns cannot fill the network's input " +
        s"shape ${shape.mkString("[", ", ", "]")}.")
    shape
  }

  /** The request keys of the scheduler, clipping, early stopping, precision and metrics, each
    * only when set to other than its default (the worker's `train_spec` reads them).
    */
  private[ml] def trainingOptions: Seq[(String, sparkdl.json.Json)] = {
    val scheduler = $(lrScheduler)
    val schedulerParams = JsonParser.parse($(lrSchedulerParams)).asInstanceOf[JObj]
    (if (scheduler.nonEmpty) Seq("lr_scheduler" -> JStr(scheduler)) else Nil) ++
      (if (scheduler.nonEmpty && schedulerParams.fields.nonEmpty) Seq("lr_scheduler_params" -> schedulerParams)
       else Nil) ++
      (if ($(gradientClipNorm) > 0) Seq("gradient_clip_norm" -> JFloat($(gradientClipNorm))) else Nil) ++
      (if ($(earlyStopping) != "{}") Seq("early_stopping" -> JsonParser.parse($(earlyStopping))) else Nil) ++
      (if ($(precision) != "32") Seq("precision" -> JStr($(precision))) else Nil) ++
      get(metrics).map(m => "metrics" -> (JArr(m.map(JStr(_): sparkdl.json.Json).toVector): sparkdl.json.Json)).toSeq
  }

  override def fit(dataset: Dataset[_]): TorchModel = {
    val df = dataset.toDF()
    val schema = df.schema
    val featureShape = prepare(schema)
    val net = requireNetwork
    val task = TorchTrainingParams.Losses($(loss))
    val integerLabels = task == "multiclass"
    val n = $(numWorkers)
    val spark = df.sparkSession
    if ($(precision) == "16-mixed") TorchEstimator.requireGpuTasks(spark)  // before any job
    val sc = spark.sparkContext
    val python = getPythonExec.getOrElse(PythonWorker.pythonExec(sc.getConf))
    val pool = PythonWorkerPool.Settings.of(spark)
    val meet = DriverRendezvous.mode(spark)
    val features = getFeatureColumns
    val kinds = Columns.require(schema, features, "features")
    val labelKind = Columns.require(schema, Seq($(labelCol)), "label")($(labelCol))
    val stats = DataChecks.collect(df, features.map(c => c -> kinds(c)), $(labelCol), labelKind, integerLabels)
    DataChecks.checkFeatures(stats, features, featureShape, fromParam = getFeatureShape.isDefined)
    DataChecks.checkLabels(task, net.outputShape, stats, $(labelCol))
    TorchEstimator.checkCapacity(sc, n)
    val backendName = TorchEstimator.resolveBackend($(backend), $(backendOptions), ExecutorPython.facts(sc, python, n))
    val temp = features.indices.map(i => s"${TorchEstimator.Feature}$i")
    val label = $(labelCol)
    val labelExpr =
      if (integerLabels) Columns.quoted(label).cast("long")
      else Columns.asFloat(label, Columns.require(schema, Seq(label), "label")(label))
    val validating = isSet(validationCol) || $(validationFraction) > 0
    val valid = if (isSet(validationCol)) Columns.quoted($(validationCol)) else rand($(seed)) < lit($(validationFraction))
    val prepared = df.select(
      features.zip(temp).map { case (c, t) => Columns.asFloat(c, kinds(c)).as(t) } ++ Seq(
        labelExpr.as(TorchEstimator.Label), valid.as(TorchEstimator.Valid),
        monotonically_increasing_id().as(TorchEstimator.Order)): _*)
      // hashed on the row id, as the Python fit does: no sort before the shuffle
      .repartition(n, col(TorchEstimator.Order))

    val request = new JObj(Vector[(String, sparkdl.json.Json)](
      "mode" -> JStr("train"),
      "network" -> JStr(net.toJson),
      "loss" -> JStr($(loss)),
      "optimizer" -> JStr($(optimizer)),
      "optimizer_params" -> JsonParser.parse($(optimizerParams)),
      "batch_size" -> JInt($(batchSize)),
      "epochs" -> JInt($(epochs)),
      "seed" -> JInt($(seed)),
      "num_workers" -> JInt(n),
      "backend" -> JStr(backendName),
      "worker_reused" -> JBool(pool.reuse),
      "backend_options" -> JsonParser.parse($(backendOptions)),
      "shuffle" -> JBool($(shuffle)),
      "timeout_s" -> JFloat($(timeout)),
      "backward_passes_per_step" -> JInt($(backwardPassesPerStep)),
      "layout" -> JObj(
        "feature_cols" -> JArr(temp.map(JStr(_)).toVector),
        "label_col" -> JStr(TorchEstimator.Label),
        "integer_labels" -> JBool(integerLabels),
        "feature_shape" -> JArr(featureShape.map(d => JInt(d)).toVector),
        "validation_col" -> (if (validating) JStr(TorchEstimator.Valid) else JNull),
        "order_col" -> JStr(TorchEstimator.Order))) ++ trainingOptions)
    val preparedSchema = prepared.schema
    val timeoutMs = ($(timeout) * 1000).toLong
    val states = new TorchEstimator.DriverStates($(driverStateInterval), DriverRendezvous.maxStateBytes(sc))
    var resume: Option[EpochState] = None
    val done = Restarts.run($(maxRestarts),
      beforeRestart = () => Restarts.waitForSlots(n, $(timeout), () => TorchEstimator.taskSlots(sc), sc.master),
      resumeEpoch = () => { resume = states.newest; resume.fold(0)(_.epoch) }) { _ =>
      if (resume.exists(_.epoch >= $(epochs))) TorchEstimator.finishedBy(resume.get)
      else {
        // Taken last, so this fit's checks and data queries run while another fit trains.
        val lease = BarrierSlots.acquire(n, () => TorchEstimator.taskSlots(sc), TorchEstimator.capacityError(sc, n, _))
        try {
          val rendezvous = states.rendezvous(sc, meet, n)
          val address = rendezvous.map(_.address)
          val attemptRequest = JObj(request.fields ++ Seq(
            "state_interval" -> JInt(if (rendezvous.isDefined) states.interval else 0),
            "resume" -> JBool(resume.isDefined),
            "rendezvous" -> rendezvous.fold[sparkdl.json.Json](JNull)(_.workerAddress)))
          // Every rank loads the state; a broadcast sends it to each executor once.
          val state = resume.map(r => sc.broadcast(r.bytes))
          val rows = prepared.rdd.barrier().mapPartitions { part =>
            TorchEstimator.trainTask(python, pool, address, timeoutMs, attemptRequest, preparedSchema, part,
              state.map(_.value))
          }
          try rows.collect()
          catch {
            // a stopped SparkContext ends the fit, whatever the failure says
            case e: SparkException if sc.isStopped =>
              throw new SparkException(TorchEstimator.workerError(e.getMessage), e)
            // a rank that failed in the user's code said so first: never retried, whichever
            // rank's failure (a peer's broken collective) reached Spark first; its report is
            // added where Spark's message does not already carry that worker's error
            case e: SparkException =>
              val shown = TorchEstimator.workerError(e.getMessage)
              throw new Restarts.JobFailed(states.userFailure.filterNot(_ => shown.contains("TrainingCodeError"))
                .fold(shown)(report => s"$shown\n$report"), e)
          } finally {
            rendezvous.foreach(_.close())
            state.foreach(_.destroy())
          }
        } finally lease.close()
      }
    }
    val results = done.result
    val weights = results.collectFirst { case (_, "weights", w) => w }.getOrElse(
      throw new SparkException("The training job returned no weights from rank 0."))
    val epochsJson = results.collectFirst { case (_, "history", h) => new String(h, UTF_8) }.getOrElse("[]")
    val workers = results.filter(_._2 == "worker").sortBy(_._1).map(r => new String(r._3, UTF_8))
    // Rank 0's epochs are Python's json.dumps: a diverged run's loss is a bare NaN there. A
    // resumed run's rank 0 reports the epochs it trained; the state holds those before.
    val trained = JsonParser.parse(epochsJson) match {
      case JArr(items) => items
      case other => Vector(other)
    }
    val historyEpochs = TorchModel.pyJson(TorchModel.strictEpochs(JArr(resume.fold(Vector.empty[sparkdl.json.Json])(
      _.history) ++ trained)))
    val history = s"""{"backend":${CanonicalJson.write(JStr(backendName))},"epochs":$historyEpochs,""" +
      s""""num_workers":$n,"workers":${workers.mkString("[", ",", "]")},""" +
      s""""attempts":${CanonicalJson.write(done.attemptsJson)}}"""
    val model = new TorchModel(uid.replace("TorchEstimator", "TorchModel"), "spec", net.toJson.getBytes(UTF_8),
      weights, history)
    copyValues(model).set(model.featureShape, featureShape.toArray).set(model.task, task)
      .set(model.outputShape, net.outputShape.toArray)
    model.pythonExec = python
    model.setParent(this)
  }
}

/** Reads estimators saved with `TorchEstimator.write`, or from Python: `TorchEstimator.load(path)`. */
object TorchEstimator extends MLReadable[TorchEstimator] {
  private[ml] val Feature = "__sparkdl_f"
  private[ml] val Label = "__sparkdl_label"
  private[ml] val Valid = "__sparkdl_is_val"
  private[ml] val Order = "__sparkdl_row"
  private[ml] val BatchRows = 4096

  /** The class name Python's `sparkdl.TorchEstimator` saves; the reader accepts it (see
    * [[sparkdl.ml.estimator.TorchEstimator]]) as well as this class's name.
    */
  val PythonClass = "sparkdl.ml.estimator.TorchEstimator"

  /** Reads an estimator saved from Scala or from Python (one whose network is a `sparkdl.nn`
    * network, with a named loss and optimizer).
    */
  override def read: MLReader[TorchEstimator] = new TorchEstimatorReader

  override def load(path: String): TorchEstimator = super.load(path)

  /** The worker's own text out of a failed job's message, without JVM frames. */
  private[ml] def workerError(message: String): String = {
    val text = Option(message).getOrElse("")
    val at = text.indexOf("The sparkdl Python worker")
    if (at < 0) s"The training job failed: ${text.split("\n\tat ").head.take(4000)}"
    else "A training worker failed: " + text.substring(at).split("\n\tat ").head.split("\nDriver stacktrace:").head.trim
  }

  /** float16 training needs GPUs, which Spark hands tasks only when they ask for them (as
    * Python's `_require_gpu_tasks`).
    */
  private[ml] def requireGpuTasks(spark: org.apache.spark.sql.SparkSession): Unit = {
    val amount = scala.util.Try(spark.conf.getOption("spark.task.resource.gpu.amount")).toOption.flatten
    if (amount.forall(_.trim.isEmpty))
      throw new sparkdl.ConfigException("precision='16-mixed' needs a GPU per training task, and this session " +
        "gives tasks none: set spark.executor.resource.gpu.amount and spark.task.resource.gpu.amount (with a " +
        "discovery script), or use precision='bf16-mixed', which autocasts on CPUs too.")
  }

  /** How long after application start executors may still be registering, as in Python. */
  private val RegistrationWaitMs = 60000L

  /** Tasks of the default resource profile that can run at once, if this Spark tells
    * (`SparkContext.maxNumConcurrentTasks`, what Spark's own barrier check and the Python
    * side use; reached reflectively as it is not public API).
    */
  private[ml] def taskSlots(sc: org.apache.spark.SparkContext): Option[Int] =
    try {
      val manager = sc.getClass.getMethod("resourceProfileManager").invoke(sc)
      val profile = manager.getClass.getMethod("defaultResourceProfile").invoke(manager)
      sc.getClass.getMethods.find(m => m.getName == "maxNumConcurrentTasks" && m.getParameterCount == 1)
        .map(_.invoke(sc, profile).asInstanceOf[Int])
    } catch { case scala.util.control.NonFatal(_) => None }

  /** Fails fast (Spark itself retries for minutes) unless `n` barrier tasks fit at once. */
  private[ml] def checkCapacity(sc: org.apache.spark.SparkContext, n: Int): Unit = {
    val conf = sc.getConf
    val local = sc.master == "local" || sc.master.startsWith("local[")
    if (conf.getBoolean("spark.dynamicAllocation.enabled", defaultValue = false) && !local)
      throw new IllegalArgumentException(s"Barrier training cannot run with dynamic allocation: Spark needs all " +
        s"$n tasks at once. Set spark.dynamicAllocation.enabled=false (and spark.executor.instances).")
    var slots = taskSlots(sc)
    while (slots.exists(_ < n) && System.currentTimeMillis() < sc.startTime + RegistrationWaitMs) {
      Thread.sleep(500)
      slots = taskSlots(sc)
    }
    slots.filter(_ < n).foreach(found => throw capacityError(sc, n, found))
  }

  /** The error for a cluster with `found` task slots, fewer than `n` barrier tasks need. */
  private[ml] def capacityError(sc: org.apache.spark.SparkContext, n: Int, found: Int): SparkException = {
    val conf = sc.getConf
    new SparkException(s"numWorkers=$n needs $n concurrent task slots but the cluster has $found (master " +
      s"'${sc.master}', spark.executor.cores=${conf.get("spark.executor.cores", "default")}, spark.task.cpus=" +
      s"${conf.get("spark.task.cpus", "1")}, spark.executor.instances=${conf.get("spark.executor.instances", "default")}). " +
      s"Lower numWorkers to at most $found or add executors/cores.")
  }

  /** The backend to run: "auto" is horovod where the executors' Python imports it, else torch
    * (Python's `default_backend()`).
    *
    * @param options backendOptions as a JSON object
    * @throws IllegalArgumentException for backend "horovod" on executors without Horovod, or
    *                                  backendOptions given to the torch backend
    */
  private[ml] def resolveBackend(backend: String, options: String, facts: ExecutorPython.Facts): String = {
    val name = backend match {
      case "auto" => if (facts.horovod) "horovod" else "torch"
      case "horovod" if !facts.horovod =>
        throw new IllegalArgumentException(s"backend='horovod' but the executors' Python (${facts.python}) cannot " +
          "import horovod.torch. Build and install it with deploy/horovod/build.sh, or use setBackend(\"torch\") " +
          "(or \"auto\", which picks horovod only where it is installed).")
      case other => other
    }
    if (name == "torch" && options != "{}")
      throw new IllegalArgumentException(s"backend='torch' takes no backendOptions. Received: backendOptions=$options" +
        (if (backend == "auto") " (backend 'auto' chose torch: Horovod is not installed on the executors)." else ""))
    name
  }

  /** What the driver holds of one fit's training: the newest state rank 0 handed it (which a
    * restart resumes from) and the first failure a rank reported in the user's code; fed by
    * the [[DriverRendezvous]] of each attempt, read between attempts.
    *
    * @param interval the fit's `driverStateInterval` (0: no states)
    * @param cap      the largest state taken (`spark.driver.maxResultSize`)
    */
  private[ml] final class DriverStates(val interval: Int, cap: Long) {
    private val log = org.slf4j.LoggerFactory.getLogger(getClass)
    private val state = new java.util.concurrent.atomic.AtomicReference[Option[EpochState]](None)
    private val failure = new java.util.concurrent.atomic.AtomicReference[Option[String]](None)

    /** The largest state the rendezvous reads (0: none, when states are off). */
    def maxBytes: Long = if (interval > 0) cap else 0L

    /** An attempt's rendezvous ([[DriverRendezvous.start]]), reporting here. */
    def rendezvous(sc: org.apache.spark.SparkContext, mode: String, numRanks: Int): Option[DriverRendezvous] =
      DriverRendezvous.start(sc, mode, numRanks, maxBytes, take, failed)

    /** Keeps a state that parses and is newer than the one held; a broken one is skipped. */
    def take(epoch: Int, bytes: Array[Byte]): Unit =
      try {
        val parsed = EpochState.parse(bytes)
        if (parsed.epoch == epoch) state.accumulateAndGet(Some(parsed),
          (held, next) => if (held.exists(_.epoch >= next.get.epoch)) held else next)
      } catch {
        case e: IllegalArgumentException =>
          log.warn(s"sparkdl: skipped the training state after epoch $epoch that rank 0 handed the driver: " +
            e.getMessage)
      }

    def failed(rank: Int, text: String): Unit =
      failure.compareAndSet(None, Some(s"A training worker failed (rank $rank):\n$text"))

    def newest: Option[EpochState] = state.get()
    def userFailure: Option[String] = failure.get()
  }

  /** The results of a fit whose newest state is its last epoch's: nothing left to train. */
  private[ml] def finishedBy(state: EpochState): Array[(Int, String, Array[Byte])] =
    Array((0, "weights", state.weights), (0, "history", "[]".getBytes(UTF_8)))

  /** One rank: take a worker, stream the partition (after the state it resumes from, if any),
    * serve its gathers (at the driver's rendezvous, or with `allGather` without one), return
    * its results.
    */
  private[ml] def trainTask(python: String, pool: PythonWorkerPool.Settings, rendezvous: Option[RendezvousAddress],
                            timeoutMs: Long, request: JObj, schema: StructType,
                            rows: Iterator[Row], state: Option[Array[Byte]] = None)
      : Iterator[(Int, String, Array[Byte])] = {
    val ctx = BarrierTaskContext.get()
    val rank = ctx.partitionId()
    val hosts = ctx.getTaskInfos().map { i => val a = i.address; val k = a.lastIndexOf(':'); if (k > 0) a.take(k) else a }
    val gpus = ctx.resources().get("gpu").map(_.addresses.toSeq).getOrElse(Nil)
    val taskFacts = JObj("rank" -> JInt(rank), "hosts" -> JArr(hosts.map(h => JStr(h): sparkdl.json.Json).toVector),
      "cpus" -> JInt(ctx.cpus()), "gpus" -> JArr(gpus.map(g => JStr(g): sparkdl.json.Json).toVector),
      "attempt" -> JInt(ctx.attemptNumber()), "executor_id" -> JStr(SparkEnv.get.executorId))
    val allocator = new RootAllocator(Long.MaxValue)
    ctx.addTaskCompletionListener[Unit] { _ =>
      try allocator.close() catch { case _: IllegalStateException => () }
    }
    val worker = PythonWorkerPool.forTask(ctx, python, s"rank $rank", pool)
    worker.send(PythonWorker.Request, CanonicalJson.write(JObj(request.fields :+ ("task" -> taskFacts))).getBytes(UTF_8))
    state.foreach(worker.send(PythonWorker.Blob, _))
    val columns = schema.indices
    rows.grouped(BatchRows).foreach { batch =>
      worker.send(PythonWorker.Batch, ArrowRows.toIpc(schema, columns, batch.toSeq, allocator))
    }
    worker.send(PythonWorker.End)
    val results = Vector.newBuilder[(Int, String, Array[Byte])]
    var done = false
    while (!done) {
      val (kind, payload) = worker.expect(PythonWorker.Gather, PythonWorker.Result, PythonWorker.Done)
      kind match {
        case PythonWorker.Gather =>
          val message = new String(payload, UTF_8)
          val all = rendezvous.fold(ctx.allGather(message).toSeq)(
            _.gather(rank, ctx.attemptNumber(), message, timeoutMs))
          worker.send(PythonWorker.Gathered,
            CanonicalJson.write(JArr(all.map(m => JStr(m): sparkdl.json.Json).toVector)).getBytes(UTF_8))
        case PythonWorker.Result =>
          ArrowRows.fromIpc(payload, allocator)._2.foreach { r =>
            results += ((r(0).asInstanceOf[Integer].intValue, r(1).toString, r(2).asInstanceOf[Array[Byte]]))
          }
        case _ => done = true
      }
    }
    results.result().iterator
  }
}
