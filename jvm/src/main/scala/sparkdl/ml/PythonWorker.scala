package sparkdl.ml

import java.io._
import java.net.{InetAddress, InetSocketAddress, Socket, SocketTimeoutException}
import java.nio.ByteBuffer
import java.nio.channels.{SelectionKey, Selector, ServerSocketChannel, SocketChannel}
import java.nio.charset.StandardCharsets.UTF_8
import java.security.{MessageDigest, SecureRandom}
import java.util.concurrent.TimeUnit
import javax.crypto.Mac
import javax.crypto.spec.SecretKeySpec

import scala.collection.mutable
import scala.jdk.CollectionConverters._

import org.apache.spark.{SparkException, TaskContext}

/** One `python -m sparkdl.worker` process, over a loopback socket, serving one request at a
  * time; [[PythonWorkerPool]] keeps it warm between Spark tasks.
  *
  * The JVM listens on an ephemeral loopback port, starts the worker with the port as its
  * argument and a fresh per-process secret in `SPARKDL_WORKER_SECRET`, and talks only to a
  * peer that proves it holds that secret. Other local users see the port (`ps`,
  * `/proc/net/tcp`), so the handshake assumes any peer may be hostile: every connection gets
  * a random challenge and has [[PythonWorker.HandshakeTimeoutMs]] to answer it with a fixed
  * 64-byte AUTH frame (nonce and HMAC), read without blocking and without any allocation
  * sized by the peer, at most [[PythonWorker.MaxPendingPeers]] at once; a stranger is dropped
  * and the listener keeps accepting until the worker proves itself, its process exits, the
  * task is killed or [[PythonWorker.ConnectTimeoutS]] passes. The JVM then proves itself to
  * the worker in turn, which reads no request before that (the handshake is tabled in
  * `sparkdl/worker/jvm_worker.py`). Frames are `[kind: int32][length: int64][payload]`, as
  * in `sparkdl/worker/jvm_worker.py`; a request is REQUEST, its input frames, then the
  * worker's answers up to DONE, after which the worker waits for the next REQUEST (or exits
  * when the socket closes). The worker's stdout and stderr are copied to this executor's
  * stderr (the executor log), and their last lines are kept for error messages: a worker that
  * crashes or reports an error fails the task with its own text. Reads wait in one-second
  * slices, so a killed task (a failed barrier peer) stops its worker instead of waiting on it.
  *
  * @param python the Python executable
  * @param env    environment entries for the process (besides the executor's own)
  * @param task   what the worker serves first, for messages (e.g. "rank 0")
  */
private[ml] final class PythonWorker(val python: String, env: Map[String, String], task: String) extends Closeable {
  import PythonWorker._

  @volatile private var what = task
  private val tail = mutable.Queue.empty[String]
  private val server: ServerSocketChannel = {
    val channel = ServerSocketChannel.open()
    try {
      channel.bind(new InetSocketAddress(InetAddress.getLoopbackAddress, 0), MaxPendingPeers)
      channel.configureBlocking(false)
      channel
    } catch {
      case e: IOException => channel.close(); throw e
    }
  }
  // Hex text: the environment carries it, and both ends use its UTF-8 bytes as the HMAC key.
  private val secret = {
    val bytes = new Array[Byte](32)
    random.nextBytes(bytes)
    bytes.map("%02x".format(_)).mkString
  }
  private val key = secret.getBytes(UTF_8)
  private val process: Process = {
    val port = server.socket().getLocalPort
    val builder = new ProcessBuilder(python, "-u", "-m", "sparkdl.worker", port.toString)
    env.foreach { case (k, v) => builder.environment().put(k, v) }
    builder.environment().put(SecretEnv, secret)
    builder.redirectErrorStream(true)
    try builder.start()
    catch {
      case e: IOException =>
        server.close()
        throw new SparkException(
          s"Cannot start the sparkdl Python worker '$python' for $what: ${e.getMessage}. Set " +
            "spark.pyspark.python (or PYSPARK_PYTHON) to a Python that has sparkdl installed.", e)
    }
  }

  /** The worker's process id (it reports the same one in a training history). */
  val pid: Long = process.pid()

  private val pump = {
    val t = new Thread(() => {
      // Never let this thread throw: an uncaught exception stops the whole executor.
      try {
        val in = new BufferedReader(new InputStreamReader(process.getInputStream, UTF_8))
        var line = in.readLine()
        while (line != null) {
          System.err.println(s"[sparkdl worker $pid] $line")
          tail.synchronized {
            tail.enqueue(line)
            if (tail.size > TailLines) tail.dequeue()
          }
          line = in.readLine()
        }
      } catch {
        case _: Throwable => () // the process was stopped; its output ends here
      }
    }, s"sparkdl-worker-output-$pid")
    t.setDaemon(true)
    t.start()
    t
  }
  private var socket: Socket = _
  private var raw: InputStream = _
  private var in: DataInputStream = _
  private var out: DataOutputStream = _
  @volatile private var closed = false
  // Between requests: no REQUEST sent since the last DONE. Only such a worker can be reused.
  @volatile private var settled = true

  connect()

  /** Accepts connections until one proves it is this worker, then proves this JVM to it.
    *
    * Why non-blocking: a peer that connects first and stays silent, trickles bytes or declares
    * a huge frame must cost neither time nor memory; with a selector every pending
    * handshake advances as its bytes come, each under its own deadline, and the worker's
    * connection is served as soon as it arrives, whoever came before it.
    */
  private def connect(): Unit = {
    val selector = Selector.open()
    val pending = mutable.LinkedHashMap.empty[SocketChannel, Handshake]
    var dropped = 0
    def drop(h: Handshake): Unit = {
      pending.remove(h.channel)
      try h.channel.close() catch { case _: IOException => () }
      dropped += 1
    }
    var proved: Handshake = null
    try {
      server.register(selector, SelectionKey.OP_ACCEPT)
      val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(ConnectTimeoutS)
      while (proved == null) {
        selector.select(SelectMs)
        val ready = selector.selectedKeys().asScala.toList
        selector.selectedKeys().clear()
        for (sk <- ready if proved == null && sk.isValid) {
          if (sk.isAcceptable) {
            var channel = server.accept()
            while (channel != null) {
              if (pending.size >= MaxPendingPeers) { channel.close(); dropped += 1 } // the worker retries
              else {
                val h = new Handshake(channel)
                try {
                  h.start(selector)
                  pending(channel) = h
                } catch { case _: IOException => pending(channel) = h; drop(h) }
              }
              channel = server.accept()
            }
          } else sk.attachment() match {
            case h: Handshake =>
              try if (h.advance()) proved = h
              catch { case _: IOException => drop(h) }
            case _ => ()
          }
        }
        val now = System.nanoTime()
        pending.values.filter(h => h != proved && now > h.deadline).toList.foreach(drop)
        if (proved == null) {
          checkTask()
          def others = if (dropped == 0) "" else s"; $dropped other connection(s) to its port did not prove " +
            "they are the worker and were dropped"
          if (!process.isAlive) throw failure(s"exited with code ${process.exitValue()} before connecting$others")
          if (now > deadline) throw failure(s"did not connect within $ConnectTimeoutS s$others")
        }
      }
      pending.remove(proved.channel)
    } finally {
      pending.values.foreach(h => try h.channel.close() catch { case _: IOException => () })
      try selector.close() catch { case _: IOException => () }
      try server.close() catch { case _: IOException => () }
    }
    if (dropped > 0)
      System.err.println(s"[sparkdl worker $pid] dropped $dropped connection(s) to the worker port of $what that " +
        "did not prove they hold its secret")
    val channel = proved.channel
    channel.configureBlocking(true) // the selector is closed: the channel is deregistered
    socket = channel.socket()
    socket.setTcpNoDelay(true)
    socket.setSoTimeout(1000)
    raw = socket.getInputStream
    in = new DataInputStream(new BufferedInputStream(new PatientInputStream(raw, () => checkTask()), 1 << 16))
    out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream, 1 << 16))
    send(Auth, proof(key, ToWorker, proved.nonce, proved.challenge))
  }

  /** One connection that has not proved yet that it is this worker: the JVM's challenge
    * going out, then exactly one AUTH frame of [[NonceBytes]] + [[ProofBytes]] bytes coming
    * in, into buffers of fixed size; any other frame header ends it at once.
    */
  private final class Handshake(val channel: SocketChannel) {
    val deadline: Long = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(HandshakeTimeoutMs)
    val challenge: Array[Byte] = {
      val bytes = new Array[Byte](NonceBytes)
      random.nextBytes(bytes)
      bytes
    }
    private val header = ByteBuffer.allocate(HeaderBytes)
    private val body = ByteBuffer.allocate(NonceBytes + ProofBytes)
    private var headerChecked = false
    def nonce: Array[Byte] = java.util.Arrays.copyOfRange(body.array(), 0, NonceBytes)

    /** Sends the challenge (a few bytes into an empty send buffer) and waits for the answer. */
    def start(selector: Selector): Unit = {
      channel.configureBlocking(false)
      val hello = ByteBuffer.allocate(HeaderBytes + NonceBytes).putInt(Auth).putLong(NonceBytes.toLong).put(challenge)
      hello.flip()
      channel.write(hello)
      if (hello.hasRemaining) throw new IOException("the peer's receive window is closed")
      channel.register(selector, SelectionKey.OP_READ, this)
    }

    /** Reads what has arrived; true once the whole answer is in and its proof is right.
      *
      * @throws IOException to drop the peer: the end of its stream, a frame that is not a
      *                     64-byte AUTH frame, or a wrong proof
      */
    def advance(): Boolean = {
      if (!headerChecked) {
        if (channel.read(header) < 0) throw new EOFException("closed")
        if (header.hasRemaining) return false
        header.flip()
        val kind = header.getInt()
        val length = header.getLong()
        if (kind != Auth || length != body.capacity)
          throw new IOException(s"a frame of kind $kind and $length bytes where the worker's proof belongs")
        headerChecked = true
      }
      if (channel.read(body) < 0) throw new EOFException("closed")
      if (body.hasRemaining) return false
      val answer = java.util.Arrays.copyOfRange(body.array(), NonceBytes, NonceBytes + ProofBytes)
      if (!MessageDigest.isEqual(answer, proof(key, ToJvm, challenge, nonce))) throw new IOException("a wrong proof")
      true
    }
  }

  /** Hands this (idle) worker to a new task: messages name it, and show only its output. */
  def assign(task: String): Unit = {
    what = task
    tail.synchronized(tail.clear())
  }

  /** Whether this worker can serve another request now: its process runs, its last request
    * ended with DONE, and nothing is pending on the socket (neither a stray frame nor the
    * end of the stream of a worker that died since).
    */
  def reusable: Boolean =
    !closed && settled && process.isAlive && (try in.available() == 0 && quiet() catch { case _: IOException => false })

  // One non-blocking look at the socket: a timeout means the worker is alive and silent.
  private def quiet(): Boolean = {
    socket.setSoTimeout(1)
    try { raw.read(); false } // a stray byte, or the end of the stream: not reusable
    catch { case _: SocketTimeoutException => true }
    finally socket.setSoTimeout(1000)
  }

  private def checkTask(): Unit = {
    val ctx = TaskContext.get()
    if (ctx != null && ctx.isInterrupted()) {
      close()
      throw new SparkException(s"The Spark task for $what was killed; its Python worker is stopped.")
    }
  }

  def send(kind: Int, payload: Array[Byte] = Array.emptyByteArray): Unit =
    try {
      if (kind == Request) settled = false
      out.writeInt(kind)
      out.writeLong(payload.length.toLong)
      out.write(payload)
      if (kind != Batch) out.flush()
    } catch {
      case e: IOException => throw failure(s"stopped reading its input (${e.getMessage})")
    }

  def flush(): Unit =
    try out.flush()
    catch { case e: IOException => throw failure(s"stopped reading its input (${e.getMessage})") }

  /** The next frame; an ERROR frame or a closed connection fails the task with the worker's text. */
  def recv(): (Int, Array[Byte]) = {
    val (kind, payload) =
      try {
        val kind = in.readInt()
        val length = in.readLong()
        // Checked before anything is allocated: no declared length can exhaust the heap.
        if (length < 0 || length > MaxFrameBytes)
          throw new StreamCorruptedException(s"a frame (kind $kind) declaring $length bytes, outside 0 to " +
            s"$MaxFrameBytes")
        val payload = new Array[Byte](length.toInt)
        in.readFully(payload)
        (kind, payload)
      } catch {
        case _: EOFException => throw failure("closed the connection")
        case e: StreamCorruptedException => throw failure(s"sent ${e.getMessage}: the connection is corrupt " +
          "(a worker of another sparkdl version?)")
        case e: IOException  => throw failure(s"connection failed (${e.getMessage})")
      }
    if (kind == Error) {
      waitForExit()
      close()
      throw new SparkException(s"The sparkdl Python worker for $what failed:\n${new String(payload, UTF_8).trim}")
    }
    if (kind == Done) settled = true
    (kind, payload)
  }

  def expect(kinds: Int*): (Int, Array[Byte]) = {
    val (kind, payload) = recv()
    if (!kinds.contains(kind)) throw failure(s"sent frame kind $kind where ${kinds.mkString(" or ")} was expected")
    (kind, payload)
  }

  private def waitForExit(): Unit = {
    process.waitFor(5, TimeUnit.SECONDS)
    pump.join(2000)
  }

  /** A SparkException with the worker's exit code and last output lines; the worker is stopped. */
  def failure(what2: String): SparkException = {
    waitForExit()
    val code = if (process.isAlive) "still running" else s"exit code ${process.exitValue()}"
    val lines = tail.synchronized(tail.toList)
    close()
    new SparkException(
      s"The sparkdl Python worker ('$python -m sparkdl.worker', pid $pid) for $what $what2 ($code). " +
        s"Its last output:\n${lines.mkString("\n")}")
  }

  /** Stops the worker: closing the socket makes it exit by itself; it is killed if it does not. */
  override def close(): Unit = {
    closed = true
    try if (socket != null) socket.close() catch { case _: IOException => () }
    try server.close() catch { case _: IOException => () }
    if (process.isAlive && !process.waitFor(300, TimeUnit.MILLISECONDS)) {
      process.destroy()
      if (!process.waitFor(2, TimeUnit.SECONDS)) process.destroyForcibly()
    }
  }
}

private[ml] object PythonWorker {
  val Auth = 0
  val Request = 1
  val Batch = 2
  val End = 3
  val Gather = 4
  val Gathered = 5
  val Result = 6
  val Error = 7
  val Done = 8
  val Blob = 9
  val SecretEnv = "SPARKDL_WORKER_SECRET"
  val TailLines = 40
  /** Seconds for the worker to start, connect and prove itself, strangers' connections included. */
  val ConnectTimeoutS = 120
  /** Milliseconds each connection has to answer the JVM's challenge before it is dropped. */
  val HandshakeTimeoutMs = 10000L
  /** Connections handshaking at once; beyond it new ones are closed at once (the worker retries). */
  val MaxPendingPeers = 16
  /** The largest frame payload read from a worker: the largest Java array. */
  val MaxFrameBytes: Long = Int.MaxValue - 8
  private val HeaderBytes = 12
  private[ml] val NonceBytes = 32
  private[ml] val ProofBytes = 32
  private val SelectMs = 200L
  /** HMAC labels, one per direction, as `sparkdl/worker/jvm_worker.py` names them. */
  private[ml] val ToJvm = "sparkdl-worker py->jvm".getBytes(UTF_8)
  private[ml] val ToWorker = "sparkdl-worker jvm->py".getBytes(UTF_8)
  private val random = new SecureRandom()

  /** HMAC-SHA256 of `label` and the nonces under `key`: one end's proof, bound to both nonces. */
  private[ml] def proof(key: Array[Byte], label: Array[Byte], nonces: Array[Byte]*): Array[Byte] = {
    val mac = Mac.getInstance("HmacSHA256")
    mac.init(new SecretKeySpec(key, "HmacSHA256"))
    mac.update(label)
    nonces.foreach(n => mac.update(n))
    mac.doFinal()
  }

  /** The Python executable for workers: `spark.pyspark.python`, else `PYSPARK_PYTHON`, else `python3`. */
  def pythonExec(conf: org.apache.spark.SparkConf): String =
    conf.getOption("spark.pyspark.python").orElse(sys.env.get("PYSPARK_PYTHON")).getOrElse("python3")
}
