package sparkdl.nn

import sparkdl.json.Json._
import sparkdl.json.PyRepr

/** A symbolic tensor of the functional API: a network [[Input]] or a layer's output ([[Node]]). */
sealed trait Tensor

/** A network input: its shape without the batch dimension, its name and dtype.
  *
  * The first dimension may be [[Input.Variable]], a variable sequence length (Python's `None`,
  * JSON `null`): each batch is padded to its longest row, and the PyTorch module built from the
  * spec is called as `module(x, lengths)` with each row's true length, so its sequence layers
  * ignore the padding.
  *
  * @param shape non-empty, positive dimensions, e.g. `Seq(1, 8, 8)` for a one-channel 8x8 image;
  *              the first may be `Input.Variable`
  * @param name  the input's name in the spec (`[A-Za-z_][A-Za-z0-9_]*`)
  * @param dtype `"float32"`, or `"int64"` for token ids fed to [[Embedding]]
  *
  * Example:
  * {{{
  * Input(Seq(64))                                  // name "input", float32
  * Input(Seq(20), name = "tokens", dtype = "int64")
  * Input(Seq(Input.Variable), name = "tokens", dtype = "int64")   // shape [null]: any length
  * }}}
  */
final case class Input(shape: Seq[Int], name: String = "input", dtype: String = "float32") extends Tensor {
  Checks.check(shape.nonEmpty && shape.forall(d => d >= 1 || d == Input.Variable), "Input",
    s"shape must be a non-empty sequence of positive ints. Received: shape=${Checks.fmtShape(shape)}")
  Checks.check(!shape.drop(1).contains(Input.Variable), "Input",
    s"only the first axis may be None (a variable sequence length). Received: shape=${Checks.fmtShape(shape)}")
  Checks.check(Checks.isName(name), "Input",
    s"name must match ${Checks.NamePattern}. Received: name=${PyRepr.string(name)}")
  Checks.check(Checks.Dtypes.contains(dtype), "Input",
    s"dtype must be one of ${PyRepr.list(Checks.Dtypes)}. Received: dtype=${PyRepr.string(dtype)}")

  private[nn] def json: JObj = JObj("name" -> JStr(name),
    "shape" -> JArr(shape.map(d => if (d == Input.Variable) JNull else JInt(d)).toVector),
    "dtype" -> JStr(dtype))
}

object Input {
  /** A variable sequence length, as the first dimension of a shape: Python's `None`, JSON
    * `null`. Inferred shapes carry it too, e.g. `Embedding(1000, 16)` on `Seq(Variable)` gives
    * `Seq(Variable, 16)`.
    *
    * Example:
    * {{{
    * Input(Seq(Input.Variable), name = "tokens", dtype = "int64")
    * }}}
    */
  final val Variable: Int = -1
}

/** The output of `layer` applied to `inputs`: made by calling a layer, e.g. `Dense(10)(x)`.
  *
  * Nodes are compared by identity, as in Python: applying an equal layer twice gives two
  * nodes (two sets of weights), and reusing one node value reuses its output.
  *
  * @param name the node's name in the spec; None for one chosen when the network is made
  *             (the layer type in snake_case, then `_1`, `_2`, ... as Keras does)
  */
final class Node private[nn] (val layer: Layer, val inputs: Seq[Tensor], val name: Option[String]) extends Tensor {

  /** The same node with a name in the spec.
    *
    * @throws sparkdl.ConfigException unless `name` matches `[A-Za-z_][A-Za-z0-9_]*`
    */
  def named(name: String): Node = {
    if (!Checks.isName(name))
      throw new sparkdl.ConfigException(
        s"A node name must match ${Checks.NamePattern}. Received: name=${PyRepr.string(name)}")
    new Node(layer, inputs, Some(name))
  }

  override def toString: String = s"Node(${layer.typeName}, ${name.fold("unnamed")(PyRepr.string)})"
}
