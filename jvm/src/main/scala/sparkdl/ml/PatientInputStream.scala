package sparkdl.ml

import java.io.InputStream
import java.net.SocketTimeoutException

/** A socket's input that waits through its read timeouts, calling `onTimeout` at each one.
  *
  * Why: a Spark task blocked on a socket must notice that it was killed (a failed barrier
  * peer, a cancelled job) or that a deadline passed; with the socket's `soTimeout` set to a
  * second, `onTimeout` runs once a second and stops the wait by throwing.
  *
  * {{{
  * socket.setSoTimeout(1000)
  * val in = new PatientInputStream(socket.getInputStream, () => checkTaskAlive())
  * }}}
  */
private[ml] final class PatientInputStream(underlying: InputStream, onTimeout: () => Unit) extends InputStream {
  override def read(): Int = retry(underlying.read())
  override def read(b: Array[Byte], off: Int, len: Int): Int = retry(underlying.read(b, off, len))

  private def retry(op: => Int): Int = {
    var result = Int.MinValue
    while (result == Int.MinValue) {
      try result = op
      catch { case _: SocketTimeoutException => onTimeout() }
    }
    result
  }
}
