package sparkdl.json

import sparkdl.json.Json._

/** Canonical JSON text, byte for byte what Python writes with
  * `json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)`.
  *
  * Keys sorted by code point at every level, no whitespace, floats as Python's `repr`, every
  * character outside printable ASCII escaped as `\\uXXXX` (lower-case hex, UTF-16 surrogate
  * pairs above the BMP). Two writers that agree on this agree on the bytes, so a spec can be
  * hashed, compared and shipped between Python and the JVM as a string.
  *
  * Example:
  * {{{
  * CanonicalJson.write(Json.from(Map("rate" -> 0.1, "type" -> "Dropout")))
  * // {"rate":0.1,"type":"Dropout"}
  * }}}
  */
object CanonicalJson {

  /** Sorts as Python sorts `str` keys: by code point (not by UTF-16 unit, as `String.compareTo`). */
  val keyOrdering: Ordering[String] = (a: String, b: String) => {
    val (x, y) = (a.codePoints().toArray, b.codePoints().toArray)
    val n = math.min(x.length, y.length)
    var i = 0
    while (i < n && x(i) == y(i)) i += 1
    if (i < n) Integer.compare(x(i), y(i)) else Integer.compare(x.length, y.length)
  }

  /** @throws IllegalArgumentException for NaN or infinite floats (Python's `allow_nan=False`). */
  def write(value: Json): String = {
    val out = new StringBuilder
    write(value, out)
    out.toString
  }

  private def write(value: Json, out: StringBuilder): Unit = value match {
    case JNull      => out.append("null")
    case JBool(b)   => out.append(b)
    case JInt(i)    => out.append(i.toString)
    case JFloat(d) =>
      // Python 3.11's wording; the value is not echoed.
      if (d.isNaN || d.isInfinite)
        throw new IllegalArgumentException("Out of range float values are not JSON compliant")
      out.append(PyRepr.float(d))
    case JStr(s) => string(s, out)
    case JArr(items) =>
      out.append('[')
      items.iterator.zipWithIndex.foreach { case (item, i) =>
        if (i > 0) out.append(',')
        write(item, out)
      }
      out.append(']')
    case JObj(fields) =>
      // Python keeps the last of duplicate keys; the parser has already merged them.
      out.append('{')
      fields.sortBy(_._1)(keyOrdering).zipWithIndex.foreach { case ((k, v), i) =>
        if (i > 0) out.append(',')
        string(k, out)
        out.append(':')
        write(v, out)
      }
      out.append('}')
  }

  // json.dumps with ensure_ascii=True: short escapes for these, \\u00XX for other controls
  // and \\uXXXX for anything outside ' '..'~'.
  private def string(s: String, out: StringBuilder): Unit = {
    out.append('"')
    s.foreach {
      case '"'                      => out.append("\\\"")
      case '\\'                     => out.append("\\\\")
      case '\n'                     => out.append("\\n")
      case '\r'                     => out.append("\\r")
      case '\t'                     => out.append("\\t")
      case '\b'                     => out.append("\\b")
      case '\f'                     => out.append("\\f")
      case c if c >= ' ' && c <= '~' => out.append(c)
      case c                        => out.append(f"\\u${c.toInt}%04x")
    }
    out.append('"')
  }
}
