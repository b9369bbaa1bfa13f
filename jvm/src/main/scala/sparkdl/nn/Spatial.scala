package sparkdl.nn

import scala.language.implicitConversions

import sparkdl.json.Json
import sparkdl.json.Json._
import sparkdl.json.PyRepr

/** A kernel size, stride or padding: one int for every spatial axis, or one per axis.
  *
  * The two forms are kept apart because the spec writes what was given: `3` stays `3` and
  * `(3, 3)` stays `[3, 3]`, as in Python. Ints, pairs and sequences convert implicitly, so
  * `Conv2d(8, kernelSize = 3)` and `Conv2d(8, kernelSize = (3, 2))` both read naturally.
  */
sealed trait Spatial {
  /** The value for each of `dims` axes (a tuple of another length is returned as it is). */
  private[nn] def perAxis(dims: Int): Seq[Int]
  private[nn] def json: Json
  /** As Python prints it: `3` or `(3, 2)`. */
  private[nn] def repr: String
}

object Spatial {
  final case class Scalar(value: Int) extends Spatial {
    private[nn] def perAxis(dims: Int) = Seq.fill(dims)(value)
    private[nn] def json = JInt(value)
    private[nn] def repr = value.toString
  }

  final case class PerAxis(values: Seq[Int]) extends Spatial {
    private[nn] def perAxis(dims: Int) = values
    private[nn] def json = JArr(values.map(v => JInt(v)).toVector)
    private[nn] def repr = PyRepr.tuple(values)
  }

  implicit def fromInt(value: Int): Spatial = Scalar(value)
  implicit def fromPair(value: (Int, Int)): Spatial = PerAxis(Seq(value._1, value._2))
  implicit def fromSeq(values: Seq[Int]): Spatial = PerAxis(values)

  /** Python's `_spatial`: the per-axis values, each at least `minimum`. */
  private[nn] def check(layer: String, field: String, value: Spatial, dims: Int, minimum: Int): Seq[Int] = {
    val values = value.perAxis(dims)
    Checks.check(values.size == dims && values.forall(_ >= minimum), layer, message(field, value.repr, dims, minimum))
    values
  }

  private def message(field: String, repr: String, dims: Int, minimum: Int) =
    s"$field must be an int >= $minimum${if (dims == 2) " or a pair of them" else ""}. Received: $field=$repr"

  /** A spatial attribute read from JSON: an int or a list of ints (checked like Python's). */
  private[nn] def decode(layer: String, field: String, value: Json, dims: Int, minimum: Int): Spatial = {
    // Python holds a JSON list as a tuple, and prints it so when refusing it.
    def refuse(repr: String) = Checks.fail(layer, message(field, repr, dims, minimum))
    val spatial = value match {
      case JInt(_) => Scalar(Checks.int(layer, field, value, ""))
      case JArr(items) =>
        PerAxis(items.map {
          case item: JInt => Checks.int(layer, field, item, "")
          case _          => refuse(PyRepr.tuple(items))
        })
      case other => refuse(PyRepr(other))
    }
    check(layer, field, spatial, dims, minimum)
    spatial
  }
}

/** A convolution's padding: a [[Spatial]] size, or `"same"` (stride 1 only).
  *
  * Example:
  * {{{
  * Conv2d(8, 3, padding = "same"); Conv2d(8, 3, padding = 1); Conv2d(8, 3, padding = (1, 0))
  * }}}
  */
sealed trait Padding {
  private[nn] def json: Json
  private[nn] def repr: String
}

object Padding {
  final case class Size(size: Spatial) extends Padding {
    private[nn] def json = size.json
    private[nn] def repr = size.repr
  }

  /** A named padding; only `"same"` is valid (any other name fails when the layer is made). */
  final case class Named(name: String) extends Padding {
    private[nn] def json = JStr(name)
    private[nn] def repr = PyRepr.string(name)
  }

  val Same: Padding = Named("same")

  implicit def fromInt(value: Int): Padding = Size(Spatial.Scalar(value))
  implicit def fromPair(value: (Int, Int)): Padding = Size(Spatial.fromPair(value))
  implicit def fromSeq(values: Seq[Int]): Padding = Size(Spatial.PerAxis(values))
  implicit def fromString(name: String): Padding = Named(name)
}
