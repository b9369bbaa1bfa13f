package sparkdl.nn

import sparkdl.json.Json
import sparkdl.json.Json._
import sparkdl.nn.Checks._

// Convolution and pooling layers, channels first: (C, L) and (C, H, W).

/** Shape arithmetic shared by convolutions and pools (PyTorch's formulas). */
private[nn] object ConvShapes {
  val Layout: Map[Int, String] = Map(1 -> "(channels, length)", 2 -> "(channels, height, width)")

  /** The spatial output sizes, refusing an input of the wrong rank or too small. */
  def outSize(shape: Shape, kernel: Seq[Int], stride: Seq[Int], padding: Seq[Int], dims: Int): Seq[Int] = {
    if (shape.size != dims + 1) throw ShapeMismatch(Layout(dims), shape)
    shape.tail.indices.map { i =>
      val (size, k, s, p) = (shape(i + 1).toLong, kernel(i), stride(i), padding(i))
      // Floor division, as Python's //: a negative numerator must not round up to a size.
      val n = Math.floorDiv(size + 2L * p - k, s.toLong) + 1
      if (n < 1) throw ShapeMismatch(s"${Layout(dims)} with spatial sizes >= ${k - 2 * p}", shape)
      n.toInt
    }
  }
}

/** A convolution over channels-first input (PyTorch's `Conv1d`/`Conv2d`). */
sealed abstract class Conv(dims: Int) extends Layer {
  def filters: Int
  def kernelSize: Spatial
  def stride: Spatial
  def padding: Padding
  def activation: Option[String]
  def useBias: Boolean

  // Called by each subclass's constructor, once its fields are set; Python's __post_init__.
  protected def validate(): Unit = {
    val kind = typeName
    positiveInt(kind, "filters", filters)
    Spatial.check(kind, "kernel_size", kernelSize, dims, 1)
    val strides = Spatial.check(kind, "stride", stride, dims, 1)
    Conv.checkPadding(kind, padding, strides, stride, dims)
    Checks.activation(kind, activation)
  }

  private[nn] def attributes = Seq("filters" -> JInt(filters), "kernel_size" -> kernelSize.json,
    "stride" -> stride.json, "padding" -> padding.json, "activation" -> optional(activation),
    "use_bias" -> JBool(useBias))

  protected def outputShape(shape: Shape): Shape = {
    val kernel = kernelSize.perAxis(dims)
    padding match {
      case Padding.Named(_) =>
        if (shape.size != dims + 1) throw ShapeMismatch(ConvShapes.Layout(dims), shape)
        filters +: shape.tail.toVector
      case Padding.Size(size) =>
        filters +: ConvShapes.outSize(shape, kernel, stride.perAxis(dims), size.perAxis(dims), dims).toVector
    }
  }

  override protected def countParams(shape: Shape): Long =
    shape.head.toLong * product(kernelSize.perAxis(dims)) * filters + (if (useBias) filters else 0)
}

object Conv {
  private[nn] def checkPadding(kind: String, padding: Padding, strides: Seq[Int], stride: Spatial, dims: Int): Unit =
    padding match {
      case Padding.Named("same") =>
        check(strides.forall(_ == 1), kind, s"""padding="same" needs stride=1. Received: stride=${stride.repr}""")
      case Padding.Named(_) =>
        fail(kind, s"""padding must be an int, a pair or "same". Received: padding=${padding.repr}""")
      case Padding.Size(size) => Spatial.check(kind, "padding", size, dims, 0)
    }

  /** Reads and checks every attribute in Python's order, then builds the layer. */
  private[nn] def decode[C <: Conv](a: Attrs, dims: Int)(
      make: (Int, Spatial, Spatial, Padding, Option[String], Boolean) => C): C = {
    val kind = a.kind
    val filters = positiveInt(kind, "filters", a("filters"))
    val kernel = Spatial.decode(kind, "kernel_size", a("kernel_size"), dims, 1)
    val stride = Spatial.decode(kind, "stride", a.getOrElse("stride", JInt(1)), dims, 1)
    val padding: Padding = a.getOrElse("padding", JInt(0)) match {
      case JStr(name) => Padding.Named(name)
      case other      => Padding.Size(Spatial.decode(kind, "padding", other, dims, 0))
    }
    checkPadding(kind, padding, stride.perAxis(dims), stride, dims)
    val act = Checks.activation(kind, a.getOrElse("activation", JNull), allowNone = true)
    make(filters, kernel, stride, padding, act, useBias(kind, a.getOrElse("use_bias", JBool(true))))
  }
}

/** 1-d convolution over `(channels, length)`.
  *
  * Example:
  * {{{
  * Conv1d(4, 3)                         // (2, 10) -> (4, 8)
  * Conv1d(4, 3, padding = "same")       // (2, 10) -> (4, 10)
  * }}}
  */
final case class Conv1d(filters: Int, kernelSize: Spatial, stride: Spatial, padding: Padding,
    activation: Option[String], useBias: Boolean) extends Conv(1) {
  validate()
}

object Conv1d {
  /** @param activation an activation name, or null (the default) for none. */
  def apply(filters: Int, kernelSize: Spatial, stride: Spatial = 1, padding: Padding = 0,
      activation: String = null, useBias: Boolean = true): Conv1d =
    new Conv1d(filters, kernelSize, stride, padding, Option(activation), useBias)

  private[nn] def decode(a: Attrs): Conv1d = Conv.decode(a, 1)(new Conv1d(_, _, _, _, _, _))
}

/** 2-d convolution over `(channels, height, width)`; sizes are ints or pairs.
  *
  * Example:
  * {{{
  * Conv2d(8, 3, activation = "relu")                    // (1, 8, 8) -> (8, 6, 6)
  * Conv2d(8, (3, 2), stride = (2, 1), padding = (1, 0))
  * }}}
  */
final case class Conv2d(filters: Int, kernelSize: Spatial, stride: Spatial, padding: Padding,
    activation: Option[String], useBias: Boolean) extends Conv(2) {
  validate()
}

object Conv2d {
  /** @param activation an activation name, or null (the default) for none. */
  def apply(filters: Int, kernelSize: Spatial, stride: Spatial = 1, padding: Padding = 0,
      activation: String = null, useBias: Boolean = true): Conv2d =
    new Conv2d(filters, kernelSize, stride, padding, Option(activation), useBias)

  private[nn] def decode(a: Attrs): Conv2d = Conv.decode(a, 2)(new Conv2d(_, _, _, _, _, _))
}

/** Max or average pooling over channels-first input; `stride` defaults to `poolSize`. */
sealed abstract class Pool(dims: Int) extends Layer {
  def poolSize: Spatial
  def stride: Option[Spatial]
  def padding: Spatial

  private def params: (Seq[Int], Seq[Int], Seq[Int]) = {
    val kind = typeName
    val kernel = Spatial.check(kind, "pool_size", poolSize, dims, 1)
    val strides = stride.fold(kernel)(Spatial.check(kind, "stride", _, dims, 1))
    (kernel, strides, Spatial.check(kind, "padding", padding, dims, 0))
  }

  protected def validate(): Unit = {
    val (kernel, _, pads) = params
    check(kernel.lazyZip(pads).forall((k, p) => 2 * p <= k), typeName,
      s"padding must be at most half of pool_size. Received: padding=${padding.repr}, pool_size=${poolSize.repr}")
  }

  private[nn] def attributes = Seq("pool_size" -> poolSize.json, "stride" -> stride.fold[Json](JNull)(_.json),
    "padding" -> padding.json)

  protected def outputShape(shape: Shape): Shape = {
    val (kernel, strides, pads) = params
    shape.head +: ConvShapes.outSize(shape, kernel, strides, pads, dims).toVector
  }
}

object Pool {
  private[nn] def decode[P <: Pool](a: Attrs, dims: Int)(make: (Spatial, Option[Spatial], Spatial) => P): P = {
    val kind = a.kind
    val size = Spatial.decode(kind, "pool_size", a("pool_size"), dims, 1)
    val stride = a.getOrElse("stride", JNull) match {
      case JNull => None
      case value => Some(Spatial.decode(kind, "stride", value, dims, 1))
    }
    make(size, stride, Spatial.decode(kind, "padding", a.getOrElse("padding", JInt(0)), dims, 0))
  }
}

/** Max pooling over `(channels, length)`.
  *
  * Example:
  * {{{
  * MaxPool1d(2)   // (4, 9) -> (4, 4)
  * }}}
  */
final case class MaxPool1d(poolSize: Spatial, stride: Option[Spatial], padding: Spatial) extends Pool(1) {
  validate()
}

object MaxPool1d {
  /** @param stride the stride, or null (the default) for `poolSize`. */
  def apply(poolSize: Spatial, stride: Spatial = null, padding: Spatial = 0): MaxPool1d =
    new MaxPool1d(poolSize, Option(stride), padding)

  private[nn] def decode(a: Attrs): MaxPool1d = Pool.decode(a, 1)(new MaxPool1d(_, _, _))
}

/** Max pooling over `(channels, height, width)`.
  *
  * Example:
  * {{{
  * MaxPool2d(2)                          // (8, 6, 6) -> (8, 3, 3)
  * MaxPool2d(3, stride = 1, padding = 1) // (3, 5, 5) -> (3, 5, 5)
  * }}}
  */
final case class MaxPool2d(poolSize: Spatial, stride: Option[Spatial], padding: Spatial) extends Pool(2) {
  validate()
}

object MaxPool2d {
  /** @param stride the stride, or null (the default) for `poolSize`. */
  def apply(poolSize: Spatial, stride: Spatial = null, padding: Spatial = 0): MaxPool2d =
    new MaxPool2d(poolSize, Option(stride), padding)

  private[nn] def decode(a: Attrs): MaxPool2d = Pool.decode(a, 2)(new MaxPool2d(_, _, _))
}

/** Average pooling over `(channels, length)`.
  *
  * Example:
  * {{{
  * AvgPool1d(3, stride = 1)   // (4, 9) -> (4, 7)
  * }}}
  */
final case class AvgPool1d(poolSize: Spatial, stride: Option[Spatial], padding: Spatial) extends Pool(1) {
  validate()
}

object AvgPool1d {
  /** @param stride the stride, or null (the default) for `poolSize`. */
  def apply(poolSize: Spatial, stride: Spatial = null, padding: Spatial = 0): AvgPool1d =
    new AvgPool1d(poolSize, Option(stride), padding)

  private[nn] def decode(a: Attrs): AvgPool1d = Pool.decode(a, 1)(new AvgPool1d(_, _, _))
}

/** Average pooling over `(channels, height, width)`.
  *
  * Example:
  * {{{
  * AvgPool2d(2)   // (8, 6, 6) -> (8, 3, 3)
  * }}}
  */
final case class AvgPool2d(poolSize: Spatial, stride: Option[Spatial], padding: Spatial) extends Pool(2) {
  validate()
}

object AvgPool2d {
  /** @param stride the stride, or null (the default) for `poolSize`. */
  def apply(poolSize: Spatial, stride: Spatial = null, padding: Spatial = 0): AvgPool2d =
    new AvgPool2d(poolSize, Option(stride), padding)

  private[nn] def decode(a: Attrs): AvgPool2d = Pool.decode(a, 2)(new AvgPool2d(_, _, _))
}

/** Average over every position: `(C, L)` or `(C, H, W)` becomes `(C,)`.
  *
  * Example:
  * {{{
  * GlobalAveragePooling()   // (8, 4, 4) -> (8,)
  * }}}
  */
final case class GlobalAveragePooling() extends Layer {
  private[nn] def attributes = Seq.empty

  protected def outputShape(shape: Shape): Shape = {
    if (shape.size != 2 && shape.size != 3)
      throw ShapeMismatch(s"${ConvShapes.Layout(1)} or ${ConvShapes.Layout(2)}", shape)
    Vector(shape.head)
  }
}

object GlobalAveragePooling {
  private[nn] def decode(a: Attrs): GlobalAveragePooling = GlobalAveragePooling()
}
