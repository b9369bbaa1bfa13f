package sparkdl.json

import java.math.{BigDecimal => JBigDecimal, MathContext, RoundingMode}

import sparkdl.json.Json._

/** Python's `repr()` of JSON values, floats, strings and shapes.
  *
  * Why: the spec format and its error messages are defined by the Python implementation.
  * Canonical JSON writes floats as Python's `repr(float)` does (`1e-05`, `0.1`, `1.0`), and
  * error messages echo values as Python prints them (`'relu'`, `None`, `(1, 8, 8)`), so that
  * the same mistake reads the same in both languages.
  *
  * Example:
  * {{{
  * PyRepr.float(1e-5)                                   // "1e-05"
  * PyRepr(Json.from(Map("name" -> "x", "shape" -> Seq(4))))  // "{'name': 'x', 'shape': [4]}"
  * PyRepr.tuple(Seq(64))                                // "(64,)"
  * }}}
  */
object PyRepr {

  /** `repr(value)` for a JSON value parsed or built by sparkdl (a Python dict, list, ...). */
  def apply(value: Json): String = value match {
    case JNull          => "None"
    case JBool(b)       => if (b) "True" else "False"
    case JInt(i)        => i.toString
    case JFloat(d)      => float(d)
    case JStr(s)        => string(s)
    case JArr(items)    => items.map(apply).mkString("[", ", ", "]")
    case JObj(fields)   => fields.map { case (k, v) => s"${string(k)}: ${apply(v)}" }.mkString("{", ", ", "}")
  }

  /** `repr(tuple(values))`: `(64,)` for one element, `(1, 8, 8)` for more. */
  def tuple(values: Seq[Any]): String = values match {
    case Seq(one) => s"(${element(one)},)"
    case _        => values.map(element).mkString("(", ", ", ")")
  }

  /** `repr(list(values))`, e.g. `['a', 'b']`. */
  def list(values: Seq[Any]): String = values.map(element).mkString("[", ", ", "]")

  /** `repr(None)` or `repr(value)` for an optional string. */
  def optString(value: Option[String]): String = value.fold("None")(string)

  private def element(value: Any): String = value match {
    case j: Json   => apply(j)
    case s: String => string(s)
    case d: Double => float(d)
    case other     => other.toString
  }

  /** Python's `repr(str)`: single quotes unless the text has one and no double quote. */
  def string(s: String): String = {
    val quote = if (s.contains('\'') && !s.contains('"')) '"' else '\''
    val out = new StringBuilder().append(quote)
    s.codePoints().forEach { cp =>
      if (cp == quote || cp == '\\') out.append('\\').append(cp.toChar)
      else if (cp == '\t') out.append("\\t")
      else if (cp == '\n') out.append("\\n")
      else if (cp == '\r') out.append("\\r")
      else if (cp < ' ' || cp == 0x7f) out.append(f"\\x$cp%02x")
      else if (cp < 0x7f || isPrintable(cp)) out.appendAll(Character.toChars(cp))
      else if (cp <= 0xff) out.append(f"\\x$cp%02x")
      else if (cp <= 0xffff) out.append(f"\\u$cp%04x")
      else out.append(f"\\U$cp%08x")
    }
    out.append(quote).toString
  }

  // str.isprintable(): every character but those of these Unicode categories (and
  // separators other than the ASCII space, handled above).
  private def isPrintable(cp: Int): Boolean = Character.getType(cp) match {
    case Character.CONTROL | Character.FORMAT | Character.SURROGATE | Character.PRIVATE_USE |
        Character.UNASSIGNED | Character.LINE_SEPARATOR | Character.PARAGRAPH_SEPARATOR |
        Character.SPACE_SEPARATOR => false
    case _ => true
  }

  /** Python's `repr(float)`: the shortest decimal that reads back as the same double, in
    * fixed notation when its decimal exponent is in [-4, 16), else in exponent notation with
    * at least two exponent digits; always with a `.0` or an exponent, so it reads as a float.
    */
  def float(d: Double): String =
    if (d.isNaN) "nan"
    else if (d.isInfinite) (if (d > 0) "inf" else "-inf")
    else if (d == 0.0) (if (1.0 / d < 0) "-0.0" else "0.0")
    else {
      val sign = if (d < 0) "-" else ""
      val (digits, point) = shortestDigits(math.abs(d))
      // The value is 0.<digits> * 10^point (Python's "decpt" convention).
      if (point > -4 && point <= 16) {
        val fixed =
          if (point <= 0) "0." + "0" * -point + digits
          else if (point >= digits.length) digits + "0" * (point - digits.length) + ".0"
          else digits.substring(0, point) + "." + digits.substring(point)
        sign + fixed
      } else {
        val exponent = point - 1
        val mantissa = if (digits.length == 1) digits else digits.head.toString + "." + digits.tail
        f"$sign${mantissa}e${if (exponent < 0) "-" else "+"}${math.abs(exponent)}%02d"
      }
    }

  /** The shortest digit string that round-trips `d` (> 0, finite), and its decimal point
    * position. Among candidates of the shortest length the one nearest `d` wins, as in
    * David Gay's `dtoa` (Python) and in Schubfach (JDK 19+); JDK 17's `Double.toString` is
    * not always shortest, so it is not used.
    */
  private def shortestDigits(d: Double): (String, Int) = {
    val exact = new JBigDecimal(d)
    def roundTrips(b: JBigDecimal): Boolean = java.lang.Double.parseDouble(b.toString) == d
    val found = Iterator.from(1).map { precision =>
      val nearest = exact.round(new MathContext(precision, RoundingMode.HALF_EVEN))
      if (roundTrips(nearest)) Some(nearest)
      else {
        // Near a power of two the round-trip interval is lopsided: the other neighbour at
        // this precision may read back as d although the nearest one does not.
        val down = exact.round(new MathContext(precision, RoundingMode.FLOOR))
        val up = exact.round(new MathContext(precision, RoundingMode.CEILING))
        Seq(down, up).find(b => b.compareTo(nearest) != 0 && roundTrips(b))
      }
    }.collectFirst { case Some(b) => b }.get
    val stripped = found.stripTrailingZeros
    val digits = stripped.unscaledValue.toString
    (digits, digits.length - stripped.scale)
  }
}
