package sparkdl.ml

import java.nio.ByteBuffer
import java.nio.charset.StandardCharsets.UTF_8

import org.scalatest.funsuite.AnyFunSuite

import sparkdl.json.Json._

/** The state Python's `sparkdl.epoch_state.encode_state` writes, read on the Scala driver. */
class EpochStateSuite extends AnyFunSuite {

  /** What `encode_state(Resume(epoch, weights, optimizer, history))` writes. */
  private def encode(header: String, weights: Array[Byte], optimizer: Array[Byte]): Array[Byte] = {
    val h = header.getBytes(UTF_8)
    ByteBuffer.allocate(8 + h.length + weights.length + optimizer.length)
      .putLong(h.length).put(h).put(weights).put(optimizer).array()
  }

  test("the epoch, the history (a diverged loss included) and the weights are read back") {
    val bytes = encode("""{"epoch": 2, "history": [{"epoch": 1, "loss": NaN}, {"epoch": 2, "loss": 0.5}], """ +
      """"weights": 3, "optimizer": 2}""", Array[Byte](1, 2, 3), Array[Byte](9, 9))
    val state = EpochState.parse(bytes)
    assert(state.epoch == 2 && state.bytes.sameElements(bytes))
    assert(state.history.length == 2 && state.history(1) == JObj("epoch" -> JInt(2), "loss" -> JFloat(0.5)))
    assert(state.weights.sameElements(Array[Byte](1, 2, 3)))
  }

  test("anything but a whole state is refused with what is wrong") {
    def refused(bytes: Array[Byte]) = intercept[IllegalArgumentException](EpochState.parse(bytes)).getMessage
    val whole = encode("""{"epoch": 1, "history": [], "weights": 1, "optimizer": 1}""", Array[Byte](1), Array[Byte](2))
    assert(refused(whole.dropRight(1)) == s"a training state of ${whole.length - 1} bytes declares ${whole.length}")
    assert(refused(Array[Byte](0, 0)) == "a training state of 2 bytes has no header")
    assert(refused(ByteBuffer.allocate(12).putLong(1L << 40).array()).startsWith("a training state declares a"))
    assert(refused(encode("""{"epoch": -1, "history": [], "weights": 0, "optimizer": 0}""", Array(), Array())) ==
      "a training state has a malformed header: [epoch, history, optimizer, weights]")
    assert(refused(encode("[1]", Array(), Array())) == "a training state's header is not a JSON object")
  }
}
