package sparkdl.ml

import java.nio.charset.StandardCharsets.UTF_8

import org.apache.spark.ml.sparkdl.ParamsMetadata
import org.apache.spark.ml.util.{MLReader, MLWriter}

import sparkdl.json.{CanonicalJson, JsonParser}
import sparkdl.json.Json._
import sparkdl.nn.Network

/** Saves a [[TorchEstimator]] as Python saves its `TorchEstimator`: Spark ML metadata
  * (`DefaultParamsWriter`: class, uid, every param) with `architectureKind` ("spec", or null
  * without a network), and the network's JSON spec in `network.json`.
  */
private[ml] class TorchEstimatorWriter(estimator: TorchEstimator) extends MLWriter {
  override protected def saveImpl(path: String): Unit = {
    val kind = if (estimator.getNetwork.isDefined) JStr("spec") else JNull
    ParamsMetadata.save(estimator, path, sparkSession,
      CanonicalJson.write(JObj("architectureKind" -> kind, "customCode" -> JArr(Vector.empty))))
    estimator.getNetwork.foreach { net =>
      SavedFiles.write(sparkSession, s"$path/${SavedFiles.NetworkFile}", net.toJson.getBytes(UTF_8))
    }
  }
}

/** Reads what [[TorchEstimatorWriter]] wrote. */
private[ml] class TorchEstimatorReader extends MLReader[TorchEstimator] {
  override def load(path: String): TorchEstimator = {
    val (estimator, metadataJson) = ParamsMetadata.load(path, sparkSession, classOf[TorchEstimator].getName,
      uid => new TorchEstimator(uid))
    val metadata = JsonParser.parse(metadataJson).asInstanceOf[JObj]
    metadata.get("architectureKind") match {
      case Some(JStr("spec")) =>
        val spec = new String(SavedFiles.read(sparkSession, s"$path/${SavedFiles.NetworkFile}"), UTF_8)
        estimator.setNetwork(Network.fromJson(spec))
      case None | Some(JNull) => estimator
      case Some(other) => throw new IllegalArgumentException(s"$path holds an estimator whose network is a " +
        s"${CanonicalJson.write(other)} architecture; the Scala TorchEstimator trains sparkdl.nn networks " +
        "(architectureKind \"spec\") only.")
    }
  }
}
