package sparkdl.ml

import java.nio.charset.StandardCharsets.UTF_8
import java.nio.file.{Files, Path}

import org.apache.spark.ml.linalg.SQLDataTypes
import org.apache.spark.ml.param.{Param, ParamMap}
import org.apache.spark.sql.types.{BooleanType, DoubleType, LongType, StructField, StructType}
import org.scalatest.BeforeAndAfterAll
import org.scalatest.funsuite.AnyFunSuite

import sparkdl.ConfigException
import sparkdl.json.{CanonicalJson, JsonParser}
import sparkdl.json.Json._
import sparkdl.nn._

/** The training options Python's estimator has (`lrScheduler`, `lrSchedulerParams`,
  * `gradientClipNorm`, `earlyStopping`, `precision`, `metrics`) on the Scala estimator and
  * model: defaults, the driver's checks, the request the worker reads, persistence in the
  * form Python reads and writes. Training with them end to end is in
  * `tests/integration/test_scala_training_options.py`.
  */
class TrainingOptionsSuite extends AnyFunSuite with BeforeAndAfterAll {

  private lazy val spark = LocalSpark.session

  override def beforeAll(): Unit = spark

  private def network: Network = Sequential(Input(Seq(5)), Dense(8, activation = "tanh"), Dense(3))

  private def estimator: TorchEstimator = new TorchEstimator().setNetwork(network).setBatchSize(16)

  private val schema = StructType(Seq(StructField("features", SQLDataTypes.VectorType),
    StructField("label", LongType), StructField("target", DoubleType), StructField("isVal", BooleanType)))

  private def tempDir(): Path = {
    val dir = Files.createTempDirectory("sparkdl-options")
    dir.toFile.deleteOnExit()
    dir
  }

  private def metadata(path: Path): JObj = {
    val part = path.resolve("metadata").toFile.listFiles().filter(_.getName.startsWith("part-")).head
    JsonParser.parse(new String(Files.readAllBytes(part.toPath), UTF_8).trim).asInstanceOf[JObj]
  }

  private def values(p: org.apache.spark.ml.param.Params): Map[String, Any] =
    p.extractParamMap().toSeq.map(pair => pair.param.name -> (pair.value match {
      case a: Array[_] => a.toSeq
      case v => v
    })).toMap

  /** What `fit` does with the estimator's params (`copyValues`, protected in Spark). */
  private def carry(from: TorchEstimator, to: TorchModel): TorchModel = {
    from.extractParamMap().toSeq.filter(p => from.isSet(p.param) && to.hasParam(p.param.name)).foreach { p =>
      to.set(to.getParam(p.param.name).asInstanceOf[Param[Any]], p.value)
    }
    to
  }

  private def configError(body: => Any): String = intercept[ConfigException](body).getMessage

  private def options(est: TorchEstimator): String = CanonicalJson.write(new JObj(est.trainingOptions.toVector))

  private def configured: TorchEstimator = estimator.setLrScheduler("step")
    .setLrSchedulerParams("""{"step_size": 1, "gamma": 0.5}""").setGradientClipNorm(1.5)
    .setEarlyStopping("""{"monitor": "train_loss", "patience": 2, "mode": "min", "restoreBest": true, "minDelta": 0}""")
    .setPrecision("bf16-mixed").setMetrics(Array("accuracy", "f1"))

  // -- names, defaults, getters and setters ------------------------------------------

  test("the estimator and the model have Python's params with Python's defaults") {
    val model = new TorchModel("TorchModel_o", "spec", network.toJson.getBytes(UTF_8), Array[Byte](1), "{}")
    for (p <- Seq[TorchTrainingParams](estimator, model)) {
      assert(p.getLrScheduler == "" && p.getLrSchedulerParams == "{}" && p.getGradientClipNorm == 0.0)
      assert(p.getEarlyStopping == "{}" && p.getPrecision == "32" && p.getMetrics.isEmpty)
      assert(!p.isDefined(p.metrics), "metrics unset means the task's default, as in Python")
      for (name <- Seq("lrScheduler", "lrSchedulerParams", "gradientClipNorm", "earlyStopping", "precision", "metrics"))
        assert(p.hasParam(name), name)
    }
  }

  test("the setters keep canonical JSON and take Scala and Java maps") {
    val est = configured
    assert(est.getLrScheduler == "step" && est.getLrSchedulerParams == """{"gamma":0.5,"step_size":1}""")
    assert(est.getGradientClipNorm == 1.5 && est.getPrecision == "bf16-mixed")
    assert(est.getEarlyStopping == """{"minDelta":0,"mode":"min","monitor":"train_loss","patience":2,"restoreBest":true}""")
    assert(est.getMetrics.map(_.toSeq).contains(Seq("accuracy", "f1")))
    assert(estimator.setLrSchedulerParams(Map[String, Any]("T_max" -> 4, "eta_min" -> 0.01)).getLrSchedulerParams ==
      """{"T_max":4,"eta_min":0.01}""")
    val jmap = new java.util.HashMap[String, Any]()
    jmap.put("monitor", "val_accuracy")
    jmap.put("patience", Integer.valueOf(1))
    jmap.put("restoreBest", java.lang.Boolean.TRUE)
    assert(estimator.setEarlyStopping(jmap).getEarlyStopping ==
      """{"monitor":"val_accuracy","patience":1,"restoreBest":true}""")
    val list = java.util.Arrays.asList("mae", "rmse")
    assert(estimator.setMetrics(list).getMetrics.map(_.toSeq).contains(Seq("mae", "rmse")))
    assert(estimator.setLrScheduler("cosine").setLrScheduler("").getLrScheduler == "")
  }

  test("a fitted model carries the options it was fitted with") {
    val est = configured
    val model = new TorchModel("TorchModel_o", "spec", network.toJson.getBytes(UTF_8), Array[Byte](1), "{}")
    carry(est, model)
    assert(model.getLrScheduler == "step" && model.getLrSchedulerParams == est.getLrSchedulerParams)
    assert(model.getEarlyStopping == est.getEarlyStopping && model.getGradientClipNorm == 1.5)
    assert(model.getPrecision == "bf16-mixed" && model.getMetrics.map(_.toSeq).contains(Seq("accuracy", "f1")))
    assert(model.copy(ParamMap.empty).getMetrics.map(_.toSeq).contains(Seq("accuracy", "f1")))
  }

  // -- validation: the setters, and fit on the driver before any job ------------------

  test("an unknown scheduler name lists the valid ones") {
    assert(configError(estimator.setLrScheduler("exponential")) == "Unknown lrScheduler 'exponential'. Valid " +
      "choices: ['cosine', 'onecycle', 'plateau', 'step'], or '' for none. Received: lrScheduler='exponential'")
    assert(configError(estimator.setLrScheduler("custom")).contains("lrScheduler='custom' needs a Python callable"))
    // a value that slips past the setter (a ParamMap) is still caught, by Spark's validator
    intercept[IllegalArgumentException](estimator.set(estimator.lrScheduler, "exponential"))
  }

  test("a negative or NaN clip norm, an unknown precision, an unknown metric are refused by the setters") {
    assert(configError(estimator.setGradientClipNorm(-1.0)) ==
      "gradientClipNorm must be >= 0 (0: no clipping). Received: gradientClipNorm=-1.0")
    assert(configError(estimator.setGradientClipNorm(Double.NaN)).contains("Received: gradientClipNorm=nan"))
    assert(configError(estimator.setPrecision("64")) ==
      "precision must be one of ['32', 'bf16-mixed', '16-mixed']. Received: precision='64'")
    assert(configError(estimator.setMetrics(Array("accuracy", "recall"))) == "Unknown metric 'recall'. Valid " +
      "choices: ['accuracy', 'auc', 'f1', 'mae', 'rmse', 'top5_accuracy']. Received: metrics=['accuracy', 'recall']")
    assert(configError(estimator.setMetrics(Array("f1", "f1"))) ==
      "metrics lists a metric twice. Received: metrics=['f1', 'f1']")
    intercept[IllegalArgumentException](estimator.setLrSchedulerParams("[1, 2]"))
  }

  test("earlyStopping's unknown keys and bad values are named") {
    assert(configError(estimator.setEarlyStopping("""{"monitor": "val_loss", "patiense": 3}""")) ==
      "earlyStopping has unknown key(s) ['patiense']. Valid: ['minDelta', 'mode', 'monitor', 'patience', " +
        "'restoreBest']. Received: earlyStopping={'monitor': 'val_loss', 'patiense': 3}")
    assert(configError(estimator.setEarlyStopping("""{"patience": -1}""")) ==
      "earlyStopping patience must be an integer >= 0. Received: patience=-1")
    assert(configError(estimator.setEarlyStopping("""{"patience": 2.5}""")).contains("Received: patience=2.5"))
    assert(configError(estimator.setEarlyStopping("""{"mode": "up"}""")) ==
      "earlyStopping mode must be 'min' or 'max'. Received: mode='up'")
    assert(configError(estimator.setEarlyStopping("""{"minDelta": -0.1}""")) ==
      "earlyStopping minDelta must be a number >= 0. Received: minDelta=-0.1")
    assert(configError(estimator.setEarlyStopping("""{"monitor": ""}""")).contains("earlyStopping monitor must be"))
    assert(estimator.setEarlyStopping("{}").getEarlyStopping == "{}")
  }

  test("options that depend on the loss or the validation set are checked with the columns") {
    // a metric of another task
    val mae = estimator.setMetrics(Array("mae"))
    assert(configError(mae.transformSchema(schema)) == "Metric 'mae' does not apply to a multiclass loss; for it " +
      "use ['accuracy', 'top5_accuracy', 'f1', 'auc']. Received: metrics=['mae']")
    estimator.setLoss("mse").setLabelCol("target").setNetwork(Sequential(Input(Seq(5)), Dense(1)))
      .setMetrics(Array("mae", "rmse")).transformSchema(schema)
    // a monitor the history will not have
    val stop = estimator.setEarlyStopping("""{"monitor": "val_loss"}""")
    assert(configError(stop.transformSchema(schema)) == "earlyStopping monitors 'val_loss', which the history " +
      "will not have; it will have ['train_loss', 'train_accuracy', 'lr']. A val_* metric needs a validation set: " +
      "set validationFraction or validationCol.")
    stop.setValidationFraction(0.2).transformSchema(schema)
    stop.setValidationFraction(0.0).setValidationCol("isVal").transformSchema(schema)
    val f1 = estimator.setMetrics(Array("f1")).setEarlyStopping("""{"monitor": "train_accuracy"}""")
    assert(configError(f1.transformSchema(schema)).contains("it will have ['train_loss', 'train_f1', 'lr']"))
    // the scheduler's interval
    val plateau = estimator.setLrScheduler("plateau").setLrSchedulerParams("""{"interval": "step"}""")
    assert(configError(plateau.transformSchema(schema)) == "lrScheduler='plateau' steps once per epoch on a " +
      "metric: drop interval='step' from lrSchedulerParams.")
    val monitor = estimator.setLrScheduler("plateau").setLrSchedulerParams("""{"monitor": "val_loss"}""")
    assert(configError(monitor.transformSchema(schema)).contains("lrScheduler='plateau' monitors 'val_loss'"))
    val interval = estimator.setLrScheduler("step").setLrSchedulerParams("""{"interval": "batch"}""")
    assert(configError(interval.transformSchema(schema)) ==
      "lrSchedulerParams interval must be one of ['epoch', 'step']. Received: interval='batch'")
    configured.transformSchema(schema)
  }

  test("fit refuses bad options before any Spark job runs") {
    import spark.implicits._
    val df = Seq((org.apache.spark.ml.linalg.Vectors.dense(1, 2, 3, 4, 5), 1L)).toDF("features", "label")
    val sc = spark.sparkContext
    val group = "sparkdl-options-before-any-job"
    sc.setJobGroup(group, "must stay empty")
    try {
      val e = intercept[ConfigException](estimator.setEarlyStopping("""{"monitor": "val_f1"}""").fit(df))
      assert(e.getMessage.startsWith("earlyStopping monitors 'val_f1', which the history will not have"))
      val load = estimator
      load.set(load.metrics, Array("rmse"))  // past the setter, as a ParamMap or a load would
      assert(intercept[ConfigException](load.fit(df)).getMessage.startsWith("Metric 'rmse' does not apply"))
      val fp16 = estimator.setPrecision("16-mixed")
      assert(intercept[ConfigException](fp16.fit(df)).getMessage.startsWith("precision='16-mixed' needs a GPU"))
    } finally sc.clearJobGroup()
    assert(sc.statusTracker.getJobIdsForGroup(group).isEmpty, "no job ran for options the driver can check")
  }

  // -- the request the worker reads ----------------------------------------------------

  test("the request holds the options only when they are set to other than the defaults") {
    assert(options(estimator) == "{}")
    assert(options(estimator.setLrSchedulerParams("""{"gamma": 0.5}""").setGradientClipNorm(0.0)
      .setEarlyStopping("{}").setPrecision("32")) == "{}", "defaults, and scheduler params without a scheduler")
    assert(options(configured) == CanonicalJson.write(JsonParser.parse(
      """{"lr_scheduler":"step","lr_scheduler_params":{"gamma":0.5,"step_size":1},"gradient_clip_norm":1.5,
        |"early_stopping":{"minDelta":0,"mode":"min","monitor":"train_loss","patience":2,"restoreBest":true},
        |"precision":"bf16-mixed","metrics":["accuracy","f1"]}""".stripMargin)))
    assert(options(estimator.setLrScheduler("cosine")) == """{"lr_scheduler":"cosine"}""")
    assert(options(estimator.setMetrics(Array.empty[String])) == """{"metrics":[]}""", "no metrics at all")
  }

  // -- persistence, in the form Python writes -----------------------------------------

  test("an estimator saves the options as Python does, and loads them back") {
    val path = tempDir().resolve("est")
    val est = configured
    est.write.save(path.toString)
    val saved = metadata(path).get("paramMap").get.asInstanceOf[JObj]
    assert(saved.get("lrSchedulerParams").contains(JsonParser.parse("""{"gamma":0.5,"step_size":1}""")),
      "a JSON object param is saved as the object, as Python saves a dict")
    assert(saved.get("earlyStopping").exists(_.isInstanceOf[JObj]))
    assert(saved.get("metrics").contains(JArr(Vector(JStr("accuracy"), JStr("f1")))))
    assert(saved.get("precision").contains(JStr("bf16-mixed")) && saved.get("gradientClipNorm").contains(JFloat(1.5)))
    val defaults = metadata(path).get("defaultParamMap").get.asInstanceOf[JObj]
    val bare = tempDir().resolve("bare")
    estimator.write.save(bare.toString)
    val bareDefaults = metadata(bare).get("defaultParamMap").get.asInstanceOf[JObj]
    assert(bareDefaults.get("lrSchedulerParams").contains(JObj()) && bareDefaults.get("earlyStopping").contains(JObj()))
    assert(bareDefaults.get("lrScheduler").contains(JStr("")) && bareDefaults.get("precision").contains(JStr("32")))
    assert(!defaults.contains("metrics") && !bareDefaults.contains("metrics"))
    val loaded = TorchEstimator.load(path.toString)
    assert(values(loaded) == values(est))
    assert(options(loaded) == options(est))
    val plain = TorchEstimator.load(bare.toString)
    assert(plain.getMetrics.isEmpty && !plain.isSet(plain.lrScheduler) && options(plain) == "{}")
  }

  test("an estimator Python saved with the options loads in Scala") {
    val path = tempDir().resolve("py-est")
    Files.createDirectories(path.resolve("metadata"))
    Files.writeString(path.resolve("metadata/part-00000"),
      """{"class":"sparkdl.ml.estimator.TorchEstimator","timestamp":1,"sparkVersion":"4.3.0","uid":"TorchEstimator_py",""" +
        """"paramMap":{"lrScheduler":"step","lrSchedulerParams":{"step_size":1,"gamma":0.5},"gradientClipNorm":2.0,""" +
        """"earlyStopping":{"monitor":"train_loss","patience":1,"restoreBest":true},"precision":"bf16-mixed",""" +
        """"metrics":["accuracy","top5_accuracy"],"checkpointDir":""},"defaultParamMap":{"lrScheduler":"",""" +
        """"lrSchedulerParams":{},"gradientClipNorm":0.0,"earlyStopping":{},"precision":"32","logDir":""},""" +
        """"architectureKind":"spec","customCode":[]}""" + "\n")
    Files.write(path.resolve("network.json"), network.toJson.getBytes(UTF_8))
    val loaded = TorchEstimator.load(path.toString)
    assert(loaded.getLrScheduler == "step" && loaded.getLrSchedulerParams == """{"gamma":0.5,"step_size":1}""")
    assert(loaded.getGradientClipNorm == 2.0 && loaded.getPrecision == "bf16-mixed")
    assert(loaded.getEarlyStopping == """{"monitor":"train_loss","patience":1,"restoreBest":true}""")
    assert(loaded.getMetrics.map(_.toSeq).contains(Seq("accuracy", "top5_accuracy")))
    loaded.transformSchema(schema)
  }

  test("a model saves and loads the options, and reads Python's") {
    val model = new TorchModel("TorchModel_o", "spec", network.toJson.getBytes(UTF_8), Array[Byte](1),
      """{"backend":"torch","epochs":[{"epoch":1,"train_loss":0.5,"lr":0.1,"stopped_early":"x"}],"num_workers":1,"workers":[]}""")
    carry(configured, model).set(model.task, "multiclass").set(model.outputShape, Array(3))
    val path = tempDir().resolve("model")
    model.write.save(path.toString)
    val saved = metadata(path).get("paramMap").get.asInstanceOf[JObj]
    assert(saved.get("earlyStopping").exists(_.isInstanceOf[JObj]) && saved.get("lrSchedulerParams").exists(_.isInstanceOf[JObj]))
    val loaded = TorchModel.load(path.toString)
    assert(values(loaded) == values(model) && loaded.historyJson == model.historyJson)

    val py = tempDir().resolve("py-model")
    Files.createDirectories(py.resolve("metadata"))
    Files.writeString(py.resolve("metadata/part-00000"),
      """{"class":"sparkdl.ml.model.TorchModel","timestamp":1,"sparkVersion":"4.3.0","uid":"TorchModel_py",""" +
        """"paramMap":{"featureShape":[5],"task":"multiclass","outputShape":[3],"lrScheduler":"custom",""" +
        """"earlyStopping":{"monitor":"val_loss","patience":3},"metrics":["auc"],"gradientClipNorm":0.5},""" +
        """"defaultParamMap":{"lrSchedulerParams":{},"precision":"32"},"architectureKind":"spec",""" +
        """"history":{"backend":"torch","epochs":[{"epoch":1,"train_loss":0.4,"lr":0.01,"stopped_early":"why"}],""" +
        """"num_workers":1,"workers":[]}}""" + "\n")
    Files.write(py.resolve("network.json"), network.toJson.getBytes(UTF_8))
    Files.write(py.resolve("weights.safetensors"), Array[Byte](4, 2))
    val fromPython = TorchModel.load(py.toString)
    assert(fromPython.getLrScheduler == "custom", "a Python callable's name is kept, as loss='custom' is")
    assert(fromPython.getEarlyStopping == """{"monitor":"val_loss","patience":3}""")
    assert(fromPython.getMetrics.map(_.toSeq).contains(Seq("auc")) && fromPython.getGradientClipNorm == 0.5)
    assert(fromPython.getPrecision == "32" && !fromPython.isSet(fromPython.precision))
    val epoch = JsonParser.parse(fromPython.historyJson).asInstanceOf[JObj].get("epochs").get
      .asInstanceOf[JArr].items.head.asInstanceOf[JObj]
    assert(epoch.get("lr").contains(JFloat(0.01)) && epoch.get("stopped_early").contains(JStr("why")))
  }

  test("a Python model with several inputs, padding, several outputs or TorchScript is refused, not misread") {
    def saved(name: String, params: String, extra: String = ""): String = {
      val dir = tempDir().resolve(name)
      Files.createDirectories(dir.resolve("metadata"))
      Files.writeString(dir.resolve("metadata/part-00000"),
        """{"class":"sparkdl.ml.model.TorchModel","timestamp":1,"sparkVersion":"4.3.0","uid":"TorchModel_py",""" +
          s""""paramMap":{"task":"multiclass","outputShape":[3]$params},"defaultParamMap":{"padding":{}},""" +
          s""""architectureKind":"spec"$extra,"history":{}}""" + "\n")
      Files.write(dir.resolve("network.json"), network.toJson.getBytes(UTF_8))
      Files.write(dir.resolve("weights.safetensors"), Array[Byte](4, 2))
      dir.toString
    }
    assert(TorchModel.load(saved("plain", "")).getTask == "multiclass", "an empty default padding is fine")
    for ((name, params) <- Seq("inputs" -> ""","inputCols":["tokens","side"]""",
                               "padding" -> ""","padding":{"value":0}""",
                               "outputs" -> ""","labelCols":["kind","size"]""")) {
      val message = intercept[IllegalArgumentException](TorchModel.load(saved(name, params))).getMessage
      assert(message.contains("only Python's sparkdl.TorchModel") && message.contains(params.split('"')(1)), message)
    }
    val transform = intercept[IllegalArgumentException](
      TorchModel.load(saved("transform", "", ""","customCode":["scoreTransform"]"""))).getMessage
    assert(transform.contains("scoreTransform"), transform)
  }
}
