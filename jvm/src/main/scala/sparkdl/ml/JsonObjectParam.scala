package sparkdl.ml

import org.apache.spark.ml.param.{Param, Params}

import sparkdl.json.{CanonicalJson, JsonParser}
import sparkdl.json.Json._

/** A param whose value is a JSON object, held as its canonical text (e.g. `{"lr":0.01}`).
  *
  * Spark ML metadata stores it as the object itself, not as a string holding one, the way
  * Python's dict-valued params (`optimizerParams`, `backendOptions`) are stored, so either
  * language reads the other's saved models and estimators. A string holding an object is
  * read too.
  *
  * {{{
  * est.set(est.optimizerParams, """{"lr": 0.01, "momentum": 0.9}""")
  * est.optimizerParams.jsonEncode(est.getOptimizerParams)   // {"lr":0.01,"momentum":0.9}
  * }}}
  */
class JsonObjectParam(parent: Params, name: String, doc: String)
    extends Param[String](parent, name, doc, (text: String) => JsonObjectParam.isObject(text)) {

  override def jsonEncode(value: String): String = JsonObjectParam.canonical(value, name)

  override def jsonDecode(json: String): String = JsonParser.parse(json) match {
    case o: JObj => CanonicalJson.write(o)
    case JStr(text) => JsonObjectParam.canonical(text, name)
    case _ => throw new IllegalArgumentException(s"$name must be a JSON object. Received: $name=$json")
  }
}

object JsonObjectParam {
  private def isObject(text: String): Boolean =
    text != null && scala.util.Try(JsonParser.parse(text)).toOption.exists(_.isInstanceOf[JObj])

  /** The canonical text of a map as a JSON object: values are numbers, strings, booleans,
    * `null`/`None`, sequences or nested maps with string keys ([[sparkdl.json.Json.from]]).
    *
    * @throws IllegalArgumentException naming `name` for a value JSON cannot hold
    */
  def fromMap(value: scala.collection.Map[String, _], name: String): String =
    try CanonicalJson.write(sparkdl.json.Json.from(value))
    catch {
      case e: IllegalArgumentException =>
        throw new IllegalArgumentException(s"$name must be a JSON object: ${e.getMessage}. Received: $name=$value", e)
    }

  /** [[fromMap]] for a Java map (what py4j makes of a Python dict), nested Java maps and
    * lists included.
    */
  def fromJavaMap(value: java.util.Map[String, _], name: String): String =
    fromMap(scalaValue(value).asInstanceOf[scala.collection.Map[String, _]], name)

  private def scalaValue(value: Any): Any = {
    import scala.jdk.CollectionConverters._
    value match {
      case m: java.util.Map[_, _] =>
        scala.collection.immutable.ListMap(m.asScala.toSeq.map { case (k, v) => k -> scalaValue(v) }: _*)
      case l: java.util.List[_] => l.asScala.map(scalaValue).toVector
      case other => other
    }
  }

  /** The canonical text of a JSON object.
    *
    * @throws IllegalArgumentException naming `name` if `text` is not a JSON object
    */
  def canonical(text: String, name: String): String =
    scala.util.Try(JsonParser.parse(text)).toOption match {
      case Some(o: JObj) => CanonicalJson.write(o)
      case _ => throw new IllegalArgumentException(s"$name must be a JSON object. Received: $name=$text")
    }
}
