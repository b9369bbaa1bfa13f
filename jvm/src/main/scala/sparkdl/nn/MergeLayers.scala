package sparkdl.nn

import sparkdl.json.Json._
import sparkdl.json.PyRepr
import sparkdl.nn.Checks._

// Layers joining several inputs in a functional graph: Add and Concatenate.

/** A layer taking two or more inputs. */
sealed abstract class Merge extends Layer {
  override private[nn] def arity: Option[Int] = None
  override private[nn] def paramCount(shapes: Seq[Shape]): Long = 0L
  protected def outputShape(shape: Shape): Shape = infer(Seq(shape))
}

private[nn] object Merge {
  /** `[(8,), (4,)]`: several shapes, as Python prints them in messages. */
  def shapes(shapes: Seq[Shape]): String = shapes.map(fmtShape).mkString("[", ", ", "]")
}

/** Elementwise sum of two or more inputs of the same shape.
  *
  * Example:
  * {{{
  * val (a, b) = (Input(Seq(8), name = "a"), Input(Seq(8), name = "b"))
  * Network(inputs = Seq(a, b), outputs = Add()(a, b))   // output (8,)
  * }}}
  */
final case class Add() extends Merge {
  private[nn] def attributes = Seq.empty
  override private[nn] def variableLength = true

  override private[nn] def infer(shapes: Seq[Shape]): Shape = {
    if (shapes.map(_.toVector).distinct.size != 1)
      throw new ShapeMismatch(s"${fmtShape(shapes.head)} for every input", Merge.shapes(shapes))
    shapes.head
  }
}

object Add {
  private[nn] def decode(a: Attrs): Add = Add()
}

/** Join two or more inputs along `axis`.
  *
  * `axis` counts the batch dimension as 0, as `torch.cat` and Keras do, so the default -1 is
  * the last axis; axis 0 (the batch) is refused.
  *
  * Example:
  * {{{
  * Concatenate()          // (4, 3) and (4, 5) -> (4, 8)
  * Concatenate(axis = 1)  // (2, 5) and (3, 5) -> (5, 5)
  * }}}
  */
final case class Concatenate(axis: Int = -1) extends Merge {
  check(axis != 0, "Concatenate", s"axis must be a non-zero int (0 is the batch). Received: axis=$axis")

  private[nn] def attributes = Seq("axis" -> JInt(axis))
  override private[nn] def variableLength = true

  /** The axis as an index into the shape without the batch dimension. */
  private def dim(rank: Int): Int = if (axis > 0) axis - 1 else rank + axis

  override private[nn] def infer(shapes: Seq[Shape]): Shape = {
    val rank = shapes.head.size
    val d = dim(rank)
    def without(s: Shape) = s.take(d) ++ s.drop(d + 1)
    if (!(0 <= d && d < rank) || !shapes.forall(_.size == rank) || shapes.map(without(_).toVector).distinct.size != 1)
      throw new ShapeMismatch(s"shapes of one rank, equal on every axis but axis=$axis", Merge.shapes(shapes))
    if (shapes.head(d) == Input.Variable)
      throw new ShapeMismatch(s"a fixed size on axis=$axis (it is the variable sequence axis)", Merge.shapes(shapes))
    val total = shapes.iterator.map(_(d).toLong).sum
    (shapes.head.take(d) :+ dimension(total, shapes.head)) ++ shapes.head.drop(d + 1)
  }
}

object Concatenate {
  private[nn] def decode(a: Attrs): Concatenate = {
    val value = a.getOrElse("axis", JInt(-1))
    Concatenate(int("Concatenate", "axis", value,
      s"axis must be a non-zero int (0 is the batch). Received: axis=${PyRepr(value)}"))
  }
}
