package sparkdl.json

import java.math.{BigDecimal => JBigDecimal}
import java.util.regex.Pattern

import scala.collection.concurrent.TrieMap

import sparkdl.json.Json._

/** One way an instance fails a schema, as Python's `jsonschema.ValidationError` has it.
  *
  * @param message  jsonschema's message, word for word (`'units' is a required property`)
  * @param keyword  the keyword that failed; None for the `false` schema
  * @param path     where in the instance, relative to the error's parent (for errors in the
  *                 `context` of a `oneOf`) or to the root
  * @param instance the value that failed
  * @param schema   the (sub)schema holding the keyword
  * @param context  for `oneOf`/`anyOf`: the errors of each alternative
  */
final case class SchemaError(
    message: String,
    keyword: Option[String],
    path: Vector[Either[String, Int]],
    instance: Json,
    schema: Json,
    context: Vector[SchemaError] = Vector.empty) {
  private[json] def under(step: Either[String, Int]): SchemaError = copy(path = step +: path)
}

/** A JSON Schema (draft 2020-12) validator that reports what Python's `jsonschema` reports.
  *
  * Why not a Java validator library: the network spec's error messages are part of its
  * contract ("Invalid network spec at layers/0: 'units' is a required property" in both
  * languages), and they come from `jsonschema`'s wording and its `best_match` heuristic. This
  * mirrors both for the keywords sparkdl's schemas use; a schema with any other validation
  * keyword is refused when loaded, so a schema change cannot silently go unchecked here. (The
  * ScalaTest suites also check every spec against an independent Java implementation.)
  *
  * Example:
  * {{{
  * val schema = JsonSchema(JsonParser.parse("""{"type": "object", "required": ["units"]}"""))
  * schema.bestMatch(JsonParser.parse("{}")).map(_._1.message)  // Some('units' is a required property)
  * }}}
  */
final class JsonSchema private (root: Json) {
  import JsonSchema._

  checkKeywords(root)

  /** Every error, in the order jsonschema's `iter_errors` yields them. */
  def errors(instance: Json): Vector[SchemaError] = descend(instance, root, None)

  def isValid(instance: Json): Boolean = errors(instance).isEmpty

  /** jsonschema's `best_match`: the most relevant error and its absolute path, if any. */
  def bestMatch(instance: Json): Option[(SchemaError, Vector[Either[String, Int]])] = {
    val all = errors(instance)
    if (all.isEmpty) None
    else {
      // Python's max() keeps the first of equal maxima.
      var best = all.reduceLeft((a, b) => if (relevance.compare(b, a) > 0) b else a)
      var prefix = Vector.empty[Either[String, Int]]
      var done = false
      while (!done && best.context.nonEmpty) {
        // For oneOf/anyOf the deepest (least "relevant") alternative error is the useful one,
        // unless two tie: then the oneOf error itself stays (heapq.nsmallest is stable).
        val smallest = best.context.sorted(relevance).take(2)
        if (smallest.size == 2 && relevance.compare(smallest(0), smallest(1)) == 0) done = true
        else {
          prefix = prefix ++ best.path
          best = smallest.head
        }
      }
      Some((best, prefix ++ best.path))
    }
  }

  // -- validation, keyword by keyword in schema order (jsonschema's _keywords.py) ------------

  private def descend(instance: Json, schema: Json, step: Option[Either[String, Int]]): Vector[SchemaError] =
    schema match {
      case JBool(true) => Vector.empty
      // jsonschema returns the false schema's error before adding `step` to its path.
      case JBool(false) =>
        Vector(SchemaError(s"False schema does not allow ${PyRepr(instance)}", None, Vector.empty, instance, schema))
      case obj: JObj =>
        obj.fields.flatMap { case (k, v) =>
          val errs = keyword(k, v, instance, obj)
          step.fold(errs)(s => errs.map(_.under(s)))
        }
      case other => throw new IllegalArgumentException(s"Not a schema: ${PyRepr(other)}")
    }

  private def keyword(k: String, v: Json, instance: Json, schema: JObj): Vector[SchemaError] = {
    def error(message: String) = Vector(SchemaError(message, Some(k), Vector.empty, instance, schema))
    def errorIf(cond: Boolean, message: => String) = if (cond) error(message) else Vector.empty
    val repr = PyRepr(instance)
    (k, instance) match {
      case ("$ref", _) =>
        v match {
          case JStr(ref) => descend(instance, resolve(ref), None)
          case _         => Vector.empty
        }
      case ("type", _) =>
        val types = v match {
          case JStr(t)    => Vector(t)
          case JArr(ts)   => ts.collect { case JStr(t) => t }
          case _          => Vector.empty
        }
        errorIf(!types.exists(isType(instance, _)),
          s"$repr is not of type ${types.map(PyRepr.string).mkString(", ")}")
      case ("const", _) => errorIf(!equal(instance, v), s"${PyRepr(v)} was expected")
      case ("enum", _) =>
        val options = v match { case JArr(items) => items; case _ => Vector.empty }
        errorIf(!options.exists(equal(_, instance)), s"$repr is not one of ${PyRepr(v)}")
      case ("required", obj: JObj) =>
        v match {
          case JArr(names) =>
            names.collect { case JStr(name) if !obj.contains(name) => name }
              .flatMap(name => error(s"${PyRepr.string(name)} is a required property"))
          case _ => Vector.empty
        }
      case ("properties", obj: JObj) =>
        v match {
          case JObj(props) =>
            props.flatMap { case (name, sub) =>
              obj.get(name).fold(Vector.empty[SchemaError])(value => descend(value, sub, Some(Left(name))))
            }
          case _ => Vector.empty
        }
      case ("additionalProperties", obj: JObj) =>
        val known = schema.get("properties") match { case Some(p: JObj) => p.keys.toSet; case _ => Set.empty[String] }
        val extras = obj.keys.filterNot(known).distinct
        v match {
          case JBool(false) if extras.nonEmpty =>
            val sorted = extras.sorted(CanonicalJson.keyOrdering)
            error(s"Additional properties are not allowed (${sorted.map(PyRepr.string).mkString(", ")} " +
              s"${if (sorted.size == 1) "was" else "were"} unexpected)")
          case sub: JObj => extras.flatMap(name => descend(obj.get(name).get, sub, Some(Left(name))))
          case _ => Vector.empty
        }
      case ("items", JArr(items)) if v == JBool(false) =>
        val rest = if (items.size == 1) PyRepr(items.head) else PyRepr(JArr(items))
        errorIf(items.nonEmpty, s"Expected at most 0 items but found ${items.size} extra: $rest")
      case ("items", JArr(items)) =>
        items.zipWithIndex.flatMap { case (item, i) => descend(item, v, Some(Right(i))) }
      case ("minItems", JArr(items)) =>
        val n = intValue(v)
        errorIf(items.size < n, s"$repr ${if (n == 1) "should be non-empty" else "is too short"}")
      case ("maxItems", JArr(items)) =>
        val n = intValue(v)
        errorIf(items.size > n, s"$repr ${if (n == 0) "is expected to be empty" else "is too long"}")
      case ("minLength", JStr(s)) =>
        val n = intValue(v)
        errorIf(s.codePointCount(0, s.length) < n, s"$repr ${if (n == 1) "should be non-empty" else "is too short"}")
      case ("maxLength", JStr(s)) =>
        val n = intValue(v)
        errorIf(s.codePointCount(0, s.length) > n, s"$repr ${if (n == 0) "is expected to be empty" else "is too long"}")
      case ("minimum", _) if isNumber(instance) =>
        errorIf(compare(instance, v).exists(_ < 0), s"$repr is less than the minimum of ${PyRepr(v)}")
      case ("maximum", _) if isNumber(instance) =>
        errorIf(compare(instance, v).exists(_ > 0), s"$repr is greater than the maximum of ${PyRepr(v)}")
      case ("exclusiveMinimum", _) if isNumber(instance) =>
        errorIf(compare(instance, v).exists(_ <= 0),
          s"$repr is less than or equal to the minimum of ${PyRepr(v)}")
      case ("exclusiveMaximum", _) if isNumber(instance) =>
        errorIf(compare(instance, v).exists(_ >= 0),
          s"$repr is greater than or equal to the maximum of ${PyRepr(v)}")
      case ("pattern", JStr(s)) =>
        val p = v match { case JStr(re) => re; case _ => "" }
        errorIf(!pattern(p).matcher(s).find(), s"$repr does not match ${PyRepr.string(p)}")
      case ("not", _) =>
        errorIf(isValid(instance, v), s"$repr should not be valid under ${PyRepr(v)}")
      case ("allOf", _) => subschemas(v).flatMap(sub => descend(instance, sub, None))
      case ("anyOf", _) =>
        val all = Vector.newBuilder[SchemaError]
        val matched = subschemas(v).exists { sub =>
          val errs = descend(instance, sub, None)
          all ++= errs
          errs.isEmpty
        }
        if (matched) Vector.empty
        else Vector(SchemaError(s"$repr is not valid under any of the given schemas", Some(k), Vector.empty,
          instance, schema, all.result()))
      case ("oneOf", _) =>
        val subs = subschemas(v)
        val all = Vector.newBuilder[SchemaError]
        val first = subs.indexWhere { sub =>
          val errs = descend(instance, sub, None)
          all ++= errs
          errs.isEmpty
        }
        if (first < 0)
          Vector(SchemaError(s"$repr is not valid under any of the given schemas", Some(k), Vector.empty,
            instance, schema, all.result()))
        else {
          val more = subs.drop(first + 1).filter(isValid(instance, _))
          errorIf(more.nonEmpty, s"$repr is valid under each of ${(more :+ subs(first)).map(PyRepr(_)).mkString(", ")}")
        }
      case ("if", _) =>
        if (isValid(instance, v)) schema.get("then").fold(Vector.empty[SchemaError])(descend(instance, _, None))
        else schema.get("else").fold(Vector.empty[SchemaError])(descend(instance, _, None))
      // Keywords that only apply to other types, and annotations.
      case _ => Vector.empty
    }
  }

  private def isValid(instance: Json, schema: Json): Boolean = descend(instance, schema, None).isEmpty

  private def resolve(ref: String): Json = {
    if (ref == "#") root
    else if (ref.startsWith("#/")) {
      ref.substring(2).split("/", -1).map(_.replace("~1", "/").replace("~0", "~")).foldLeft(root) {
        case (obj: JObj, key) => obj.get(key).getOrElse(unresolvable(ref))
        case (JArr(items), index) if index.forall(_.isDigit) && index.toInt < items.size => items(index.toInt)
        case _ => unresolvable(ref)
      }
    } else unresolvable(ref)
  }

  private def unresolvable(ref: String): Nothing =
    throw new IllegalArgumentException(s"Unresolvable JSON pointer: ${PyRepr.string(ref)} (only local refs are supported)")
}

object JsonSchema {

  /** A validator for `schema` (a parsed JSON Schema document).
    *
    * @throws IllegalArgumentException if the schema uses a validation keyword not mirrored here.
    */
  def apply(schema: Json): JsonSchema = new JsonSchema(schema)

  // Validation keywords mirrored above, and keywords that never produce errors themselves.
  private val Supported = Set(
    "$ref", "type", "const", "enum", "required", "properties", "additionalProperties", "items",
    "minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "pattern", "not", "allOf", "anyOf", "oneOf", "if", "then", "else")
  private val Annotations = Set(
    "$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples",
    "deprecated", "readOnly", "writeOnly")

  private def checkKeywords(schema: Json): Unit = schema match {
    case JObj(fields) =>
      fields.foreach { case (k, v) =>
        if (!Supported(k) && !Annotations(k))
          throw new IllegalArgumentException(s"JSON Schema keyword ${PyRepr.string(k)} is not supported")
        k match {
          case "properties" | "$defs" => v match { case JObj(subs) => subs.foreach(s => checkKeywords(s._2)); case _ => }
          case "allOf" | "anyOf" | "oneOf" => subschemas(v).foreach(checkKeywords)
          case "items" | "not" | "if" | "then" | "else" | "additionalProperties" => checkKeywords(v)
          case _ =>
        }
      }
    case _ =>
  }

  private def subschemas(v: Json): Vector[Json] = v match {
    case JArr(items) => items
    case _           => Vector.empty
  }

  private def intValue(v: Json): Int = v match {
    case JInt(i)   => i.toInt
    case JFloat(d) => d.toInt
    case _         => 0
  }

  private val patterns = TrieMap.empty[String, Pattern]

  // Python's `$` also matches before a final "\n" (and only "\n": UNIX_LINES).
  private def pattern(re: String): Pattern = patterns.getOrElseUpdate(re, Pattern.compile(re, Pattern.UNIX_LINES))

  private def isNumber(j: Json): Boolean = j.isInstanceOf[JInt] || j.isInstanceOf[JFloat]

  /** jsonschema's draft 2020-12 type checker (an integral float is an "integer"). */
  private[json] def isType(j: Json, t: String): Boolean = (t, j) match {
    case ("object", _: JObj)      => true
    case ("array", _: JArr)       => true
    case ("string", _: JStr)      => true
    case ("boolean", _: JBool)    => true
    case ("null", JNull)          => true
    case ("number", _)            => isNumber(j)
    case ("integer", _: JInt)     => true
    case ("integer", JFloat(d))   => !d.isInfinite && !d.isNaN && d == math.floor(d)
    case _                        => false
  }

  /** Numeric comparison as Python does it: exact between ints and floats; None with NaN. */
  private def compare(a: Json, b: Json): Option[Int] = (decimal(a), decimal(b)) match {
    case (Some(Right(x)), Some(Right(y)))                 => Some(x.compareTo(y))
    case (Some(Left(x)), _) if x.isNaN                    => None
    case (_, Some(Left(y))) if y.isNaN                    => None
    case (Some(Left(x)), Some(Left(y)))                   => Some(java.lang.Double.compare(x, y).sign)
    case (Some(Left(x)), Some(_))                         => Some(if (x > 0) 1 else -1)
    case (Some(_), Some(Left(y)))                         => Some(if (y > 0) -1 else 1)
    case _                                                => None
  }

  // Right: an exact decimal; Left: a NaN or infinite double.
  private def decimal(j: Json): Option[Either[Double, JBigDecimal]] = j match {
    case JInt(i)                                 => Some(Right(new JBigDecimal(i.bigInteger)))
    case JFloat(d) if d.isNaN || d.isInfinite     => Some(Left(d))
    case JFloat(d)                               => Some(Right(new JBigDecimal(d)))
    case _                                       => None
  }

  /** jsonschema's `equal`: booleans are not numbers, 1 == 1.0, objects ignore key order. */
  private[json] def equal(a: Json, b: Json): Boolean = (a, b) match {
    case (JStr(x), JStr(y))             => x == y
    case (JArr(xs), JArr(ys))           => xs.size == ys.size && xs.lazyZip(ys).forall(equal)
    case (x: JObj, y: JObj)             =>
      x.fields.size == y.fields.size && x.fields.forall { case (k, v) => y.get(k).exists(equal(v, _)) }
    case (JBool(x), JBool(y))           => x == y
    case (JNull, JNull)                 => true
    case (x, y) if isNumber(x) && isNumber(y) => compare(x, y).contains(0)
    case _                              => false
  }

  /** jsonschema's `relevance` key: prefer shallow errors, then the later sibling path, then
    * errors of keywords other than oneOf/anyOf, then errors whose schema's `type` the
    * instance does not match.
    */
  private[json] val relevance: Ordering[SchemaError] = new Ordering[SchemaError] {
    def compare(a: SchemaError, b: SchemaError): Int = {
      val byDepth = Integer.compare(-a.path.size, -b.path.size)
      if (byDepth != 0) byDepth
      else {
        val byPath = comparePaths(a.path, b.path)
        if (byPath != 0) byPath
        else {
          val byWeak = java.lang.Boolean.compare(!weak(a), !weak(b))
          if (byWeak != 0) byWeak else java.lang.Boolean.compare(!matchesType(a), !matchesType(b))
        }
      }
    }
  }

  private def weak(e: SchemaError): Boolean = e.keyword.exists(k => k == "oneOf" || k == "anyOf")

  private def matchesType(e: SchemaError): Boolean = e.schema match {
    case obj: JObj =>
      obj.get("type") match {
        case Some(JStr(t))  => isType(e.instance, t)
        case Some(JArr(ts)) => ts.exists { case JStr(t) => isType(e.instance, t); case _ => false }
        case _              => false
      }
    case _ => false
  }

  private def comparePaths(a: Vector[Either[String, Int]], b: Vector[Either[String, Int]]): Int = {
    val n = math.min(a.size, b.size)
    var i = 0
    var result = 0
    while (result == 0 && i < n) {
      result = (a(i), b(i)) match {
        case (Left(x), Left(y))   => CanonicalJson.keyOrdering.compare(x, y)
        case (Right(x), Right(y)) => Integer.compare(x, y)
        // Siblings are keys of one container, so the kinds agree; order them anyway.
        case (Right(_), Left(_))  => -1
        case (Left(_), Right(_))  => 1
      }
      i += 1
    }
    if (result != 0) result else Integer.compare(a.size, b.size)
  }
}
