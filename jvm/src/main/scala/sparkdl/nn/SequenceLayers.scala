package sparkdl.nn

import sparkdl.json.Json._
import sparkdl.json.PyRepr
import sparkdl.nn.Checks._

// Sequence layers over (sequence, features): LSTM, GRU, self-attention, Transformer encoder,
// SequencePooling. The sequence axis may be variable (Input.Variable, Python's None): the
// PyTorch module built from the spec then takes each row's length and ignores the padding.

/** A batch-first recurrent layer returning the last step, or every step. */
sealed abstract class Recurrent(gates: Int) extends Layer {
  def units: Int
  def returnSequences: Boolean

  private[nn] def attributes = Seq("units" -> JInt(units), "return_sequences" -> JBool(returnSequences))
  override private[nn] def variableLength = true

  protected def outputShape(shape: Shape): Shape = {
    if (shape.size != 2) throw ShapeMismatch("(sequence, features)", shape)
    if (returnSequences) Vector(shape.head, units) else Vector(units)
  }

  // PyTorch keeps two bias vectors (input-hidden and hidden-hidden) per gate.
  override protected def countParams(shape: Shape): Long = gates.toLong * units * (shape(1).toLong + units + 2)
}

object Recurrent {
  private[nn] def decode[R <: Recurrent](a: Attrs)(make: (Int, Boolean) => R): R = {
    val units = positiveInt(a.kind, "units", a("units"))
    make(units, bool(a.kind, a.getOrElse("return_sequences", JBool(false)),
      repr => s"return_sequences must be a bool. Received: $repr"))
  }
}

/** Long short-term memory; returns the last step unless `returnSequences`.
  *
  * Example:
  * {{{
  * LSTM(16)                          // (20, 8) -> (16,); 1664 parameters
  * LSTM(16, returnSequences = true)  // (20, 8) -> (20, 16)
  * }}}
  */
final case class LSTM(units: Int, returnSequences: Boolean = false) extends Recurrent(4) {
  positiveInt("LSTM", "units", units)
}

object LSTM {
  private[nn] def decode(a: Attrs): LSTM = Recurrent.decode(a)(LSTM(_, _))
}

/** Gated recurrent unit; returns the last step unless `returnSequences`.
  *
  * Example:
  * {{{
  * GRU(16)   // (20, 8) -> (16,)
  * }}}
  */
final case class GRU(units: Int, returnSequences: Boolean = false) extends Recurrent(3) {
  positiveInt("GRU", "units", units)
}

object GRU {
  private[nn] def decode(a: Attrs): GRU = Recurrent.decode(a)(GRU(_, _))
}

/** Self-attention over `(sequence, features)` with `features = numHeads * keyDim`.
  *
  * Example:
  * {{{
  * MultiHeadAttention(numHeads = 4, keyDim = 8)   // (10, 32) -> (10, 32)
  * }}}
  */
final case class MultiHeadAttention(numHeads: Int, keyDim: Int, dropout: Double = 0.0) extends Layer {
  positiveInt("MultiHeadAttention", "num_heads", numHeads)
  positiveInt("MultiHeadAttention", "key_dim", keyDim)
  rate("MultiHeadAttention", "dropout", dropout)

  private[nn] def attributes = Seq("num_heads" -> JInt(numHeads), "key_dim" -> JInt(keyDim),
    "dropout" -> JFloat(dropout))
  override private[nn] def variableLength = true

  protected def outputShape(shape: Shape): Shape = {
    val width = numHeads.toLong * keyDim
    if (shape.size != 2 || shape(1) != width)
      throw ShapeMismatch(s"(sequence, $width) as num_heads * key_dim = $numHeads * $keyDim", shape)
    shape
  }

  override protected def countParams(shape: Shape): Long = {
    val width = shape(1).toLong
    4 * width * width + 4 * width
  }
}

object MultiHeadAttention {
  private[nn] def decode(a: Attrs): MultiHeadAttention = {
    val kind = "MultiHeadAttention"
    val heads = positiveInt(kind, "num_heads", a("num_heads"))
    val keyDim = positiveInt(kind, "key_dim", a("key_dim"))
    MultiHeadAttention(heads, keyDim, rate(kind, "dropout", a.getOrElse("dropout", JFloat(0.0))))
  }
}

/** One post-norm Transformer encoder block (PyTorch's `TransformerEncoderLayer`).
  *
  * Self-attention with `numHeads` heads over `(sequence, d_model)`, then a feed-forward
  * network of width `ffDim`, each with a residual connection and LayerNorm.
  *
  * Example:
  * {{{
  * TransformerEncoder(numHeads = 4, ffDim = 64)   // (10, 32) -> (10, 32)
  * }}}
  */
final case class TransformerEncoder(numHeads: Int, ffDim: Int, dropout: Double = 0.1, activation: String = "relu")
    extends Layer {
  positiveInt("TransformerEncoder", "num_heads", numHeads)
  positiveInt("TransformerEncoder", "ff_dim", ffDim)
  rate("TransformerEncoder", "dropout", dropout)
  check(activation == "relu" || activation == "gelu", "TransformerEncoder",
    s"activation must be 'relu' or 'gelu'. Received: activation=${PyRepr.string(activation)}")

  private[nn] def attributes = Seq("num_heads" -> JInt(numHeads), "ff_dim" -> JInt(ffDim),
    "dropout" -> JFloat(dropout), "activation" -> JStr(activation))
  override private[nn] def variableLength = true

  protected def outputShape(shape: Shape): Shape = {
    if (shape.size != 2 || shape(1) % numHeads != 0)
      throw ShapeMismatch(s"(sequence, d_model) with d_model divisible by num_heads=$numHeads", shape)
    shape
  }

  override protected def countParams(shape: Shape): Long = {
    val (d, ff) = (shape(1).toLong, ffDim.toLong)
    val attention = 4 * d * d + 4 * d
    attention + (d * ff + ff) + (ff * d + d) + 4 * d
  }
}

object TransformerEncoder {
  private[nn] def decode(a: Attrs): TransformerEncoder = {
    val kind = "TransformerEncoder"
    val heads = positiveInt(kind, "num_heads", a("num_heads"))
    val ffDim = positiveInt(kind, "ff_dim", a("ff_dim"))
    val dropout = rate(kind, "dropout", a.getOrElse("dropout", JFloat(0.1)))
    a.getOrElse("activation", JStr("relu")) match {
      case JStr(act) => TransformerEncoder(heads, ffDim, dropout, act)
      case other     => fail(kind, s"activation must be 'relu' or 'gelu'. Received: activation=${PyRepr(other)}")
    }
  }
}

/** Mean or max over the sequence axis: `(sequence, features)` becomes `(features,)`.
  *
  * The sequence may have a variable length ([[Input.Variable]]): the PyTorch module built
  * from the spec, called with each row's length, pools only the valid positions.
  * (`GlobalAveragePooling` is for channels-first `(channels, length)` signals.)
  *
  * @param mode `"mean"` or `"max"`
  *
  * Example:
  * {{{
  * Sequential(Input(Seq(Input.Variable), dtype = "int64"), Embedding(100, 8), SequencePooling(), Dense(2))
  * SequencePooling("max")   // (None, 8) -> (8,)
  * }}}
  */
final case class SequencePooling(mode: String = "mean") extends Layer {
  check(mode == "mean" || mode == "max", "SequencePooling",
    s"mode must be 'mean' or 'max'. Received: mode=${PyRepr.string(mode)}")

  private[nn] def attributes = Seq("mode" -> JStr(mode))
  override private[nn] def variableLength = true

  protected def outputShape(shape: Shape): Shape = {
    if (shape.size != 2) throw ShapeMismatch("(sequence, features)", shape)
    Vector(shape(1))
  }
}

object SequencePooling {
  private[nn] def decode(a: Attrs): SequencePooling =
    a.getOrElse("mode", JStr("mean")) match {
      case JStr(mode) => SequencePooling(mode)
      case other      => fail("SequencePooling", s"mode must be 'mean' or 'max'. Received: mode=${PyRepr(other)}")
    }
}
