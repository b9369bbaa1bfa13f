package sparkdl.nn

import sparkdl.json.Json._
import sparkdl.json.{Json, PyRepr}
import sparkdl.nn.Checks._

// Core layers: Dense, Activation, Dropout, Flatten, Reshape, BatchNorm, LayerNorm, Embedding.
// Shapes exclude the batch dimension and follow PyTorch's layout: channels first for images
// and signals, (sequence, features) for sequences.

/** A fully connected layer on the last axis; its input features come from the input shape.
  *
  * @param units      output features
  * @param activation one of `relu, gelu, tanh, sigmoid, softmax, leaky_relu`, or none
  * @param useBias    whether to add a bias
  *
  * Example:
  * {{{
  * Dense(10, activation = "relu")   // (5, 64) -> (5, 10); 650 parameters on (64,)
  * }}}
  */
final case class Dense(units: Int, activation: Option[String], useBias: Boolean) extends Layer {
  positiveInt("Dense", "units", units)
  Checks.activation("Dense", activation)

  private[nn] def attributes = Seq("units" -> JInt(units), "activation" -> optional(activation),
    "use_bias" -> JBool(useBias))
  override private[nn] def variableLength = true
  protected def outputShape(shape: Shape): Shape = {
    fixedFeatures(shape)
    shape.init :+ units
  }
  override protected def countParams(shape: Shape): Long = shape.last.toLong * units + (if (useBias) units else 0)
}

object Dense {
  /** @param activation an activation name, or null (the default) for none, as Python's None. */
  def apply(units: Int, activation: String = null, useBias: Boolean = true): Dense =
    new Dense(units, Option(activation), useBias)

  private[nn] def decode(a: Attrs): Dense = {
    val units = positiveInt("Dense", "units", a("units"))
    val act = Checks.activation("Dense", a.getOrElse("activation", JNull), allowNone = true)
    new Dense(units, act, useBias("Dense", a.getOrElse("use_bias", JBool(true))))
  }
}

/** An elementwise activation (softmax over the last axis).
  *
  * Example:
  * {{{
  * Activation("softmax")   // (10,) -> (10,)
  * }}}
  */
final case class Activation(name: String) extends Layer {
  Checks.activation("Activation", Some(name), allowNone = false)

  private[nn] def attributes = Seq("name" -> JStr(name))
  override private[nn] def variableLength = true
  protected def outputShape(shape: Shape): Shape = shape
}

object Activation {
  private[nn] def decode(a: Attrs): Activation =
    Activation(Checks.activation("Activation", a("name"), allowNone = false).get)
}

/** Zero each element with probability `rate` while training.
  *
  * Example:
  * {{{
  * Dropout(0.1)   // shape unchanged
  * }}}
  */
final case class Dropout(rate: Double) extends Layer {
  Checks.rate("Dropout", "rate", rate)

  private[nn] def attributes = Seq("rate" -> JFloat(rate))
  override private[nn] def variableLength = true
  protected def outputShape(shape: Shape): Shape = shape
}

object Dropout {
  private[nn] def decode(a: Attrs): Dropout = Dropout(Checks.rate("Dropout", "rate", a("rate")))
}

/** Flatten everything but the batch dimension; passes int64 token ids through.
  *
  * Example:
  * {{{
  * Flatten()   // (8, 3, 3) -> (72,)
  * }}}
  */
final case class Flatten() extends Layer {
  private[nn] def attributes = Seq.empty
  override private[nn] def inputDtypes = Dtypes
  override private[nn] def outputDtype(dtypes: Seq[String]) = dtypes.head
  protected def outputShape(shape: Shape): Shape = Vector(dimension(product(shape), shape))
}

object Flatten {
  private[nn] def decode(a: Attrs): Flatten = Flatten()
}

/** Reshape to `shape` (batch dimension excluded; one entry may be -1, inferred).
  *
  * Example:
  * {{{
  * Reshape(Seq(1, 8, 8))   // (64,) -> (1, 8, 8)
  * }}}
  */
final case class Reshape(shape: Seq[Int]) extends Layer {
  check(shape.nonEmpty && shape.forall(d => d == -1 || d >= 1) && shape.count(_ == -1) <= 1, "Reshape",
    s"shape must be positive ints with at most one -1. Received: shape=${PyRepr.tuple(shape)}")

  private[nn] def attributes = Seq("shape" -> JArr(shape.map(d => JInt(d)).toVector))
  override private[nn] def inputDtypes = Dtypes
  override private[nn] def outputDtype(dtypes: Seq[String]) = dtypes.head

  protected def outputShape(in: Shape): Shape = {
    val (size, known) = (product(in), product(shape.filter(_ != -1)))
    if (shape.contains(-1)) {
      if (size % known != 0) throw ShapeMismatch(s"a size divisible by $known to fill ${PyRepr.tuple(shape)}", in)
      shape.map(d => if (d == -1) dimension(size / known, in) else d).toVector
    } else {
      if (size != known) throw ShapeMismatch(s"$known elements to fill ${PyRepr.tuple(shape)}", in)
      shape.toVector
    }
  }
}

object Reshape {
  private[nn] def decode(a: Attrs): Reshape = {
    val value = a("shape")
    // Python turns a scalar into a one-element tuple, and prints the tuple when refusing it.
    val items = value match { case JArr(xs) => xs; case x => Vector(x) }
    def refuse = fail("Reshape", s"shape must be positive ints with at most one -1. Received: shape=${PyRepr.tuple(items)}")
    Reshape(items.map {
      case item: JInt => int("Reshape", "shape", item, "")
      case _          => refuse
    })
  }
}

/** Batch normalisation over channels: 1d for `(features,)` or `(C, L)`, 2d for `(C, H, W)`.
  *
  * Example:
  * {{{
  * BatchNorm()   // 16 parameters on (8, 6, 6)
  * }}}
  */
final case class BatchNorm(momentum: Double = 0.1, epsilon: Double = 1e-5) extends Layer {
  BatchNorm.checkMomentum(momentum)
  BatchNorm.checkEpsilon("BatchNorm", epsilon)

  private[nn] def attributes = Seq("momentum" -> JFloat(momentum), "epsilon" -> JFloat(epsilon))

  protected def outputShape(shape: Shape): Shape = {
    if (shape.size < 1 || shape.size > 3)
      throw ShapeMismatch("(features,), (channels, length) or (channels, height, width)", shape)
    shape
  }

  override protected def countParams(shape: Shape): Long = 2L * shape.head
}

object BatchNorm {
  private def momentumMessage(repr: String) = s"momentum must be a float in [0, 1]. Received: momentum=$repr"
  private def epsilonMessage(repr: String) = s"epsilon must be a positive, finite float. Received: epsilon=$repr"

  private def checkMomentum(m: Double): Double = {
    check(m >= 0 && m <= 1, "BatchNorm", momentumMessage(PyRepr.float(m)))
    m
  }

  private[nn] def checkEpsilon(layer: String, e: Double): Double = {
    check(e > 0 && !e.isInfinite, layer, epsilonMessage(PyRepr.float(e)))
    e
  }

  /** Epsilon of BatchNorm or LayerNorm read from JSON (any number; Python stores a float). */
  private[nn] def epsilon(layer: String, a: Attrs): Double = {
    val value = a.getOrElse("epsilon", JFloat(1e-5))
    checkEpsilon(layer, number(value).getOrElse(fail(layer, epsilonMessage(PyRepr(value)))))
  }

  private[nn] def decode(a: Attrs): BatchNorm = {
    val value = a.getOrElse("momentum", JFloat(0.1))
    val momentum = checkMomentum(number(value).getOrElse(fail("BatchNorm", momentumMessage(PyRepr(value)))))
    BatchNorm(momentum, epsilon("BatchNorm", a))
  }
}

/** Layer normalisation over the last axis, with a learned scale and shift.
  *
  * Example:
  * {{{
  * LayerNorm()   // 64 parameters on (10, 32)
  * }}}
  */
final case class LayerNorm(epsilon: Double = 1e-5) extends Layer {
  BatchNorm.checkEpsilon("LayerNorm", epsilon)

  private[nn] def attributes = Seq("epsilon" -> JFloat(epsilon))
  override private[nn] def variableLength = true
  protected def outputShape(shape: Shape): Shape = {
    fixedFeatures(shape)
    shape
  }
  override protected def countParams(shape: Shape): Long = 2L * shape.last
}

object LayerNorm {
  private[nn] def decode(a: Attrs): LayerNorm = LayerNorm(BatchNorm.epsilon("LayerNorm", a))
}

/** Look up a vector of `outputDim` for each token id in `[0, inputDim)`.
  *
  * Its input is int64 token ids (an `Input` with `dtype = "int64"`). A variable sequence
  * length passes through: `Input(Seq(Input.Variable), dtype = "int64")` gives `(None, outputDim)`.
  *
  * Example:
  * {{{
  * Embedding(1000, 16)   // (20,) -> (20, 16); (None,) -> (None, 16)
  * }}}
  */
final case class Embedding(inputDim: Int, outputDim: Int) extends Layer {
  positiveInt("Embedding", "input_dim", inputDim)
  positiveInt("Embedding", "output_dim", outputDim)

  private[nn] def attributes = Seq("input_dim" -> JInt(inputDim), "output_dim" -> JInt(outputDim))
  override private[nn] def inputDtypes = Seq("int64")
  override private[nn] def variableLength = true
  protected def outputShape(shape: Shape): Shape = shape.toVector :+ outputDim
  override protected def countParams(shape: Shape): Long = inputDim.toLong * outputDim
}

object Embedding {
  private[nn] def decode(a: Attrs): Embedding = {
    val inputDim = positiveInt("Embedding", "input_dim", a("input_dim"))
    Embedding(inputDim, positiveInt("Embedding", "output_dim", a("output_dim")))
  }
}

/** A JSON `null` for None: how Python writes an absent optional attribute. */
private[nn] object optional {
  def apply(value: Option[String]): Json = value.fold[Json](JNull)(JStr(_))
}
