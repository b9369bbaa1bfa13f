package sparkdl.ml

import java.nio.ByteBuffer
import java.nio.charset.StandardCharsets.UTF_8

import scala.util.control.NonFatal

import sparkdl.json.{Json, JsonParser}
import sparkdl.json.Json._

/** Rank 0's training state after an epoch, as Python's `sparkdl.epoch_state` encodes it and
  * hands the driver ([[DriverRendezvous]]): what a restarted Scala fit resumes from.
  *
  * The driver keeps the bytes as they came and ships them whole to the next attempt's ranks;
  * it reads only the header (the epoch, for the history and the log, and the history of the
  * epochs before it) and, should the state be the last epoch's, the weights. Layout: an
  * 8-byte big-endian header length, a JSON header (`epoch`, `history`, the byte sizes of the
  * `weights` and `optimizer` parts), the weights (safetensors), the optimizer state.
  *
  * {{{
  * val state = EpochState.parse(bytes)   // from DriverRendezvous's onState
  * state.epoch                           // 3: a restart resumes with the fourth epoch
  * }}}
  *
  * @param epoch   epochs finished
  * @param history those epochs' records, as Python wrote them
  * @param bytes   the whole state, for the next attempt
  */
private[ml] final case class EpochState(epoch: Int, history: Vector[Json], bytes: Array[Byte]) {
  private lazy val sizes = EpochState.header(bytes)._2

  /** Rank 0's weights (safetensors) after [[epoch]]. */
  def weights: Array[Byte] = {
    val (start, weightBytes) = sizes
    java.util.Arrays.copyOfRange(bytes, start, start + weightBytes)
  }
}

private[ml] object EpochState {
  /** A header holds epoch numbers and metrics; anything bigger is not a state (Python's cap). */
  private val MaxHeaderBytes = 64 << 20

  /** The state in `bytes`.
    *
    * @throws IllegalArgumentException if they are not a whole state
    */
  def parse(bytes: Array[Byte]): EpochState = {
    val (header, _) = this.header(bytes)
    val epoch = header.get("epoch").collect { case JInt(e) if e >= 0 && e.isValidInt => e.toInt }
    val history = header.get("history").collect { case JArr(items) => items }
    (epoch, history) match {
      case (Some(e), Some(h)) => EpochState(e, h, bytes)
      case _ => throw new IllegalArgumentException(s"a training state has a malformed header: " +
        header.fields.map(_._1).sorted.mkString("[", ", ", "]"))
    }
  }

  /** The header, and where the weights start and how long they are. */
  private def header(bytes: Array[Byte]): (JObj, (Int, Int)) = {
    if (bytes.length < 8) throw new IllegalArgumentException(s"a training state of ${bytes.length} bytes has no header")
    val size = ByteBuffer.wrap(bytes, 0, 8).getLong
    if (size < 0 || size > math.min(MaxHeaderBytes.toLong, bytes.length - 8L))
      throw new IllegalArgumentException(s"a training state declares a $size-byte header in ${bytes.length} bytes")
    val header = try JsonParser.parse(new String(bytes, 8, size.toInt, UTF_8)) catch {
      case NonFatal(e) => throw new IllegalArgumentException(s"a training state's header is not JSON: ${e.getMessage}")
    }
    val obj = header match {
      case o: JObj => o
      case _ => throw new IllegalArgumentException("a training state's header is not a JSON object")
    }
    def part(name: String): Long = obj.get(name).collect { case JInt(n) if n >= 0 && n.isValidLong => n.toLong }
      .getOrElse(throw new IllegalArgumentException(s"a training state's header has no size of its $name"))
    val start = 8 + size
    val (weights, optimizer) = (part("weights"), part("optimizer"))
    if (start + weights + optimizer != bytes.length)
      throw new IllegalArgumentException(s"a training state of ${bytes.length} bytes declares " +
        s"${start + weights + optimizer}")
    (obj, (start.toInt, weights.toInt))
  }
}
