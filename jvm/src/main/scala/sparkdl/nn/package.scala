package sparkdl

/** Declarative networks: one spec in Scala or Python, compiled to PyTorch modules by the
  * Python worker.
  *
  * A network is a stack of layers ([[Sequential]]) or a graph of them ([[Network]] with the
  * functional API). Its JSON form, `sparkdl.network/v1`, is canonical and language-neutral:
  * the same network written here or in Python (`sparkdl.nn`) gives the same bytes, with every
  * shape inferred (batch dimension excluded) when the network is made.
  *
  * Example:
  * {{{
  * import sparkdl.nn._
  *
  * val mlp = Sequential(Input(Seq(64)), Dense(32, activation = "relu"), Dropout(0.1), Dense(10))
  *
  * val x = Input(Seq(64), name = "x")
  * val out = Dense(10)(Dense(32, activation = "relu")(x))
  * Network(inputs = x, outputs = out).paramCount == mlp.paramCount   // true
  *
  * Network.fromJson(mlp.toJson) == mlp                                 // true
  * }}}
  */
package object nn {

  /** A shape without the batch dimension, e.g. `Seq(1, 8, 8)`. */
  type Shape = Seq[Int]

  /** `Linear` is `Dense`, as in Python (PyTorch's name for it). */
  type Linear = Dense
  val Linear: Dense.type = Dense

  /** The spec format: `"sparkdl.network/v1"`. */
  val Format: String = Network.Format

  /** Every layer type a spec may name, sorted (Python's `sorted(LAYERS)`). */
  def layerTypes: Seq[String] = LayerCodec.types
}
