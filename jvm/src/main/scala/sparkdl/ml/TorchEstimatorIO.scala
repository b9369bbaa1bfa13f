package sparkdl.ml

import java.nio.charset.StandardCharsets.UTF_8

import org.apache.spark.ml.sparkdl.ParamsMetadata
import org.apache.spark.ml.util.MLReader

import sparkdl.json.{CanonicalJson, JsonParser}
import sparkdl.json.Json._
import sparkdl.nn.Network

/** Saves a [[TorchEstimator]] as Python saves its `TorchEstimator`: Spark ML metadata
  * (`DefaultParamsWriter`: class, uid, every param) with `architectureKind` ("spec", or null
  * without a network), and the network's JSON spec in `network.json`. Atomic
  * ([[AtomicMLWriter]]), the network before the metadata.
  */
private[ml] class TorchEstimatorWriter(estimator: TorchEstimator) extends AtomicMLWriter {
  override protected def saveImpl(path: String): Unit = {
    val kind = if (estimator.getNetwork.isDefined) JStr("spec") else JNull
    estimator.getNetwork.foreach { net =>
      SavedFiles.write(sparkSession, s"$path/${SavedFiles.NetworkFile}", net.toJson.getBytes(UTF_8))
    }
    ParamsMetadata.save(estimator, path, sparkSession,
      CanonicalJson.write(JObj("architectureKind" -> kind, "customCode" -> JArr(Vector.empty))))
  }
}

/** Reads what [[TorchEstimatorWriter]] wrote, and what Python's `TorchEstimatorWriter`
  * writes (class `sparkdl.ml.estimator.TorchEstimator`) when the network is a `sparkdl.nn`
  * network (`network.json`) and the loss and optimizer are named. Python-only params
  * (`checkpointDir`, `checkpointInterval`, `logDir`, `modelVersionCol`) are skipped, as
  * [[TorchModel]]'s reader skips them.
  *
  * @throws IllegalArgumentException for an estimator whose network is pickled Python code
  *                                  (architecture kind "module" or "factory") or that has
  *                                  custom code (a Python loss or optimizer callable)
  */
private[ml] class TorchEstimatorReader extends MLReader[TorchEstimator] {
  override def load(path: String): TorchEstimator = {
    val (estimator, metadataJson) = ParamsMetadata.load(path, sparkSession,
      Seq(classOf[TorchEstimator].getName, TorchEstimator.PythonClass), uid => new TorchEstimator(uid))
    val metadata = JsonParser.parse(metadataJson).asInstanceOf[JObj]
    val kind = metadata.get("architectureKind").filter(_ != JNull)
    val custom = metadata.get("customCode") match {
      case Some(JArr(items)) => items.map { case JStr(s) => s; case other => CanonicalJson.write(other) }
      case _ => Vector.empty
    }
    val pythonOnly = kind.filter(_ != JStr("spec")).map {
      case JStr(k @ ("module" | "factory")) =>
        s"architecture kind ${CanonicalJson.write(JStr(k))} (a cloudpickled torch ${if (k == "module") "module" else "model factory"} in " +
          s"${SavedFiles.ArchitectureFile})"
      case other => s"architecture kind ${CanonicalJson.write(other)}"
    }.toSeq ++ (if (custom.isEmpty) Nil else Seq(s"custom code for ${custom.mkString(" and ")} (cloudpickled " +
      s"Python callables in ${custom.map(c => s"$c.pkl").mkString(", ")})"))
    if (pythonOnly.nonEmpty)
      throw new IllegalArgumentException(s"$path holds a Python TorchEstimator with ${pythonOnly.mkString(" and ")}, " +
        "which cannot be loaded in Scala: only an estimator whose network is a sparkdl.nn network (architectureKind " +
        "\"spec\", saved as network.json) and whose loss and optimizer are named loads in Scala. Load it with Python's " +
        "sparkdl.TorchEstimator.load, or save it from Python with a sparkdl.nn network and named loss and optimizer.")
    if (kind.contains(JStr("spec"))) {
      val spec = new String(SavedFiles.read(sparkSession, s"$path/${SavedFiles.NetworkFile}"), UTF_8)
      estimator.setNetwork(Network.fromJson(spec))
    } else estimator
  }
}
