package sparkdl.nn

import sparkdl.ConfigException

/** A stack of layers, each fed by the one before.
  *
  * Example:
  * {{{
  * import sparkdl.nn._
  * val net = Sequential(Input(Seq(64)), Dense(32, activation = "relu"), Dropout(0.1), Dense(10))
  *   .withLoss("cross_entropy")
  *   .withOptimizer("adam", "lr" -> 0.001)
  * net.outputShape   // Vector(10)
  * net.paramCount    // 2410
  * Sequential(Seq(Dense(32), Dense(10)), inputShape = Seq(64))   // the input named "input"
  * }}}
  */
final class Sequential private[nn] (ins: Seq[Input], val layers: Seq[Layer], loss: Option[Head], optimizer: Option[Head])
    extends Network(ins, Network.Stack(layers), loss, optimizer) {

  override def withLoss(name: String, params: (String, Any)*): Sequential =
    new Sequential(inputs, layers, Some(Head.of(name, params)), optimizer)

  override def withOptimizer(name: String, params: (String, Any)*): Sequential =
    new Sequential(inputs, layers, loss, Some(Head.of(name, params)))
}

object Sequential {

  /** An input followed by layers, as Python's `Sequential([Input(shape), *layers])`.
    *
    * @throws ConfigException without layers, or for a layer that cannot take its input,
    *                         naming it (`Layer 1 (Conv2d) expected input shape ...`)
    */
  def apply(input: Input, layers: Layer*): Sequential = {
    if (layers.isEmpty) throw new ConfigException("A Sequential needs at least one layer. Received: layers=[]")
    new Sequential(Seq(input), layers.toVector, None, None)
  }

  /** Layers on an input of `inputShape` (batch dimension excluded), named `"input"`, as
    * Python's `Sequential(layers, input_shape=...)`.
    *
    * @param inputDtype `"float32"`, or `"int64"` for token ids fed to [[Embedding]]
    */
  def apply(layers: Seq[Layer], inputShape: Seq[Int], inputDtype: String = "float32"): Sequential =
    apply(Input(inputShape, dtype = inputDtype), layers: _*)
}
