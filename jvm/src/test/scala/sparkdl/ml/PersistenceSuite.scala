package sparkdl.ml

import java.io.IOException
import java.net.URI
import java.nio.charset.StandardCharsets.UTF_8
import java.nio.file.{Files, Path}

import org.apache.hadoop.fs.{FSDataOutputStream, RawLocalFileSystem, Path => HPath}
import org.apache.hadoop.fs.permission.FsPermission
import org.apache.hadoop.util.Progressable

import org.apache.spark.ml.{Pipeline, PipelineModel}
import org.apache.spark.ml.evaluation.MulticlassClassificationEvaluator
import org.apache.spark.ml.param.ParamMap
import org.apache.spark.ml.tuning.{CrossValidator, ParamGridBuilder, TrainValidationSplit}
import org.scalatest.BeforeAndAfterAll
import org.scalatest.funsuite.AnyFunSuite

import sparkdl.json.{CanonicalJson, JsonParser}
import sparkdl.json.Json._
import sparkdl.nn._

/** Saving and loading the estimator and the model, alone and inside Spark ML's meta stages,
  * in the files Python reads and writes. Training end to end is in
  * `tests/integration/test_scala_estimator.py`.
  */
class PersistenceSuite extends AnyFunSuite with BeforeAndAfterAll {

  // Readers and writers use the active session.
  private lazy val spark = LocalSpark.session

  override def beforeAll(): Unit = spark

  private def network: Network = Sequential(Input(Seq(5)), Dense(8, activation = "tanh"), Dense(3))

  private def estimator: TorchEstimator = new TorchEstimator().setNetwork(network).setOptimizer("sgd")
    .setOptimizerParams("""{"lr": 0.5, "momentum": 0.9}""").setEpochs(3).setNumWorkers(2).setBatchSize(16)
    .setSeed(3L).setBackend("torch").setFeaturesCol("x").setPythonExec("/opt/python")

  private def model(kind: String = "spec",
                    history: String = """{"backend":"torch","epochs":[{"epoch":1,"loss":0.5}],"num_workers":2,"workers":[]}"""
                   ): TorchModel = {
    val arch = if (kind == "spec") network.toJson.getBytes(UTF_8) else Array[Byte](1, 2, 3)
    val m = new TorchModel("TorchModel_test", kind, arch, Array[Byte](9, 8, 7), history)
    m.set(m.task, "multiclass").set(m.outputShape, Array(3)).set(m.featureShape, Array(5))
      .set(m.epochs, 7).set(m.optimizerParams, """{"lr":0.01}""").set(m.numWorkers, 2)
  }

  private def tempDir(): Path = {
    val dir = Files.createTempDirectory("sparkdl-persistence")
    dir.toFile.deleteOnExit()
    dir
  }

  /** The files saved in `path`, without the local file system's `.crc` checksums. */
  private def files(path: Path): Set[String] = path.toFile.list().toSet.filterNot(_.startsWith("."))

  private def metadata(path: Path): JObj = {
    val part = path.resolve("metadata").toFile.listFiles().filter(_.getName.startsWith("part-")).head
    JsonParser.parse(new String(Files.readAllBytes(part.toPath), UTF_8).trim).asInstanceOf[JObj]
  }

  private def values(p: org.apache.spark.ml.param.Params): Map[String, Any] =
    p.extractParamMap().toSeq.map(pair => pair.param.name -> (pair.value match {
      case a: Array[_] => a.toSeq
      case v => v
    })).toMap

  test("an estimator saves its params and network, and loads as it was") {
    val path = tempDir().resolve("est")
    val est = estimator
    est.write.save(path.toString)
    assert(files(path) == Set("metadata", "network.json"))
    val meta = metadata(path)
    assert(meta.get("class").contains(JStr("sparkdl.ml.TorchEstimator")))
    assert(meta.get("architectureKind").contains(JStr("spec")))
    val saved = meta.get("paramMap").get.asInstanceOf[JObj]
    assert(saved.get("optimizerParams").contains(JsonParser.parse("""{"lr":0.5,"momentum":0.9}""")),
      "a JSON object param is saved as the object, as Python saves a dict")
    val loaded = TorchEstimator.load(path.toString)
    assert(loaded.uid == est.uid)
    assert(loaded.getNetwork.contains(network))
    assert(values(loaded) == values(est))
    assert(loaded.getPythonExec.contains("/opt/python") && loaded.getOptimizerParams == """{"lr":0.5,"momentum":0.9}""")
    assert(!loaded.isSet(loaded.loss) && loaded.getLoss == "cross_entropy", "defaults stay defaults")
  }

  test("an estimator without a network saves and loads without one") {
    val path = tempDir().resolve("bare")
    new TorchEstimator().setEpochs(2).write.save(path.toString)
    assert(files(path) == Set("metadata"))
    val loaded = TorchEstimator.load(path.toString)
    assert(loaded.getNetwork.isEmpty && loaded.getEpochs == 2 && loaded.getPythonExec.isEmpty)
  }

  test("loading something else as an estimator names the class found") {
    val path = tempDir().resolve("model")
    model().write.save(path.toString)
    val e = intercept[IllegalArgumentException](TorchEstimator.load(path.toString))
    assert(e.getMessage.contains("Expected class name sparkdl.ml.TorchEstimator or " +
      "sparkdl.ml.estimator.TorchEstimator but found class name sparkdl.ml.model.TorchModel"))
  }

  test("an unfitted Pipeline holding the estimator saves and loads") {
    val path = tempDir().resolve("pipeline")
    val est = estimator
    new Pipeline().setStages(Array(est)).write.save(path.toString)
    val stage = Pipeline.load(path.toString).getStages.head.asInstanceOf[TorchEstimator]
    assert(stage.uid == est.uid && stage.getNetwork.contains(network) && values(stage) == values(est))
  }

  private def grid(est: TorchEstimator): Array[ParamMap] = new ParamGridBuilder()
    .addGrid(est.optimizerParams, Seq("""{"lr":1e-06}""", """{"lr":0.5}"""))
    .addGrid(est.epochs, Array(1, 3))
    .addGrid(est.batchSize, Array(8))
    .addGrid(est.numWorkers, Array(1, 2))
    .build()

  private def named(maps: Array[ParamMap]): Seq[Set[(String, Any)]] =
    maps.toSeq.map(_.toSeq.map(p => p.param.name -> p.value).toSet)

  test("CrossValidator and TrainValidationSplit over a grid of training params save and load") {
    val est = estimator
    val maps = grid(est)
    assert(maps.length == 8)
    val eval = new MulticlassClassificationEvaluator().setMetricName("accuracy")
    val cvPath = tempDir().resolve("cv").toString
    new CrossValidator().setEstimator(est).setEvaluator(eval).setEstimatorParamMaps(maps).setNumFolds(2)
      .setParallelism(2).write.save(cvPath)
    val cv = CrossValidator.load(cvPath)
    val cvEst = cv.getEstimator.asInstanceOf[TorchEstimator]
    assert(cvEst.getNetwork.contains(network) && values(cvEst) == values(est))
    assert(named(cv.getEstimatorParamMaps) == named(maps))
    assert(cv.getEstimatorParamMaps.head.toSeq.forall(_.param.parent == cvEst.uid))
    assert(cv.getNumFolds == 2 && cv.getParallelism == 2)

    val tvsPath = tempDir().resolve("tvs").toString
    new TrainValidationSplit().setEstimator(est).setEvaluator(eval).setEstimatorParamMaps(maps).write.save(tvsPath)
    val tvs = TrainValidationSplit.load(tvsPath)
    assert(named(tvs.getEstimatorParamMaps) == named(maps))
    assert(tvs.getEstimator.asInstanceOf[TorchEstimator].getNetwork.contains(network))
  }

  test("a spec model is saved as network.json, a pickled one as architecture.pkl") {
    val dir = tempDir()
    val spec = model()
    spec.write.save(dir.resolve("spec").toString)
    assert(files(dir.resolve("spec")) == Set("metadata", "network.json", "weights.safetensors"))
    assert(Files.readString(dir.resolve("spec/network.json")) == network.toJson)
    model("module").write.save(dir.resolve("module").toString)
    assert(files(dir.resolve("module")) == Set("metadata", "architecture.pkl", "weights.safetensors"))
    val back = TorchModel.load(dir.resolve("module").toString)
    assert(back.architectureKind == "module" && back.architecture.toSeq == Seq[Byte](1, 2, 3))
  }

  test("a model keeps its training params and metadata Python reads") {
    val path = tempDir().resolve("m")
    val m = model()
    m.write.save(path.toString)
    val meta = metadata(path)
    assert(meta.get("class").contains(JStr(TorchModel.PythonClass)))
    val saved = meta.get("paramMap").get.asInstanceOf[JObj]
    assert(saved.get("optimizerParams").contains(JsonParser.parse("""{"lr":0.01}""")))
    assert(saved.get("epochs").contains(JInt(7)))
    val defaults = meta.get("defaultParamMap").get.asInstanceOf[JObj]
    assert(defaults.get("backendOptions").contains(JObj()) && !defaults.contains("pythonExec"))
    val loaded = TorchModel.load(path.toString)
    assert(values(loaded) == values(m))
    assert(loaded.getEpochs == 7 && loaded.getOptimizerParams == """{"lr":0.01}""" && loaded.getNumWorkers == 2)
    assert(loaded.networkJson.contains(network.toJson) && loaded.weightsBytes.toSeq == Seq[Byte](9, 8, 7))
    assert(loaded.historyJson == m.historyJson)
    val copied = loaded.copy(ParamMap(loaded.epochs -> 9))
    assert(copied.getEpochs == 9 && copied.getOptimizerParams == """{"lr":0.01}""")
  }

  test("a model saved before files were named by kind, with Python-only params, loads") {
    val path = tempDir().resolve("old")
    Files.createDirectories(path.resolve("metadata"))
    // As Python wrote it: every architecture in architecture.pkl, params Scala does not have,
    // a dict-valued optimizerParams, a NaN metric.
    Files.writeString(path.resolve("metadata/part-00000"),
      """{"class":"sparkdl.ml.model.TorchModel","timestamp":1,"sparkVersion":"4.3.0","uid":"TorchModel_py",""" +
        """"paramMap":{"featureShape":[5],"task":"multiclass","outputShape":[3],"optimizerParams":{"lr":0.5},""" +
        """"epochs":3,"loss":"custom","checkpointDir":"/tmp/ck"},"defaultParamMap":{"featuresCol":"features",""" +
        """"modelVersionCol":"","backend":"torch","timeout":600.0,"seed":42,"shuffle":true},""" +
        """"architectureKind":"spec","history":{"backend":"torch","epochs":[{"epoch":1,"loss":NaN}],""" +
        """"num_workers":1,"workers":[]}}""" + "\n")
    Files.write(path.resolve("architecture.pkl"), network.toJson.getBytes(UTF_8))
    Files.write(path.resolve("weights.safetensors"), Array[Byte](4, 2))
    val loaded = TorchModel.load(path.toString)
    assert(loaded.uid == "TorchModel_py" && loaded.networkJson.contains(network.toJson))
    assert(loaded.getOptimizerParams == """{"lr":0.5}""" && loaded.getEpochs == 3 && loaded.getLoss == "custom")
    assert(loaded.getBackend == "torch" && !loaded.isSet(loaded.backend) && loaded.getTimeout == 600.0)
    assert(loaded.historyJson == """{"backend":"torch","epochs":[{"epoch":1,"loss":"NaN"}],"num_workers":1,""" +
      """"workers":[]}""", "an old save's bare NaN is read, and kept as Python's to_dict() string")
  }

  test("a model whose history has non-finite metrics saves strict JSON that Spark's PipelineModel.load reads") {
    import spark.implicits._
    // What Spark's own stage reader (json4s) does with a bare NaN: the bug this guards against.
    intercept[Exception](org.json4s.jackson.JsonMethods.parse("""{"loss":NaN}"""))
    val df = Seq((Array(1f, 2f, 3f, 4f, 5f), 0L)).toDF("features", "label")
    val path = tempDir().resolve("diverged")
    // As the Scala fit got it from rank 0 (Python's json.dumps of a diverged run)
    val m = model(history = """{"backend":"torch","epochs":[{"epoch":1,"train_loss":NaN,"val_loss":Infinity},""" +
      """{"epoch":2,"train_loss":-Infinity,"val_loss":0.25,"rows":[NaN,3]}],"num_workers":2,""" +
      """"workers":[{"rank":0,"seconds":{"train":1.5}}]}""")
    new Pipeline().setStages(Array(m)).fit(df).write.save(path.toString)
    val stageDir = path.resolve("stages").toFile.listFiles().filter(_.isDirectory).head.toPath
    val text = Files.readString(stageDir.resolve("metadata/part-00000"))
    org.json4s.jackson.JsonMethods.parse(text)   // strict JSON
    // Python's TrainingHistory.to_dict(): non-finite floats in `epochs` as strings
    val expected = JsonParser.parse("""{"backend":"torch","epochs":[{"epoch":1,"train_loss":"NaN",""" +
      """"val_loss":"Infinity"},{"epoch":2,"train_loss":"-Infinity","val_loss":0.25,"rows":["NaN",3]}],""" +
      """"num_workers":2,"workers":[{"rank":0,"seconds":{"train":1.5}}]}""")
    assert(metadata(stageDir).get("history").contains(expected))
    val stage = PipelineModel.load(path.toString).stages.head.asInstanceOf[TorchModel]
    assert(stage.uid == m.uid && values(stage) == values(m))
    assert(JsonParser.parse(stage.historyJson) == expected)
    assert(TorchModel.load(stageDir.toString).historyJson == stage.historyJson)
  }

  test("the history the Scala fit keeps has rank 0's non-finite epoch metrics as strings") {
    val epochs = JsonParser.parse("""[{"epoch":1,"train_loss":NaN,"train_accuracy":0.5},{"epoch":2,"train_loss":-Infinity}]""")
    assert(TorchModel.pyJson(TorchModel.strictEpochs(epochs)) ==
      """[{"epoch":1,"train_loss":"NaN","train_accuracy":0.5},{"epoch":2,"train_loss":"-Infinity"}]""")
    val history = JsonParser.parse("""{"epochs":[{"loss":Infinity}],"workers":[{"x":NaN}]}""")
    assert(TorchModel.pyJson(TorchModel.strictHistory(history)) == """{"epochs":[{"loss":"Infinity"}],"workers":[{"x":NaN}]}""",
      "only the epochs list is encoded, as Python's to_dict does")
    assert(TorchModel.strictHistory(TorchModel.strictHistory(history)) == TorchModel.strictHistory(history))
  }

  private val PythonUid = "TorchEstimator_4b7c1e2f9a3d"

  /** An estimator as Python's `TorchEstimatorWriter` saves it: pyspark's `DefaultParamsWriter`
    * metadata (`json.dumps`, one line, in `metadata/part-00000` beside `_SUCCESS`) with
    * `architectureKind` and `customCode`, dict params as objects, Python-only params, and the
    * architecture's file.
    */
  private def writePythonEstimator(dir: Path, kind: String = "spec", customCode: Seq[String] = Nil): Unit = {
    Files.createDirectories(dir.resolve("metadata"))
    val kindJson = CanonicalJson.write(Option(kind).map(JStr(_)).getOrElse(JNull))
    val customJson = customCode.map(c => CanonicalJson.write(JStr(c))).mkString("[", ", ", "]")
    val loss = if (customCode.contains("loss")) "custom" else "nll"
    Files.writeString(dir.resolve("metadata/part-00000"),
      s"""{"class": "sparkdl.ml.estimator.TorchEstimator", "timestamp": 1764600000000, "sparkVersion": "4.1.0", """ +
        s""""uid": "$PythonUid", "paramMap": {"loss": "$loss", "optimizer": "sgd", "optimizerParams": {"lr": 0.5, """ +
        """"momentum": 0.9}, "epochs": 3, "numWorkers": 2, "batchSize": 16, "featuresCol": "x", "featureShape": [5], """ +
        """"backend": "horovod", "backendOptions": {"compression": "fp16"}, "checkpointDir": "/tmp/ck", """ +
        """"checkpointInterval": 2, "logDir": "/tmp/logs", "modelVersionCol": "version"}, "defaultParamMap": """ +
        """{"featuresCol": "features", "predictionCol": "prediction", "probabilityCol": "probability", """ +
        """"rawPredictionCol": "rawPrediction", "batchSize": 64, "modelVersionCol": "", "labelCol": "label", """ +
        """"seed": 42, "loss": "cross_entropy", "optimizer": "adam", "optimizerParams": {"lr": 0.001}, "epochs": 5, """ +
        """"numWorkers": 1, "validationFraction": 0.0, "backend": "torch", "backendOptions": {}, """ +
        """"backwardPassesPerStep": 1, "shuffle": true, "timeout": 600.0, "checkpointDir": "", """ +
        """"checkpointInterval": 1, "logDir": ""}, """ +
        s""""architectureKind": $kindJson, "customCode": $customJson}""" +
        "\n")
    Files.write(dir.resolve("metadata/_SUCCESS"), Array.emptyByteArray)
    kind match {
      case "spec" => Files.writeString(dir.resolve("network.json"), network.toJson)
      case null => ()
      case _ =>
        Files.write(dir.resolve("architecture.pkl"), Array[Byte](-128, 4, 46))
        if (kind == "module") Files.write(dir.resolve("initial_weights.safetensors"), Array[Byte](1))
    }
    customCode.foreach(c => Files.write(dir.resolve(s"$c.pkl"), Array[Byte](-128, 4, 46)))
  }

  private def assertPythonEstimator(est: TorchEstimator): Unit = {
    assert(est.uid == PythonUid && est.getNetwork.contains(network))
    assert(est.getLoss == "nll" && est.getOptimizer == "sgd" && est.getOptimizerParams == """{"lr":0.5,"momentum":0.9}""")
    assert(est.getEpochs == 3 && est.getNumWorkers == 2 && est.getBatchSize == 16 && est.getFeatureColumns == Seq("x"))
    assert(est.getFeatureShape.map(_.toSeq).contains(Seq(5)) && est.getSeed == 42L && !est.isSet(est.seed))
    assert(est.getBackend == "horovod" && est.getBackendOptions == """{"compression":"fp16"}""")
    assert(est.getTimeout == 600.0 && est.getShuffle && est.getPythonExec.isEmpty)
  }

  test("an estimator saved by Python with a sparkdl.nn network loads, alone and in Pipeline and CrossValidator") {
    val dir = tempDir()
    writePythonEstimator(dir.resolve("py"))
    assertPythonEstimator(TorchEstimator.load(dir.resolve("py").toString))
    // the class name Python writes resolves on the JVM, as Spark's meta-stage readers need
    assertPythonEstimator(_root_.sparkdl.ml.estimator.TorchEstimator.load(dir.resolve("py").toString))

    // A Pipeline and a CrossValidator whose estimator stage was saved by Python.
    def replaceWithPython(stage: Path): Unit = {
      scala.reflect.io.Directory(stage.toFile).deleteRecursively()
      writePythonEstimator(stage)
    }
    val scalaTwin = new TorchEstimator(PythonUid).setNetwork(network)
    val pipelinePath = dir.resolve("pipeline")
    new Pipeline().setStages(Array(scalaTwin)).write.save(pipelinePath.toString)
    replaceWithPython(pipelinePath.resolve("stages").toFile.listFiles().filter(_.isDirectory).head.toPath)
    assertPythonEstimator(Pipeline.load(pipelinePath.toString).getStages.head.asInstanceOf[TorchEstimator])

    val cvPath = dir.resolve("cv")
    new CrossValidator().setEstimator(scalaTwin).setEvaluator(new MulticlassClassificationEvaluator())
      .setEstimatorParamMaps(grid(scalaTwin)).write.save(cvPath.toString)
    replaceWithPython(cvPath.resolve("estimator"))
    val cv = CrossValidator.load(cvPath.toString)
    assertPythonEstimator(cv.getEstimator.asInstanceOf[TorchEstimator])
    assert(cv.getEstimatorParamMaps.length == 8 && cv.getEstimatorParamMaps.head.toSeq.forall(_.param.parent == PythonUid))
  }

  test("a Python estimator whose network or loss is pickled Python code fails to load, saying why") {
    val dir = tempDir()
    writePythonEstimator(dir.resolve("module"), kind = "module", customCode = Seq("loss", "optimizer"))
    val module = intercept[IllegalArgumentException](TorchEstimator.load(dir.resolve("module").toString))
    assert(module.getMessage.contains("holds a Python TorchEstimator with architecture kind \"module\" (a cloudpickled " +
      "torch module in architecture.pkl) and custom code for loss and optimizer (cloudpickled Python callables in " +
      "loss.pkl, optimizer.pkl), which cannot be loaded in Scala: only an estimator whose network is a sparkdl.nn " +
      "network (architectureKind \"spec\", saved as network.json)"))
    writePythonEstimator(dir.resolve("factory"), kind = "factory")
    val factory = intercept[IllegalArgumentException](
      _root_.sparkdl.ml.estimator.TorchEstimator.load(dir.resolve("factory").toString))
    assert(factory.getMessage.contains("architecture kind \"factory\"") && !factory.getMessage.contains("custom code"))
    writePythonEstimator(dir.resolve("custom"), customCode = Seq("optimizer"))
    val custom = intercept[IllegalArgumentException](TorchEstimator.load(dir.resolve("custom").toString))
    assert(custom.getMessage.contains("with custom code for optimizer (cloudpickled Python callables in optimizer.pkl)"))
    assert(custom.getMessage.contains("only an estimator whose network is a sparkdl.nn network"))
    // without a network, Python's estimator loads with none
    writePythonEstimator(dir.resolve("none"), kind = null)
    assert(TorchEstimator.load(dir.resolve("none").toString).getNetwork.isEmpty)
  }

  test("a PipelineModel holding a model saves and loads it through the class name Python gives it") {
    import spark.implicits._
    val df = Seq((Array(1f, 2f, 3f, 4f, 5f), 0L)).toDF("features", "label")
    val path = tempDir().resolve("pm").toString
    val m = model()
    new Pipeline().setStages(Array(m)).fit(df).write.save(path)
    val stage = PipelineModel.load(path).stages.head.asInstanceOf[TorchModel]
    assert(stage.uid == m.uid && values(stage) == values(m))
  }

  test("the Scala estimator refuses Python's custom loss and optimizer by name") {
    import spark.implicits._
    val df = Seq((Array(1f, 2f, 3f, 4f, 5f), 0L)).toDF("x", "label")
    val custom = estimator
    val loss = intercept[IllegalArgumentException](custom.set(custom.loss, "custom").transformSchema(df.schema))
    assert(loss.getMessage.startsWith("loss='custom' needs a Python callable; the Scala TorchEstimator trains with " +
      "one of [bce_with_logits, cross_entropy, mse, nll]. Received: loss=custom"))
    val other = estimator
    val opt = intercept[IllegalArgumentException](other.set(other.optimizer, "custom").transformSchema(df.schema))
    assert(opt.getMessage.contains("optimizer='custom' needs a Python callable"))
    val bad = intercept[IllegalArgumentException](estimator.setOptimizerParams("[0.1]"))
    assert(bad.getMessage == "optimizerParams must be a JSON object. Received: optimizerParams=[0.1]")
  }

  test("a JSON object param encodes as the object and decodes an object or a string holding one") {
    val est = new TorchEstimator()
    val p = est.optimizerParams
    assert(p.jsonEncode("""{"momentum": 0.9, "lr": 0.1}""") == """{"lr":0.1,"momentum":0.9}""")
    assert(p.jsonDecode("""{"lr": 0.1}""") == """{"lr":0.1}""")
    assert(p.jsonDecode("\"{\\\"lr\\\": 0.1}\"") == """{"lr":0.1}""")
    assert(!p.isValid("not json") && !p.isValid("[1]") && p.isValid("{}"))
  }

  /** Saves through [[FailingFileSystem]] (`failing:` paths, the local disk underneath). */
  private def failing(path: Path): String = {
    val conf = spark.sparkContext.hadoopConfiguration
    conf.set("fs.failing.impl", classOf[FailingFileSystem].getName)
    conf.setBoolean("fs.failing.impl.disable.cache", true)
    s"failing://${path.toAbsolutePath}"
  }

  private def failingOn[T](name: String)(body: => T): T = {
    FailingFileSystem.failOn = Some(name)
    try body finally FailingFileSystem.failOn = None
  }

  test("a model save that fails midway keeps the previous model and leaves nothing half-written") {
    val dir = tempDir()
    val path = dir.resolve("m")
    model().write.save(failing(path))
    val next = new TorchModel("TorchModel_next", "spec", network.toJson.getBytes(UTF_8), Array[Byte](1, 1), "{}")
    next.set(next.task, "multiclass").set(next.outputShape, Array(3))
    // The disk fills up while the weights are written (a kill there leaves the same).
    val e = intercept[IOException](failingOn(WeightsFileName)(next.write.overwrite().save(failing(path))))
    assert(e.getMessage.contains("injected"))
    assert(files(dir) == Set("m"), "no temporary or half-written directory beside the model")
    val kept = TorchModel.load(path.toString)
    assert(kept.uid == "TorchModel_test" && kept.weightsBytes.toSeq == Seq[Byte](9, 8, 7))
    // A first save that fails leaves nothing at all.
    intercept[IOException](failingOn(WeightsFileName)(next.write.save(failing(dir.resolve("fresh")))))
    assert(files(dir) == Set("m"))
    // Overwriting for real replaces it whole, and leaves no sibling either.
    next.write.overwrite().save(failing(path))
    assert(TorchModel.load(path.toString).weightsBytes.toSeq == Seq[Byte](1, 1) && files(dir) == Set("m"))
    assert(files(path) == Set("metadata", "network.json", "weights.safetensors"))
  }

  test("an estimator save that fails midway keeps the previous estimator") {
    val dir = tempDir()
    val path = dir.resolve("est")
    estimator.write.save(failing(path))
    val other = estimator.setEpochs(11).setNetwork(Sequential(Input(Seq(5)), Dense(2)))
    intercept[IOException](failingOn(SavedFiles.NetworkFile)(other.write.overwrite().save(failing(path))))
    assert(files(dir) == Set("est"))
    val kept = TorchEstimator.load(path.toString)
    assert(kept.getEpochs == 3 && kept.getNetwork.contains(network))
  }

  test("saving over an existing path without overwrite() fails as Spark's writers do, and keeps it") {
    val path = tempDir().resolve("m")
    model().write.save(path.toString)
    val e = intercept[IOException](model("module").write.save(path.toString))
    assert(e.getMessage.startsWith(s"Path $path already exists. To overwrite it, please use write.overwrite()"))
    assert(TorchModel.load(path.toString).architectureKind == "spec")
  }

  test("maxRestarts and driverStateInterval, as the Python estimator saves them, load; Scala saves them too") {
    val dir = tempDir()
    // What Python's TorchEstimatorWriter writes since restarts (issue 14): both params set and defaulted.
    Files.createDirectories(dir.resolve("py/metadata"))
    Files.writeString(dir.resolve("py/metadata/part-00000"),
      s"""{"class": "sparkdl.ml.estimator.TorchEstimator", "timestamp": 1764600000000, "sparkVersion": "4.3.0", """ +
        s""""uid": "$PythonUid", "paramMap": {"optimizer": "sgd", "epochs": 3, "maxRestarts": 5, """ +
        """"driverStateInterval": 2, "checkpointDir": "/tmp/ck"}, "defaultParamMap": {"epochs": 5, """ +
        """"maxRestarts": 3, "driverStateInterval": 1, "timeout": 600.0, "checkpointInterval": 1, "logDir": ""}, """ +
        """"architectureKind": "spec", "customCode": []}""" + "\n")
    Files.write(dir.resolve("py/metadata/_SUCCESS"), Array.emptyByteArray)
    Files.writeString(dir.resolve("py/network.json"), network.toJson)
    val loaded = TorchEstimator.load(dir.resolve("py").toString)
    assert(loaded.getMaxRestarts == 5 && loaded.getDriverStateInterval == 2 && loaded.isSet(loaded.maxRestarts))
    assert(loaded.getEpochs == 3 && loaded.getNetwork.contains(network))

    val path = dir.resolve("scala")
    estimator.setMaxRestarts(0).setDriverStateInterval(4).write.save(path.toString)
    val meta = metadata(path)
    val saved = meta.get("paramMap").get.asInstanceOf[JObj]
    assert(saved.get("maxRestarts").contains(JInt(0)) && saved.get("driverStateInterval").contains(JInt(4)))
    val defaults = meta.get("defaultParamMap").get.asInstanceOf[JObj]
    assert(defaults.get("maxRestarts").contains(JInt(3)) && defaults.get("driverStateInterval").contains(JInt(1)))
    val again = TorchEstimator.load(path.toString)
    assert(again.getMaxRestarts == 0 && again.getDriverStateInterval == 4)
    // an estimator saved before restarts existed gets the defaults
    val old = TorchEstimator.load({ writePythonEstimator(dir.resolve("old")); dir.resolve("old").toString })
    assert(old.getMaxRestarts == 3 && !old.isSet(old.maxRestarts) && old.getDriverStateInterval == 1)
  }

  test("a model keeps the restart params and a history with attempts, as Python writes them") {
    val history = """{"backend":"torch","epochs":[{"epoch":1,"loss":0.5}],"num_workers":2,"workers":[],""" +
      """"attempts":[{"attempt":1,"started":"2025-01-31T12:00:00+00:00","resumed_from_epoch":0,""" +
      """"ended":"2025-01-31T12:00:09+00:00","status":"failed","cause":"ExecutorLostFailure (executor 1 exited)",""" +
      """"failed_rank":1,"failed_executor":"1"},{"attempt":2,"started":"2025-01-31T12:00:15+00:00",""" +
      """"resumed_from_epoch":0,"ended":"2025-01-31T12:00:30+00:00","status":"finished"}]}"""
    val m = model(history = history)
    m.set(m.maxRestarts, 2)
    val path = tempDir().resolve("m")
    m.write.save(path.toString)
    val meta = metadata(path)
    assert(meta.get("paramMap").get.asInstanceOf[JObj].get("maxRestarts").contains(JInt(2)))
    assert(meta.get("history").get.asInstanceOf[JObj].get("attempts").exists(_.asInstanceOf[JArr].items.length == 2))
    val loaded = TorchModel.load(path.toString)
    assert(loaded.getMaxRestarts == 2 && loaded.historyJson == history)
  }

  private val WeightsFileName = SavedFiles.WeightsFile
}

/** The local file system under the `failing:` scheme, failing to create the file named
  * [[FailingFileSystem.failOn]]: a save that breaks midway (a full disk, a killed writer).
  */
class FailingFileSystem extends RawLocalFileSystem {
  // A def, not a val: the super constructor asks for it before fields are set.
  override def getUri: URI = URI.create("failing:///")

  override def create(f: HPath, permission: FsPermission, overwrite: Boolean, bufferSize: Int,
                      replication: Short, blockSize: Long, progress: Progressable): FSDataOutputStream = {
    if (FailingFileSystem.failOn.contains(f.getName)) throw new IOException(s"No space left writing $f (injected)")
    super.create(f, permission, overwrite, bufferSize, replication, blockSize, progress)
  }

  override def create(f: HPath, overwrite: Boolean, bufferSize: Int, replication: Short, blockSize: Long,
                      progress: Progressable): FSDataOutputStream = {
    if (FailingFileSystem.failOn.contains(f.getName)) throw new IOException(s"No space left writing $f (injected)")
    super.create(f, overwrite, bufferSize, replication, blockSize, progress)
  }
}

object FailingFileSystem {
  @volatile var failOn: Option[String] = None
}
