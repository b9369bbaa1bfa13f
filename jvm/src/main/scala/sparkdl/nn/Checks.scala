package sparkdl.nn

import java.util.regex.Pattern

import sparkdl.ConfigException
import sparkdl.json.Json._
import sparkdl.json.{Json, PyRepr}

/** Attribute checks shared by the layers, each with the message Python's `sparkdl.nn` gives.
  *
  * Every check comes in two forms that share one message: one for a typed Scala value (a
  * layer's constructor) and one for a JSON value (a layer read from a spec), which also
  * rejects JSON of the wrong kind, e.g. `2.0` for an integer: the schema lets an integral
  * float through as an "integer", and Python's layer then refuses it with the same words.
  */
private[nn] object Checks {

  val Activations: Seq[String] = Seq("gelu", "leaky_relu", "relu", "sigmoid", "softmax", "tanh")
  val Dtypes: Seq[String] = Seq("float32", "int64")
  val NamePattern: String = "^[A-Za-z_][A-Za-z0-9_]*$"
  private val name = Pattern.compile(NamePattern)

  /** Python's `is_name`: the whole string matches (`$` alone would allow a final "\n"). */
  def isName(s: String): Boolean = name.matcher(s).matches()

  def fail(layer: String, message: String): Nothing = throw new ConfigException(s"$layer: $message")

  def check(cond: Boolean, layer: String, message: => String): Unit = if (!cond) fail(layer, message)

  // -- positive integers (units, filters, input_dim, num_heads, ...) -------------------------

  private def positiveMessage(field: String, repr: String) =
    s"$field must be a positive integer. Received: $field=$repr"

  def positiveInt(layer: String, field: String, value: Int): Int = {
    check(value >= 1, layer, positiveMessage(field, value.toString))
    value
  }

  def positiveInt(layer: String, field: String, value: Json): Int =
    positiveInt(layer, field, int(layer, field, value, positiveMessage(field, PyRepr(value))))

  /** A JSON integer that fits an `Int` (Python's ints are unbounded, ours are not). */
  def int(layer: String, field: String, value: Json, message: => String): Int = value match {
    case JInt(i) if i.isValidInt => i.toInt
    case JInt(i) => fail(layer, s"$field must fit a 32-bit int. Received: $field=$i")
    case _       => fail(layer, message)
  }

  // -- floats, which Python stores as float even when given an int -----------------------------

  def number(value: Json): Option[Double] = value match {
    case JFloat(d) => Some(d)
    case JInt(i)   => Some(i.toDouble)
    case _         => None
  }

  private def rateMessage(field: String, repr: String) = s"$field must be in [0, 1). Received: $field=$repr"

  /** A probability in [0, 1): Dropout's rate, attention dropout. */
  def rate(layer: String, field: String, value: Double): Double = {
    check(value >= 0 && value < 1, layer, rateMessage(field, PyRepr.float(value)))
    value
  }

  def rate(layer: String, field: String, value: Json): Double =
    rate(layer, field, number(value).getOrElse(fail(layer, rateMessage(field, PyRepr(value)))))

  // -- booleans ------------------------------------------------------------------------------

  def bool(layer: String, value: Json, message: String => String): Boolean = value match {
    case JBool(b) => b
    case other    => fail(layer, message(PyRepr(other)))
  }

  def useBias(layer: String, value: Json): Boolean =
    bool(layer, value, repr => s"use_bias must be a bool. Received: use_bias=$repr")

  // -- activations ---------------------------------------------------------------------------

  def activation(layer: String, value: Option[String], allowNone: Boolean = true): Option[String] = {
    if (!(value.isEmpty && allowNone))
      check(value.exists(Activations.contains), layer, activationMessage(PyRepr.optString(value), allowNone))
    value
  }

  def activation(layer: String, value: Json, allowNone: Boolean): Option[String] = value match {
    case JNull     => activation(layer, None, allowNone)
    case JStr(s)   => activation(layer, Some(s), allowNone)
    case other     => fail(layer, activationMessage(PyRepr(other), allowNone))
  }

  private def activationMessage(repr: String, allowNone: Boolean) =
    s"activation must be one of ${PyRepr.list(Activations)}${if (allowNone) " or None" else ""}. " +
      s"Received: activation=$repr"

  // -- shapes --------------------------------------------------------------------------------

  /** `(1, 8, 8)`, `(64,)`, `(None, 16)`: a shape as Python prints a tuple, the variable
    * sequence axis ([[Input.Variable]]) as `None`.
    */
  def fmtShape(shape: Seq[Int]): String =
    PyRepr.tuple(shape.map(d => if (d == Input.Variable) JNull else JInt(d)))

  /** Python's `check_fixed_features`: the last axis must have a fixed size. */
  def fixedFeatures(shape: Seq[Int]): Unit =
    if (shape.isEmpty || shape.last == Input.Variable)
      throw ShapeMismatch("(..., features) with a fixed number of features, e.g. (None, 1) for one " +
        "feature per step", shape)

  /** The number of elements of a shape (exact: a high-rank shape can overflow even a `Long`). */
  def product(dims: Seq[Int]): Long =
    try dims.foldLeft(1L)((acc, d) => Math.multiplyExact(acc, d.toLong))
    catch { case _: ArithmeticException => throw tooLarge(dims.map(BigInt(_)).product, dims) }

  /** A computed output dimension: it must fit an `Int` (Python's ints are unbounded). */
  def dimension(size: Long, input: Seq[Int]): Int = {
    if (!size.isValidInt) throw tooLarge(BigInt(size), input)
    size.toInt
  }

  private def tooLarge(size: BigInt, input: Seq[Int]) =
    new ConfigException(s"A dimension of size $size, computed from input shape ${fmtShape(input)}, " +
      "must fit a 32-bit int")
}

/** Thrown by a layer's shape inference; the network turns it into a [[sparkdl.ConfigException]]
  * naming the layer, what it expected and what it received.
  */
private[nn] final class ShapeMismatch(val expected: String, val received: String)
    extends Exception(s"expected input shape $expected, received $received", null, false, false)

private[nn] object ShapeMismatch {
  def apply(expected: String, shape: Seq[Int]): ShapeMismatch = new ShapeMismatch(expected, Checks.fmtShape(shape))
}
