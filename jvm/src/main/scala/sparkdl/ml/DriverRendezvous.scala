package sparkdl.ml

import java.io._
import java.net.{InetSocketAddress, ServerSocket, Socket, SocketTimeoutException}
import java.nio.charset.StandardCharsets.UTF_8
import java.security.{MessageDigest, SecureRandom}
import java.util.concurrent.{LinkedBlockingQueue, Semaphore, ThreadFactory, ThreadPoolExecutor, TimeUnit}
import java.util.concurrent.atomic.AtomicInteger
import javax.crypto.Mac
import javax.crypto.spec.SecretKeySpec

import scala.collection.mutable
import scala.util.control.NonFatal

import org.apache.spark.{SparkContext, SparkException, TaskContext}
import org.apache.spark.sql.SparkSession

/** Where the ranks of one Scala fit meet: a tiny service on the driver, as Python's
  * `sparkdl.rendezvous.DriverRendezvous` is for the Python estimator.
  *
  * Why: `BarrierTaskContext.allGather` waits for its reply in one-second sleeps, about a
  * second added to every fit. Here each rank connects once, posts its message and gets every
  * rank's, in rank order, as soon as the last one arrives. Ranks meet per task attempt
  * number; a rank that connects again replaces its earlier connection, and a rank that hung
  * up after posting does not complete its group. `spark.sparkdl.rendezvous=barrier` falls
  * back to `allGather` where executors cannot connect to the driver.
  *
  * The port is open to the network, so both ends of a connection prove they hold the
  * per-fit key (an HMAC-SHA256 challenge each way, with a label per direction, so the key
  * never crosses the wire and one end's answer never passes for the other's), as Python's
  * rendezvous does:
  *
  *  1. driver -> rank: a 32-byte random challenge `c`
  *  1. rank -> driver: `HMAC(key, "sparkdl-rendezvous rank" + c)`, then its own challenge `r`
  *  1. driver -> rank: `HMAC(key, "sparkdl-rendezvous driver" + r)`; a rank refuses a driver
  *     that gets it wrong, before it sends its message
  *  1. rank -> driver: what it posts, a kind (int32) first:
  *     - [[DriverRendezvous.GatherPost]]: attempt (int32), rank (int32), message (int32 length,
  *       UTF-8, at most [[DriverRendezvous.MaxMessageBytes]]); the answer is every rank's message
  *     - [[DriverRendezvous.StatePost]]: rank 0's training state after an epoch (epoch int32, length
  *       int64, the bytes of `sparkdl.epoch_state`), which a restarted fit resumes from; the
  *       driver reads it only if the length is within `maxStateBytes`, and answers one byte,
  *       1 stored or 0 refused
  *     - [[DriverRendezvous.FailurePost]]: a rank's failure in the user's code (rank int32,
  *       traceback as a message), never retried; the driver answers one byte 1
  *
  * Each connection's handshake and message run on a pool of at most
  * [[DriverRendezvous.MaxPending]] threads under a deadline of
  * [[DriverRendezvous.HandshakeTimeoutMs]]; connections beyond it are closed at once (ranks
  * retry a connection dropped before the challenge), so neither silent connections nor a
  * flood of them can stall the ranks or exhaust the driver's threads.
  *
  * {{{
  * val rdv = new DriverRendezvous(2, "127.0.0.1", "127.0.0.1")
  * try rdv.address.gather(rank = 0, attempt = 0, "hello", timeoutMs = 600000)   // in each task
  * finally rdv.close()
  * }}}
  *
  * @param numRanks      the ranks of the barrier job
  * @param host          the driver address executors use (`spark.driver.host`)
  * @param bind          the local address to listen on (`spark.driver.bindAddress`)
  * @param maxStateBytes the largest training state taken (0: none)
  * @param onState       called with each training state taken: its epoch and bytes
  * @param onFailure     called with a rank's failure in the user's code: rank and traceback
  */
private[ml] final class DriverRendezvous(numRanks: Int, host: String, bind: String, maxStateBytes: Long = 0L,
                                         onState: (Int, Array[Byte]) => Unit = (_, _) => (),
                                         onFailure: (Int, String) => Unit = (_, _) => ()) extends Closeable {
  import DriverRendezvous._

  private val key = {
    val bytes = new Array[Byte](32)
    random.nextBytes(bytes)
    bytes
  }
  private val server = new ServerSocket()
  server.bind(new InetSocketAddress(bind, 0), MaxPending)

  /** What the tasks need to reach this service. */
  val address: RendezvousAddress = RendezvousAddress(host, server.getLocalPort, key)

  /** What a Python rank needs to hand this driver its training state or its failure
    * (`sparkdl.worker.jvm_rendezvous.JvmRendezvousAddress`), as JSON for the worker's request.
    */
  def workerAddress: sparkdl.json.Json.JObj = {
    import sparkdl.json.Json._
    JObj("host" -> JStr(host), "port" -> JInt(server.getLocalPort),
      "key" -> JStr(key.map(b => f"${b & 0xff}%02x").mkString), "max_state_bytes" -> JInt(maxStateBytes))
  }

  // attempt -> rank -> (accept order, connection, message); guarded by `waiting`
  private val waiting = mutable.HashMap.empty[Int, mutable.HashMap[Int, (Long, Socket, String)]]
  @volatile private var closed = false

  // Handshakes in progress: a permit each; the pool's threads time out when idle.
  private val slots = new Semaphore(MaxPending)
  private val handshakes = {
    val pool = new ThreadPoolExecutor(MaxPending, MaxPending, 10, TimeUnit.SECONDS,
      new LinkedBlockingQueue[Runnable](), daemonThreads("sparkdl-rendezvous-handshake"))
    pool.allowCoreThreadTimeOut(true)
    pool
  }

  private val acceptor = daemonThreads("sparkdl-rendezvous").newThread(() => {
    var accepted = 0L
    while (!closed) {
      try {
        val conn = server.accept()
        accepted += 1
        val order = accepted
        if (!slots.tryAcquire()) quietly(conn.close()) // a flood: ranks retry theirs
        else
          try handshakes.execute(() => receive(conn, order))
          catch { case NonFatal(_) => slots.release(); quietly(conn.close()) }
      } catch { case NonFatal(_) => () } // closed, or a failed connection
    }
  })
  acceptor.start()

  // Runs on the handshake pool holding a slot, released once the post is in.
  private def receive(conn: Socket, order: Long): Unit = {
    val posted =
      try handshake(conn)
      catch { case NonFatal(_) => quietly(conn.close()); None }
      finally slots.release()
    posted.foreach { case (attempt, rank, message) =>
      try join(conn, order, attempt, rank, message)
      catch { case NonFatal(_) => quietly(conn.close()) }
    }
  }

  /** The driver's side of the handshake, then the rank's post: a gather's (attempt, rank,
    * message) to join, or None once a state or failure is taken or a peer is dropped.
    */
  private def handshake(conn: Socket): Option[(Int, Int, String)] = {
    val in = new DataInputStream(new DeadlineInputStream(conn, System.nanoTime() + msToNs(HandshakeTimeoutMs)))
    val out = new DataOutputStream(new BufferedOutputStream(conn.getOutputStream))
    val challenge = nonce()
    out.write(challenge)
    out.flush()
    val proof = readBytes(in, ProofBytes)
    val rankChallenge = readBytes(in, NonceBytes)
    if (!MessageDigest.isEqual(proof, hmac(key, RankLabel, challenge))) { conn.close(); return None }
    out.write(hmac(key, DriverLabel, rankChallenge))
    out.flush()
    in.readInt() match {
      case GatherPost =>
        val attempt = in.readInt()
        val rank = in.readInt()
        val message = readString(in)
        if (rank < 0 || rank >= numRanks || attempt < 0) { conn.close(); return None }
        conn.setSoTimeout(0)
        Some((attempt, rank, message))
      case StatePost =>
        try takeState(conn, in, out) finally conn.close()
        None
      case FailurePost =>
        try {
          val rank = in.readInt()
          val text = readString(in)
          if (rank >= 0 && rank < numRanks) {
            onFailure(rank, text)
            out.write(1)
            out.flush()
          }
        } finally conn.close()
        None
      case _ =>
        conn.close()
        None
    }
  }

  /** Reads a training state whose announced size is within the cap, before allocating it;
    * the body gets its own deadline, [[stateDeadlineMs]], as it may be large.
    */
  private def takeState(conn: Socket, head: DataInputStream, out: DataOutputStream): Unit = {
    val epoch = head.readInt()
    val size = head.readLong()
    if (epoch < 0 || size <= 0 || size > maxStateBytes) {
      out.write(0)
      out.flush()
      return
    }
    val in = new DataInputStream(new DeadlineInputStream(conn,
      System.nanoTime() + msToNs(stateDeadlineMs(size))))
    val state = readBytes(in, size.toInt)
    onState(epoch, state)
    out.write(1)
    out.flush()
  }

  private def join(conn: Socket, order: Long, attempt: Int, rank: Int, message: String): Unit = {
    val ready = waiting.synchronized {
      val group = waiting.getOrElseUpdate(attempt, mutable.HashMap.empty)
      val stale = group.get(rank).exists(_._1 > order) // an older connection of this rank, read late
      if (stale || closed) {
        conn.close()
        None
      } else {
        group.get(rank).foreach(_._2.close()) // the same rank again: its first connection is dead
        group(rank) = (order, conn, message)
        if (group.size < numRanks) None
        else {
          // A rank whose task died after posting must not complete the group.
          val dead = group.collect { case (r, (_, c, _)) if hungUp(c) => r }
          dead.foreach(r => group.remove(r).foreach(_._2.close()))
          if (dead.nonEmpty) None else waiting.remove(attempt)
        }
      }
    }
    ready.foreach { group =>
      val messages = group.toSeq.sortBy(_._1).map(_._2._3)
      group.values.foreach { case (_, peer, _) =>
        try {
          val out = new DataOutputStream(new BufferedOutputStream(peer.getOutputStream))
          out.writeInt(messages.size)
          messages.foreach(m => writeString(out, m))
          out.flush()
        } catch { case _: IOException => () } // that rank died; Spark fails the barrier stage
        finally peer.close()
      }
    }
  }

  /** Stops listening; ranks still waiting see the rendezvous closed. */
  override def close(): Unit = {
    closed = true
    quietly(server.close())
    acceptor.join(5000)
    handshakes.shutdownNow()
    waiting.synchronized {
      waiting.values.foreach(_.values.foreach(_._2.close()))
      waiting.clear()
    }
  }
}

/** Where and how a rank reaches the driver's rendezvous; shipped with the tasks. */
private[ml] final case class RendezvousAddress(host: String, port: Int, key: Array[Byte]) {
  import DriverRendezvous._

  /** Posts this rank's message and waits for every rank's, in rank order.
    *
    * @throws SparkException if the driver cannot be reached or does not prove it holds the
    *                        fit's key, the other ranks do not all arrive within `timeoutMs`,
    *                        or the task is killed meanwhile
    */
  def gather(rank: Int, attempt: Int, message: String, timeoutMs: Long): Seq[String] = {
    val conn = open(rank)
    try {
      val out = new DataOutputStream(new BufferedOutputStream(conn.getOutputStream))
      out.writeInt(GatherPost)
      out.writeInt(attempt)
      out.writeInt(rank)
      writeString(out, message)
      out.flush()
      val deadline = System.currentTimeMillis() + timeoutMs
      conn.setSoTimeout(1000)
      val in = new DataInputStream(new PatientInputStream(conn.getInputStream, () => {
        val ctx = TaskContext.get()
        if (ctx != null && ctx.isInterrupted())
          throw new SparkException(s"The Spark task of rank $rank was killed while it waited at the rendezvous.")
        if (System.currentTimeMillis() > deadline)
          throw new SparkException(s"Rank $rank waited ${timeoutMs / 1000.0} s at the rendezvous for the other " +
            "ranks; some never started (see the other tasks' logs).")
      }))
      try {
        val count = in.readInt()
        if (count < 0 || count > MaxRanks)
          throw new SparkException(s"The driver's rendezvous at $host:$port answered rank $rank with $count " +
            "messages; the connection is corrupt.")
        (0 until count).map(_ => readString(in))
      } catch {
        case _: EOFException => throw new SparkException(s"The driver closed the rendezvous before all ranks " +
          s"arrived (the fit was cancelled).")
      }
    } finally conn.close()
  }

  /** A connection on which the driver has proved it holds the key, and this rank too.
    *
    * A connection the driver closes before its challenge (too many handshakes at once: a
    * flood of strangers' connections) is opened again for up to [[HandshakeTimeoutMs]] times
    * [[HandshakeTries]]; a refused connection, a wrong key and a silent or wrong driver fail
    * at once.
    */
  private[ml] def open(rank: Int): Socket = {
    val giveUp = System.nanoTime() + msToNs(HandshakeTimeoutMs * HandshakeTries)
    def unreachable(e: IOException) = new SparkException(s"Rank $rank cannot reach the driver's rendezvous at " +
      s"$host:$port (${e.getMessage}). If executors cannot connect to the driver, set $ModeConf=barrier.", e)
    while (true) {
      val conn = new Socket()
      try {
        try conn.connect(new InetSocketAddress(host, port), ConnectTimeoutMs)
        catch { case e: IOException => throw unreachable(e) }
        val in = new DataInputStream(new DeadlineInputStream(conn, System.nanoTime() + msToNs(HandshakeTimeoutMs)))
        val out = new DataOutputStream(new BufferedOutputStream(conn.getOutputStream))
        val challenge =
          try Some(readBytes(in, NonceBytes))
          catch {
            case e: SocketTimeoutException => throw silent(rank, e)
            case _: IOException if System.nanoTime() < giveUp => None // dropped: the driver is busy
            case e: IOException => throw unreachable(e)
          }
        challenge match {
          case None =>
            conn.close()
            Thread.sleep(200)
          case Some(c) =>
            val mine = nonce()
            out.write(hmac(key, RankLabel, c))
            out.write(mine)
            out.flush()
            val proof =
              try readBytes(in, ProofBytes)
              catch {
                case e: SocketTimeoutException => throw silent(rank, e)
                case e: IOException => throw new SparkException(s"Rank $rank was refused by the rendezvous at " +
                  s"$host:$port: wrong key (a task of another fit?), or it is not this fit's driver.", e)
              }
            if (!MessageDigest.isEqual(proof, hmac(key, DriverLabel, mine)))
              throw new SparkException(s"The rendezvous at $host:$port did not prove it holds this fit's key: " +
                s"it is not this fit's driver (another process took its address?). Rank $rank sent it nothing.")
            conn.setSoTimeout(0)
            return conn
        }
      } catch {
        case NonFatal(e) =>
          quietly(conn.close())
          throw e
      }
    }
    throw new IllegalStateException("unreachable")
  }

  private def silent(rank: Int, e: IOException) = new SparkException(s"The rendezvous at $host:$port did not " +
    s"answer rank $rank's handshake within ${HandshakeTimeoutMs / 1000} s: it is not this fit's driver, or the " +
    "driver is overloaded.", e)
}

private[ml] object DriverRendezvous {
  /** Spark setting choosing how ranks meet: `driver` (default) or `barrier`, as in Python. */
  val ModeConf = "spark.sparkdl.rendezvous"
  val Modes: Seq[String] = Seq("driver", "barrier")
  private[ml] val ConnectTimeoutMs = 10000
  /** Milliseconds each end has for the handshake and the rank's message (Python's `HANDSHAKE_S`). */
  val HandshakeTimeoutMs = 10000
  /** Handshakes in progress at once; connections beyond it are closed unread (Python's `MAX_PENDING`). */
  val MaxPending = 64
  /** How many handshake deadlines a rank keeps trying while the driver drops its connections. */
  private[ml] val HandshakeTries = 3
  /** The largest rendezvous message (addresses and row counts: tiny; Python's `MAX_MESSAGE_BYTES`). */
  val MaxMessageBytes: Int = 1 << 20
  private[ml] val MaxRanks = 1 << 16
  /** The kinds of post a rank makes after the handshake. */
  private[ml] val GatherPost = 0
  private[ml] val StatePost = 1
  private[ml] val FailurePost = 2
  /** The largest state a Java array holds. */
  val MaxStateBytes: Long = Int.MaxValue - 8L
  /** The slowest network a state may cross: its read gets the handshake deadline plus its
    * size at this rate, so a large state on a slow link is taken and a stalled one is not.
    */
  private[ml] val MinStateBytesPerS: Long = 8L << 20

  /** Milliseconds a state of `size` bytes may take to arrive. */
  private[ml] def stateDeadlineMs(size: Long): Long = HandshakeTimeoutMs + size * 1000 / MinStateBytesPerS

  /** The largest training state the driver takes: `spark.driver.maxResultSize` (the cap Spark
    * puts on what tasks hand the driver, as Python's `max_state_bytes`), at most a Java array.
    */
  def maxStateBytes(sc: SparkContext): Long = {
    val size = sc.getConf.getSizeAsBytes("spark.driver.maxResultSize", "1g")
    if (size > 0) math.min(size, MaxStateBytes) else MaxStateBytes
  }
  private[ml] val NonceBytes = 32
  private[ml] val ProofBytes = 32
  private[ml] val RankLabel = "sparkdl-rendezvous rank".getBytes(UTF_8)
  private[ml] val DriverLabel = "sparkdl-rendezvous driver".getBytes(UTF_8)
  private val random = new SecureRandom()

  /** The session's `spark.sparkdl.rendezvous`, checked (Python's `rendezvous_mode`).
    *
    * @throws IllegalArgumentException for an unknown mode, listing the valid ones
    */
  def mode(spark: SparkSession): String = {
    val mode = spark.conf.get(ModeConf, "driver")
    if (!Modes.contains(mode))
      throw new IllegalArgumentException(s"$ModeConf must be one of ['driver', 'barrier']. Received: '$mode'")
    mode
  }

  /** A service for `numRanks` ranks at this driver's address, or None in `barrier` mode (no
    * training states nor failure reports reach the driver then).
    */
  def start(sc: SparkContext, mode: String, numRanks: Int, maxStateBytes: Long = 0L,
            onState: (Int, Array[Byte]) => Unit = (_, _) => (),
            onFailure: (Int, String) => Unit = (_, _) => ()): Option[DriverRendezvous] =
    if (mode == "barrier") None
    else {
      val host = sc.getConf.get("spark.driver.host")
      Some(new DriverRendezvous(numRanks, host, sc.getConf.get("spark.driver.bindAddress", host), maxStateBytes,
        onState, onFailure))
    }

  /** HMAC-SHA256 of `label` and `challenge` under `key`: one end's answer to the other's challenge. */
  private[ml] def hmac(key: Array[Byte], label: Array[Byte], challenge: Array[Byte]): Array[Byte] = {
    val mac = Mac.getInstance("HmacSHA256")
    mac.init(new SecretKeySpec(key, "HmacSHA256"))
    mac.update(label)
    mac.doFinal(challenge)
  }

  private[ml] def nonce(): Array[Byte] = {
    val bytes = new Array[Byte](NonceBytes)
    random.nextBytes(bytes)
    bytes
  }

  private[ml] def readBytes(in: DataInputStream, n: Int): Array[Byte] = {
    val bytes = new Array[Byte](n)
    in.readFully(bytes)
    bytes
  }

  private[ml] def writeString(out: DataOutputStream, s: String): Unit = {
    val bytes = s.getBytes(UTF_8)
    out.writeInt(bytes.length)
    out.write(bytes)
  }

  private[ml] def readString(in: DataInputStream): String = {
    val length = in.readInt()
    if (length < 0 || length > MaxMessageBytes) throw new IOException(s"a rendezvous message of $length bytes")
    new String(readBytes(in, length), UTF_8)
  }

  // A waiting rank sends nothing after its message, so anything readable is the end of the stream.
  private def hungUp(conn: Socket): Boolean =
    try {
      conn.setSoTimeout(1)
      try { conn.getInputStream.read(); true }
      catch { case _: SocketTimeoutException => false }
      finally conn.setSoTimeout(0)
    } catch { case _: IOException => true }

  private[ml] def msToNs(ms: Long): Long = TimeUnit.MILLISECONDS.toNanos(ms)

  private[ml] def quietly(body: => Unit): Unit = try body catch { case _: IOException => () }

  private def daemonThreads(name: String): ThreadFactory = {
    val count = new AtomicInteger()
    (body: Runnable) => {
      val t = new Thread(body, s"$name-${count.incrementAndGet()}")
      t.setDaemon(true)
      t
    }
  }

  /** A socket's input under one deadline for all its reads, not one per read: each read may
    * wait only for the time left, so a peer that trickles a byte now and then cannot stretch
    * a handshake past it. A read past the deadline throws `SocketTimeoutException`.
    */
  private[ml] final class DeadlineInputStream(socket: Socket, deadlineNs: Long) extends InputStream {
    private val in = socket.getInputStream
    private def arm(): Unit = {
      val left = TimeUnit.NANOSECONDS.toMillis(deadlineNs - System.nanoTime())
      if (left <= 0) throw new SocketTimeoutException("the handshake deadline passed")
      socket.setSoTimeout(math.min(left, Int.MaxValue).toInt)
    }
    override def read(): Int = { arm(); in.read() }
    override def read(b: Array[Byte], off: Int, len: Int): Int = { arm(); in.read(b, off, len) }
  }
}
