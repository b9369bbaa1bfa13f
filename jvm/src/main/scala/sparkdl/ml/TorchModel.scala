package sparkdl.ml

import java.nio.charset.StandardCharsets.UTF_8

import org.apache.arrow.memory.RootAllocator
import org.apache.spark.{SparkEnv, TaskContext}
import org.apache.spark.broadcast.Broadcast
import org.apache.spark.ml.Model
import org.apache.spark.ml.linalg.{SQLDataTypes, Vectors}
import org.apache.spark.ml.param._
import org.apache.spark.ml.sparkdl.ParamsMetadata
import org.apache.spark.ml.util._
import org.apache.spark.sql.{DataFrame, Dataset, Row}
import org.apache.spark.sql.types._

import sparkdl.json.{CanonicalJson, Json, JsonParser}
import sparkdl.json.Json._

/** A trained network that scores DataFrames; the Scala twin of Python's
  * `sparkdl.ml.model.TorchModel`, reading and writing the same saved format (Spark ML
  * metadata, the architecture in `network.json` for a spec or `architecture.pkl` for
  * pickled code, `weights.safetensors`; see [[SavedFiles]]), so either language loads the
  * other's models.
  *
  * It carries the params it was fitted with, as Spark ML models do
  * (`LogisticRegressionModel.getRegParam`): `getEpochs`, `getOptimizerParams`,
  * `getNumWorkers`, `extractParamMap()` show them, e.g. which setting won in a
  * `CrossValidatorModel`'s `bestModel`.
  *
  * `transform` streams each partition's feature columns to a warm `python -m sparkdl.worker`
  * of its executor's [[PythonWorkerPool]] as Arrow IPC and appends `prediction`, and for classifiers `rawPrediction` and
  * `probability` vectors, as Python's model does. Weights and architecture are opaque
  * bytes here: Python builds the network.
  *
  * {{{
  * model.write.overwrite().save("/tmp/m")
  * val same = sparkdl.ml.TorchModel.load("/tmp/m")   // or one saved from Python
  * same.transform(test).select("prediction")
  * }}}
  */
class TorchModel private[ml] (
    override val uid: String,
    val architectureKind: String,
    private[ml] val architecture: Array[Byte],
    private[ml] val weights: Array[Byte],
    /** Per-epoch metrics, backend and workers, as Python's `TrainingHistory.to_dict()` JSON:
      * a non-finite metric in `epochs` (a diverged run's loss) is the string `"NaN"`,
      * `"Infinity"` or `"-Infinity"` ([[TorchModel.strictHistory]]). */
    val historyJson: String)
    extends Model[TorchModel] with TorchTrainingParams with MLWritable {

  final val task = new Param[String](this, "task", "multiclass, binary or regression",
    ParamValidators.inArray(Array("multiclass", "binary", "regression")))
  final val outputShape = new IntArrayParam(this, "outputShape", "per-row shape of the network output")

  /** The Python the scoring workers run; `null`: spark.pyspark.python, else PYSPARK_PYTHON, else python3. */
  @transient var pythonExec: String = null
  def setPythonExec(value: String): this.type = { pythonExec = value; this }

  def getTask: String = $(task)
  def getOutputShape: Array[Int] = $(outputShape)
  /** The network's `sparkdl.network/v1` JSON, for a model trained from a spec. */
  def networkJson: Option[String] = if (architectureKind == "spec") Some(new String(architecture, UTF_8)) else None
  /** The weights, as safetensors bytes. */
  def weightsBytes: Array[Byte] = weights.clone()

  def setFeaturesCol(value: String): this.type = set(featuresCol, value)
  def setPredictionCol(value: String): this.type = set(predictionCol, value)
  def setProbabilityCol(value: String): this.type = set(probabilityCol, value)
  def setRawPredictionCol(value: String): this.type = set(rawPredictionCol, value)
  def setBatchSize(value: Int): this.type = set(batchSize, value)

  override def copy(extra: ParamMap): TorchModel = {
    val that = new TorchModel(uid, architectureKind, architecture, weights, historyJson)
    that.pythonExec = pythonExec
    copyValues(that, extra).setParent(parent)
  }

  override def transformSchema(schema: StructType): StructType = {
    Columns.require(schema, getFeatureColumns, "features")
    TorchModel.outputSchema(schema, this, getTask, getOutputShape.toSeq)
  }

  private def scalarPrediction: Boolean = getOutputShape.product == 1

  override def transform(dataset: Dataset[_]): DataFrame = {
    val df = dataset.toDF()
    val outSchema = transformSchema(df.schema, logging = true)
    val features = getFeatureColumns
    Columns.require(df.schema, features, "features")
    // The feature columns travel as they are and become float32 while written to Arrow (as
    // Columns.asFloat would cast them): no cast copy of each row's features to convert too.
    val featureAt = features.map(df.schema.fieldIndex)
    val spark = df.sparkSession
    val payload = spark.sparkContext.broadcast((architectureKind, architecture, weights))
    val request = JObj(
      "mode" -> JStr("score"),
      "architecture_kind" -> JStr(architectureKind),
      "feature_cols" -> JArr(features.map(JStr(_)).toVector),
      "feature_shape" -> getFeatureShape.map(s => JArr(s.map(d => JInt(d): Json).toVector)).getOrElse(JNull),
      "task_kind" -> JStr(getTask),
      "batch_size" -> JInt(getBatchSize),
      "prediction_col" -> JStr($(predictionCol)),
      "probability_col" -> JStr(getProbabilityCol),
      "raw_col" -> JStr(getRawPredictionCol),
      "scalar_prediction" -> JBool(scalarPrediction))
    val python = Option(pythonExec).getOrElse(PythonWorker.pythonExec(spark.sparkContext.getConf))
    val pool = PythonWorkerPool.Settings.of(spark)
    val schema = df.schema
    val outputs = outSchema.fields.drop(schema.length).toSeq
    val rows = df.rdd.mapPartitions { part =>
      TorchModel.scoreTask(python, pool, request, payload, schema, featureAt, outputs, part)
    }
    spark.createDataFrame(rows, outSchema)
  }

  override def write: MLWriter = new TorchModel.Writer(this)

  private[ml] def setSaved(param: Param[Any], value: Any, isDefault: Boolean): Unit =
    if (isDefault) setDefault(param, value) else set(param, value)
}

object TorchModel extends MLReadable[TorchModel] {
  /** Where a network's JSON spec is saved (architecture kind "spec"). */
  val NetworkFile: String = SavedFiles.NetworkFile
  /** Where pickled architecture code is saved (kinds "module", "factory"; any kind, before). */
  val ArchitectureFile: String = SavedFiles.ArchitectureFile
  val WeightsFile: String = SavedFiles.WeightsFile
  /** The class name Python's `DefaultParamsReader` resolves; both languages write it. */
  val PythonClass = "sparkdl.ml.model.TorchModel"
  private val ScoreRows = 1024

  override def read: MLReader[TorchModel] = new Reader
  override def load(path: String): TorchModel = super.load(path)

  private[ml] def outputSchema(schema: StructType, p: TorchScoringParams, task: String, out: Seq[Int]): StructType = {
    val scalar = out.product == 1
    val pred = if (task == "multiclass" || scalar) DoubleType else ArrayType(DoubleType)
    val fields = Seq(StructField(p.getOrDefault(p.predictionCol), pred)) ++
      (if (task != "regression" && p.getRawPredictionCol.nonEmpty)
        Seq(StructField(p.getRawPredictionCol, SQLDataTypes.VectorType)) else Nil) ++
      (if (task != "regression" && p.getProbabilityCol.nonEmpty)
        Seq(StructField(p.getProbabilityCol, SQLDataTypes.VectorType)) else Nil)
    val clash = fields.map(_.name).filter(schema.fieldNames.contains)
    if (clash.nonEmpty)
      throw new IllegalArgumentException(s"Output column(s) ${clash.mkString("[", ", ", "]")} already exist in the " +
        "DataFrame. Rename them or set predictionCol/probabilityCol/rawPredictionCol to new names.")
    StructType(schema.fields ++ fields)
  }

  private[ml] def scoreTask(python: String, pool: PythonWorkerPool.Settings, request: JObj,
                            payload: Broadcast[(String, Array[Byte], Array[Byte])],
                            schema: StructType, featureAt: Seq[Int], outputs: Seq[StructField],
                            rows: Iterator[Row]): Iterator[Row] = {
    if (!rows.hasNext) return Iterator.empty
    val ctx = TaskContext.get()
    val gpus = ctx.resources().get("gpu").map(_.addresses.toSeq).getOrElse(Nil)
    val facts = JObj("rank" -> JInt(ctx.partitionId()), "cpus" -> JInt(ctx.cpus()),
      "gpus" -> JArr(gpus.map(g => JStr(g): Json).toVector), "attempt" -> JInt(ctx.attemptNumber()),
      "executor_id" -> JStr(SparkEnv.get.executorId))
    val allocator = new RootAllocator(Long.MaxValue)
    ctx.addTaskCompletionListener[Unit] { _ =>
      try allocator.close() catch { case _: IllegalStateException => () }
    }
    // A task that stops reading early (limit, first) leaves its worker mid-request: the
    // pool then stops that worker instead of keeping it.
    val worker = PythonWorkerPool.forTask(ctx, python, s"scoring partition ${ctx.partitionId()}", pool)
    val (_, arch, weights) = payload.value
    worker.send(PythonWorker.Request, CanonicalJson.write(JObj(request.fields :+ ("task" -> facts))).getBytes(UTF_8))
    worker.send(PythonWorker.Blob, arch)
    worker.send(PythonWorker.Blob, weights)
    val scored = rows.grouped(ScoreRows).flatMap { batch =>
      worker.send(PythonWorker.Batch, ArrowRows.toIpc(schema, featureAt, batch.toSeq, allocator, asFloat = true))
      worker.flush()
      val (_, bytes) = worker.expect(PythonWorker.Result)
      val (names, out) = ArrowRows.fromIpc(bytes, allocator)
      val at = outputs.map(f => names.indexOf(f.name))
      batch.iterator.zip(out.iterator).map { case (row, o) =>
        Row.fromSeq(row.toSeq ++ outputs.zip(at).map { case (f, i) => convert(f.dataType, o(i)) })
      }
    }
    scored ++ new Iterator[Row] {
      private var finished = false
      override def hasNext: Boolean = {
        if (!finished) {
          finished = true
          worker.send(PythonWorker.End)
          worker.expect(PythonWorker.Done)
        }
        false
      }
      override def next(): Row = throw new NoSuchElementException
    }
  }

  private def convert(dataType: DataType, value: Any): Any = (dataType, value) match {
    case (_, null)                          => null
    case (DoubleType, d: java.lang.Double)  => d.doubleValue
    case (t, xs: scala.collection.immutable.ArraySeq.ofDouble) if t == SQLDataTypes.VectorType =>
      Vectors.dense(xs.unsafeArray)
    case (ArrayType(DoubleType, _), xs: Seq[_]) => xs.map(_.asInstanceOf[java.lang.Double].doubleValue)
    case (t, xs: Seq[_]) if t == SQLDataTypes.VectorType =>
      Vectors.dense(xs.map(_.asInstanceOf[java.lang.Double].doubleValue).toArray)
    case (t, v) => throw new IllegalStateException(s"Unexpected worker output $v for a $t column")
  }

  // -- persistence: the files Python's TorchModelWriter / TorchModelReader use ----------

  /** JSON text like Python's `json.dumps`: NaN and infinities written bare. Saved metadata
    * holds none in `epochs` ([[strictHistory]]); elsewhere, as in Python, they stay bare.
    */
  private[ml] def pyJson(value: Json): String = value match {
    case JFloat(d) if d.isNaN      => "NaN"
    case JFloat(d) if d.isInfinite => if (d > 0) "Infinity" else "-Infinity"
    case JArr(items)               => items.map(pyJson).mkString("[", ",", "]")
    case JObj(fields)              => fields.map { case (k, v) => CanonicalJson.write(JStr(k)) + ":" + pyJson(v) }
      .mkString("{", ",", "}")
    case other                     => CanonicalJson.write(other)
  }

  /** A history as Python's `TrainingHistory.to_dict()` gives it: each NaN or infinite float
    * in its `epochs` list becomes the string `"NaN"`, `"Infinity"` or `"-Infinity"` (as Spark
    * writes a non-finite double param), since Spark's JVM metadata reader refuses bare `NaN`;
    * Python's `TrainingHistory.from_dict` turns them back into floats. Other fields and
    * values are kept; applying it twice changes nothing.
    */
  private[ml] def strictHistory(history: Json): Json = history match {
    case JObj(fields) => JObj(fields.map {
      case ("epochs", epochs) => "epochs" -> strictEpochs(epochs)
      case other => other
    })
    case other => other
  }

  /** A history's `epochs` list (or any value in it) with each NaN or infinite float as a string. */
  private[ml] def strictEpochs(value: Json): Json = value match {
    case JFloat(d) if d.isNaN      => JStr("NaN")
    case JFloat(d) if d.isInfinite => JStr(if (d > 0) "Infinity" else "-Infinity")
    case JArr(items)               => JArr(items.map(strictEpochs))
    case JObj(fields)              => JObj(fields.map { case (k, v) => k -> strictEpochs(v) })
    case other                     => other
  }

  /** Spark ML metadata (`DefaultParamsWriter`'s, every param `jsonEncode`d) naming Python's
    * class, which both languages resolve, plus `architectureKind` and `history`, whose
    * epochs' non-finite metrics are written as strings ([[strictHistory]]), so Spark's own
    * reader (a `PipelineModel`'s or `CrossValidatorModel`'s stages) loads a diverged model.
    *
    * Atomic ([[AtomicMLWriter]]): the files go to a temporary sibling that replaces the path
    * only once complete, architecture and weights first and the metadata, which makes a
    * directory look like a model, last.
    */
  private class Writer(model: TorchModel) extends AtomicMLWriter {
    override protected def saveImpl(path: String): Unit = {
      val spark = sparkSession
      val extra = CanonicalJson.write(JObj("architectureKind" -> JStr(model.architectureKind)))
      val base = JsonParser.parse(ParamsMetadata.toJson(model, spark, extra)).asInstanceOf[JObj]
      val history = strictHistory(JsonParser.parse(if (model.historyJson.trim.isEmpty) "{}" else model.historyJson))
      val metadata = JObj(base.fields.map {
        case ("class", _) => "class" -> JStr(PythonClass)
        case other => other
      } :+ ("history" -> history))
      SavedFiles.write(spark, s"$path/${SavedFiles.architectureFile(model.architectureKind)}", model.architecture)
      SavedFiles.write(spark, s"$path/$WeightsFile", model.weights)
      SavedFiles.write(spark, s"$path/metadata/part-00000", (pyJson(metadata) + "\n").getBytes(UTF_8))
      SavedFiles.write(spark, s"$path/metadata/_SUCCESS", Array.emptyByteArray)
    }
  }

  /** Reads models saved by either language. Both now write the history's non-finite epoch
    * metrics as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`, but older saves (either
    * language) hold them as bare `NaN`/`Infinity`, which Spark's json4s reader refuses; so the
    * metadata is parsed here, accepting both, and `historyJson` gets the strings
    * ([[strictHistory]]). Each param is decoded with its own `jsonDecode`, as
    * `getAndSetParams` does. Params this class does not have (Python-only ones such as
    * `modelVersionCol` or `checkpointDir`) are skipped.
    */
  /** Python-only features this class cannot score with: refused on load, rather than
    * scoring `featuresCol` as one stacked tensor and a single output. */
  private def pythonOnly(path: String, metadata: JObj, kind: String): Unit = {
    val params = Seq("defaultParamMap", "paramMap").flatMap(s => metadata.get(s).toSeq).flatMap {
      case JObj(fields) => fields
      case _            => Nil
    }.toMap
    def set(name: String) = params.get(name).exists {
      case JArr(items) => items.nonEmpty
      case JObj(fields) => fields.nonEmpty
      case JStr(s)      => s.nonEmpty
      case _            => false
    }
    val found = Seq("inputCols", "labelCols", "padding").filter(set) ++
      (if (kind == "torchscript") Seq("a TorchScript architecture") else Nil) ++
      (metadata.get("customCode") match {
        case Some(JArr(items)) if items.nonEmpty => Seq("a scoreTransform (Python code)")
        case _                                   => Nil
      })
    if (found.nonEmpty) throw new IllegalArgumentException(
      s"The model at $path uses ${found.mkString(", ")}, which only Python's sparkdl.TorchModel " +
        "scores (several inputs, padded sequences, several outputs, image transforms); load " +
        "and score it from Python.")
  }

  private class Reader extends MLReader[TorchModel] {
    override def load(path: String): TorchModel = {
      val text = sparkSession.read.text(s"$path/metadata").first().getString(0)
      val metadata = JsonParser.parse(text) match {
        case o: JObj => o
        case _       => throw new IllegalArgumentException(s"$path/metadata is not a Spark ML metadata object")
      }
      def str(key: String) = metadata.get(key).collect { case JStr(s) => s }.getOrElse(
        throw new IllegalArgumentException(s"$path/metadata has no '$key'; is this a sparkdl TorchModel?"))
      val kind = str("architectureKind")
      pythonOnly(path, metadata, kind)
      val history = metadata.get("history").map(h => pyJson(strictHistory(h))).getOrElse("{}")
      val model = new TorchModel(str("uid"), kind, SavedFiles.readArchitecture(sparkSession, path, kind),
        SavedFiles.read(sparkSession, s"$path/$WeightsFile"), history)
      for (section <- Seq("defaultParamMap", "paramMap"); JObj(fields) <- metadata.get(section).toSeq;
           (name, value) <- fields if model.hasParam(name) && value != JNull) {
        val param = model.getParam(name).asInstanceOf[Param[Any]]
        val decoded = try param.jsonDecode(CanonicalJson.write(value)) catch {
          case scala.util.control.NonFatal(e) => throw new IllegalArgumentException(
            s"$path/metadata: cannot read param $name from its saved value ${CanonicalJson.write(value)}: ${e.getMessage}", e)
        }
        model.setSaved(param, decoded, isDefault = section == "defaultParamMap")
      }
      model
    }
  }
}
