package sparkdl.ml

import java.io._
import java.net.{InetAddress, ServerSocket, Socket, SocketTimeoutException}
import java.nio.charset.StandardCharsets.UTF_8
import java.security.{MessageDigest, SecureRandom}
import java.util.concurrent.TimeUnit

import scala.collection.mutable

import org.apache.spark.{SparkException, TaskContext}

/** One `python -m sparkdl.worker` process, over a loopback socket, serving one request at a
  * time; [[PythonWorkerPool]] keeps it warm between Spark tasks.
  *
  * The JVM listens on an ephemeral loopback port, starts the worker with the port as its
  * argument and a fresh per-process secret in `SPARKDL_WORKER_SECRET`, and accepts only a
  * peer that sends that secret first. Frames are `[kind: int32][length: int64][payload]`, as
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
  private val server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress)
  private val secret = {
    val bytes = new Array[Byte](24)
    new SecureRandom().nextBytes(bytes)
    bytes.map("%02x".format(_)).mkString
  }
  private val process: Process = {
    val builder = new ProcessBuilder(python, "-u", "-m", "sparkdl.worker", server.getLocalPort.toString)
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

  private def connect(): Unit = {
    server.setSoTimeout(1000)
    val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(ConnectTimeoutS)
    while (socket == null) {
      try socket = server.accept()
      catch {
        case _: SocketTimeoutException =>
          checkTask()
          if (!process.isAlive) throw failure(s"exited with code ${process.exitValue()} before connecting")
          if (System.nanoTime() > deadline) throw failure(s"did not connect within $ConnectTimeoutS s")
      }
    }
    server.close()
    socket.setSoTimeout(1000)
    raw = socket.getInputStream
    in = new DataInputStream(new BufferedInputStream(new PatientInputStream(raw, () => checkTask()), 1 << 16))
    out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream, 1 << 16))
    val (kind, payload) = recv()
    if (kind != Auth || !MessageDigest.isEqual(payload, secret.getBytes(UTF_8))) {
      close()
      throw new SparkException(s"A process that is not this task's sparkdl worker connected to $what; refused.")
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
        val payload = new Array[Byte](length.toInt)
        in.readFully(payload)
        (kind, payload)
      } catch {
        case _: EOFException => throw failure("closed the connection")
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
  val ConnectTimeoutS = 120

  /** The Python executable for workers: `spark.pyspark.python`, else `PYSPARK_PYTHON`, else `python3`. */
  def pythonExec(conf: org.apache.spark.SparkConf): String =
    conf.getOption("spark.pyspark.python").orElse(sys.env.get("PYSPARK_PYTHON")).getOrElse("python3")
}
