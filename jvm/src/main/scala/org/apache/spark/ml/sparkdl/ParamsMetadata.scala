package org.apache.spark.ml.sparkdl

import org.apache.spark.ml.param.Params
import org.apache.spark.ml.util.{DefaultParamsReader, DefaultParamsWriter}
import org.apache.spark.sql.SparkSession
import org.json4s.{JNull, JObject}
import org.json4s.jackson.JsonMethods.parse

/** Spark ML's own params metadata writer and reader, the ones `DefaultParamsWritable` and
  * `DefaultParamsReadable` use (`DefaultParamsWriter.saveMetadata`,
  * `DefaultParamsReader.loadMetadata` and `getAndSetParams`), for sparkdl's writers that
  * save files beside the metadata. Spark keeps them `private[ml]`, hence this package; it is
  * internal to sparkdl, not API.
  */
object ParamsMetadata {

  /** Writes `path/metadata` as `DefaultParamsWriter` does.
    *
    * @param extraJson a JSON object whose fields are added beside `uid`, `paramMap`, ...
    */
  def save(instance: Params, path: String, spark: SparkSession, extraJson: String): Unit =
    DefaultParamsWriter.saveMetadata(instance, path, spark, Some(jsonObject(extraJson)))

  /** The metadata JSON `save` would write, as text. */
  def toJson(instance: Params, spark: SparkSession, extraJson: String): String =
    DefaultParamsWriter.getMetadataToSave(instance, spark, Some(jsonObject(extraJson)))

  /** Reads `path/metadata`, makes the instance with the saved uid and sets its saved params
    * and defaults (`getAndSetParams`). Saved params the instance does not have (Python-only
    * ones), and params saved as `null`, are skipped.
    *
    * @param expectedClasses the class names the metadata may name (e.g. the Scala class and
    *                        the Python class of the same stage)
    * @return the instance and the whole metadata, as JSON text (for extra fields)
    * @throws IllegalArgumentException if the metadata names another class
    */
  def load[T <: Params](path: String, spark: SparkSession, expectedClasses: Seq[String],
                        make: String => T): (T, String) = {
    val metadata = DefaultParamsReader.loadMetadata(path, spark, "")
    require(expectedClasses.contains(metadata.className), s"Error loading metadata: Expected class name " +
      s"${expectedClasses.mkString(" or ")} but found class name ${metadata.className}")
    val instance = make(metadata.uid)
    val skip = Seq(metadata.params, metadata.defaultParams).flatMap {
      case JObject(fields) => fields.collect { case (name, value) if !instance.hasParam(name) || value == JNull => name }
      case _ => Nil
    }.distinct.toList
    metadata.getAndSetParams(instance, Some(skip))
    (instance, metadata.metadataJson)
  }

  private def jsonObject(text: String): JObject = parse(text) match {
    case o: JObject => o
    case other => throw new IllegalArgumentException(s"Extra metadata must be a JSON object. Received: $other")
  }
}
