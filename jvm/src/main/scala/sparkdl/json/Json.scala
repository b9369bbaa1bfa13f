package sparkdl.json

/** A JSON value, with the distinctions Python's `json` module makes.
  *
  * Integers and floats are different values (`1` and `1.0` serialise differently), integers
  * are unbounded as in Python, and objects keep their keys in document order (Python dicts
  * do, and error messages that echo a value print it in that order).
  *
  * Example:
  * {{{
  * Json.from(Map("lr" -> 0.001, "betas" -> Seq(0.9, 0.999)))
  * // JObj(Vector((lr,JFloat(0.001)), (betas,JArr(Vector(JFloat(0.9), JFloat(0.999))))))
  * }}}
  */
sealed trait Json

object Json {
  case object JNull extends Json
  final case class JBool(value: Boolean) extends Json
  final case class JInt(value: BigInt) extends Json
  final case class JFloat(value: Double) extends Json
  final case class JStr(value: String) extends Json
  final case class JArr(items: Vector[Json]) extends Json
  final case class JObj(fields: Vector[(String, Json)]) extends Json {
    def get(key: String): Option[Json] = fields.collectFirst { case (`key`, v) => v }
    def contains(key: String): Boolean = fields.exists(_._1 == key)
    def keys: Vector[String] = fields.map(_._1)
  }

  object JObj {
    def apply(fields: (String, Json)*): JObj = new JObj(fields.toVector)
  }

  /** A Scala value as JSON: numbers, strings, booleans, `null`/`None`, `Option`, sequences,
    * arrays and `Map`s with string keys, recursively. `Int`/`Long`/`BigInt` become JSON
    * integers and `Double`/`Float` JSON floats, as Python's `int` and `float` do.
    *
    * @throws IllegalArgumentException for anything else (naming its class).
    */
  def from(value: Any): Json = value match {
    case j: Json                        => j
    case null | None                    => JNull
    case Some(v)                        => from(v)
    case b: Boolean                     => JBool(b)
    case i: Int                         => JInt(BigInt(i))
    case l: Long                        => JInt(BigInt(l))
    case s: Short                       => JInt(BigInt(s.toInt))
    case b: Byte                        => JInt(BigInt(b.toInt))
    case i: BigInt                      => JInt(i)
    case i: java.math.BigInteger        => JInt(BigInt(i))
    case d: Double                      => JFloat(d)
    case f: Float                       => JFloat(f.toDouble)
    case s: String                      => JStr(s)
    case m: scala.collection.Map[_, _]  => JObj(m.toVector.map { case (k, v) => key(k) -> from(v) })
    case s: Iterable[_]                 => JArr(s.iterator.map(from).toVector)
    case a: Array[_]                    => JArr(a.iterator.map(from).toVector)
    case other =>
      throw new IllegalArgumentException(
        s"Cannot write a ${other.getClass.getName} as JSON; use numbers, strings, booleans, " +
          "None, sequences or maps with string keys")
  }

  private def key(k: Any): String = k match {
    case s: String => s
    case other =>
      throw new IllegalArgumentException(s"JSON object keys must be strings. Received: $other")
  }
}
