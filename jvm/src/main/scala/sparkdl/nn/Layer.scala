package sparkdl.nn

import sparkdl.json.Json._
import sparkdl.json.{CanonicalJson, Json}

/** A layer: its JSON form, the shape it produces from the shapes it receives (batch dimension
  * excluded) and the number of trainable scalars of the PyTorch module it compiles to.
  *
  * Layers are immutable case classes whose attributes mirror the Python ones (camelCase here,
  * snake_case in JSON); constructing one with a bad attribute throws a
  * [[sparkdl.ConfigException]] with Python's message. Apply a layer to symbolic tensors to
  * build a graph (the functional API).
  *
  * Only the layers of this package exist: the PyTorch side must know how to build every
  * layer a spec names, so the set is closed (its members are package-private).
  *
  * Example:
  * {{{
  * import sparkdl.nn._
  * Dense(10).toJson                     // {"activation":null,"type":"Dense","units":10,"use_bias":true}
  * val h = Dense(4, activation = "relu")(Input(Seq(3), name = "x")).named("h")
  * }}}
  */
trait Layer extends Product with Serializable {

  /** The spec's `"type"`: the Python class name, which is also this class's name. */
  def typeName: String = productPrefix

  /** Every attribute, defaults included, as `(snake_case name, value)` in declaration order. */
  private[nn] def attributes: Seq[(String, Json)]

  /** The canonical JSON object of this layer. */
  def toJson: String = CanonicalJson.write(json)

  private[nn] def json: JObj = JObj((("type" -> JStr(typeName)) +: attributes).toVector)

  // -- shapes and parameters (batch dimension excluded) --------------------------------------

  /** How many inputs it takes: Some(1), or None for "two or more" (Add, Concatenate). */
  private[nn] def arity: Option[Int] = Some(1)

  private[nn] def inputDtypes: Seq[String] = Seq("float32")

  /** Whether it takes a variable sequence axis ([[Input.Variable]] first in its input shape);
    * the network refuses such an input for the other layers, naming the layer.
    */
  private[nn] def variableLength: Boolean = false

  /** The dtype produced (float32 unless a layer passes its input's through). */
  private[nn] def outputDtype(dtypes: Seq[String]): String = "float32"

  /** @throws ShapeMismatch when the inputs do not fit this layer. */
  private[nn] def infer(shapes: Seq[Shape]): Shape = outputShape(shapes.head)

  private[nn] def paramCount(shapes: Seq[Shape]): Long = countParams(shapes.head)

  /** Output shape for a one-input layer. */
  protected def outputShape(shape: Shape): Shape

  /** Parameter count for a one-input layer (default: none). */
  protected def countParams(shape: Shape): Long = 0L

  // -- functional API ------------------------------------------------------------------------

  /** This layer applied to symbolic inputs: a graph node, named when the network is made
    * unless [[Node.named]] names it.
    */
  def apply(inputs: Tensor*): Node = new Node(this, inputs.toVector, None)
}
