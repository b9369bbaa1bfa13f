package sparkdl.json

import scala.collection.mutable

import com.fasterxml.jackson.core.{JsonFactory, JsonFactoryBuilder, JsonParser => JacksonParser, JsonProcessingException, JsonToken}
import com.fasterxml.jackson.core.json.JsonReadFeature

import sparkdl.json.Json._

/** Parses JSON text the way Python's `json.loads` reads it.
  *
  * Jackson (on Spark's classpath) does the tokenising; this keeps Python's data model: a
  * number with a fraction or exponent is a float, any other an unbounded integer; `NaN`,
  * `Infinity` and `-Infinity` are accepted; of duplicate keys the last value wins, at the
  * first key's position; text after the value is an error.
  *
  * Example:
  * {{{
  * JsonParser.parse("""{"lr": 1e-3, "steps": 10}""")
  * // JObj(Vector((lr,JFloat(0.001)), (steps,JInt(10))))
  * }}}
  */
object JsonParser {

  private val factory: JsonFactory =
    new JsonFactoryBuilder().enable(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS).build()

  /** @throws IllegalArgumentException saying what is wrong and where, as `line L column C
    *   (char N)`; the "Expecting value" and "Extra data" cases in Python's exact words.
    */
  def parse(text: String): Json = {
    val start = skipWhitespace(text, 0)
    if (start == text.length) fail(s"Expecting value: ${where(text, start)}")
    val parser = factory.createParser(text)
    try {
      val value = read(parser, parser.nextToken())
      // Python reports text after the value at its first non-blank character.
      val end = skipWhitespace(text, parser.currentLocation().getCharOffset.toInt)
      if (end < text.length) fail(s"Extra data: ${where(text, end)}")
      value
    } catch {
      case e: JsonProcessingException =>
        val at = Option(e.getLocation).map(_.getCharOffset.toInt).filter(_ >= 0).getOrElse(0)
        fail(s"${e.getOriginalMessage}: ${where(text, math.min(at, text.length))}")
    } finally parser.close()
  }

  // Python's json skips exactly these.
  private def skipWhitespace(text: String, from: Int): Int = {
    var i = from
    while (i < text.length && " \t\n\r".indexOf(text.charAt(i).toInt) >= 0) i += 1
    i
  }

  /** `line L column C (char N)` for the 0-based index `pos`, as Python's json counts them. */
  private def where(text: String, pos: Int): String = {
    val line = text.substring(0, pos).count(_ == '\n') + 1
    val column = pos - text.lastIndexOf('\n', pos - 1)
    s"line $line column $column (char $pos)"
  }

  private def read(parser: JacksonParser, token: JsonToken): Json = token match {
    case JsonToken.START_OBJECT =>
      val fields = mutable.LinkedHashMap.empty[String, Json]
      var next = parser.nextToken()
      while (next != JsonToken.END_OBJECT) {
        val key = parser.currentName()
        fields.update(key, read(parser, parser.nextToken()))
        next = parser.nextToken()
      }
      JObj(fields.toVector)
    case JsonToken.START_ARRAY =>
      val items = Vector.newBuilder[Json]
      var next = parser.nextToken()
      while (next != JsonToken.END_ARRAY) {
        items += read(parser, next)
        next = parser.nextToken()
      }
      JArr(items.result())
    case JsonToken.VALUE_STRING       => JStr(parser.getText)
    case JsonToken.VALUE_NUMBER_INT   => JInt(BigInt(parser.getBigIntegerValue))
    case JsonToken.VALUE_NUMBER_FLOAT => JFloat(parser.getDoubleValue)
    case JsonToken.VALUE_TRUE         => JBool(true)
    case JsonToken.VALUE_FALSE        => JBool(false)
    case JsonToken.VALUE_NULL         => JNull
    case other                        => fail(s"Unexpected $other")
  }

  private def fail(message: String): Nothing = throw new IllegalArgumentException(message)
}
