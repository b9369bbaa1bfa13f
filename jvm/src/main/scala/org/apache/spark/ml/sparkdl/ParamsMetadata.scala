package org.apache.spark.ml.sparkdl

import org.apache.spark.ml.param.Params
import org.apache.spark.ml.util.{DefaultParamsReader, DefaultParamsWriter}
import org.apache.spark.sql.SparkSession
import org.json4s.JObject
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
    * and defaults (`getAndSetParams`).
    *
    * @param expectedClass the class name the metadata must name
    * @return the instance and the whole metadata, as JSON text (for extra fields)
    * @throws IllegalArgumentException if the metadata names another class
    */
  def load[T <: Params](path: String, spark: SparkSession, expectedClass: String, make: String => T): (T, String) = {
    val metadata = DefaultParamsReader.loadMetadata(path, spark, expectedClass)
    val instance = make(metadata.uid)
    metadata.getAndSetParams(instance, None)
    (instance, metadata.metadataJson)
  }

  private def jsonObject(text: String): JObject = parse(text) match {
    case o: JObject => o
    case other => throw new IllegalArgumentException(s"Extra metadata must be a JSON object. Received: $other")
  }
}
