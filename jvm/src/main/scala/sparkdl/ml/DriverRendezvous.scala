package sparkdl.ml

import java.io._
import java.net.{InetSocketAddress, ServerSocket, Socket, SocketTimeoutException}
import java.nio.charset.StandardCharsets.UTF_8
import java.security.{MessageDigest, SecureRandom}
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
  * rank's, in rank order, as soon as the last one arrives. A connection proves it knows the
  * per-fit key by answering a random challenge with its HMAC (the key never crosses the
  * wire). Ranks meet per task attempt number; a rank that connects again replaces its earlier
  * connection, and a rank that hung up after posting does not complete its group.
  * `spark.sparkdl.rendezvous=barrier` falls back to `allGather` where executors cannot
  * connect to the driver.
  *
  * {{{
  * val rdv = new DriverRendezvous(2, "127.0.0.1", "127.0.0.1")
  * try rdv.address.gather(rank = 0, attempt = 0, "hello", timeoutMs = 600000)   // in each task
  * finally rdv.close()
  * }}}
  *
  * @param numRanks the ranks of the barrier job
  * @param host     the driver address executors use (`spark.driver.host`)
  * @param bind     the local address to listen on (`spark.driver.bindAddress`)
  */
private[ml] final class DriverRendezvous(numRanks: Int, host: String, bind: String) extends Closeable {
  import DriverRendezvous._

  private val key = {
    val bytes = new Array[Byte](32)
    new SecureRandom().nextBytes(bytes)
    bytes
  }
  private val server = new ServerSocket()
  server.bind(new InetSocketAddress(bind, 0))

  /** What the tasks need to reach this service. */
  val address: RendezvousAddress = RendezvousAddress(host, server.getLocalPort, key)

  // attempt -> rank -> (accept order, connection, message); guarded by `waiting`
  private val waiting = mutable.HashMap.empty[Int, mutable.HashMap[Int, (Long, Socket, String)]]
  @volatile private var closed = false

  private val acceptor = daemon("sparkdl-rendezvous") {
    var accepted = 0L
    while (!closed) {
      try {
        val conn = server.accept()
        accepted += 1
        val order = accepted
        daemon("sparkdl-rendezvous-rank")(receive(conn, order))
      } catch { case NonFatal(_) => () } // closed, or a failed connection
    }
  }

  private def receive(conn: Socket, order: Long): Unit =
    try {
      conn.setSoTimeout(HandshakeTimeoutMs)
      val in = new DataInputStream(new BufferedInputStream(conn.getInputStream))
      val out = new DataOutputStream(conn.getOutputStream)
      val challenge = new Array[Byte](32)
      new SecureRandom().nextBytes(challenge)
      out.write(challenge)
      out.flush()
      val proof = new Array[Byte](32)
      in.readFully(proof)
      if (!MessageDigest.isEqual(proof, hmac(key, challenge))) { conn.close(); return }
      val attempt = in.readInt()
      val rank = in.readInt()
      val message = readString(in)
      conn.setSoTimeout(0)
      join(conn, order, attempt, rank, message)
    } catch { case NonFatal(_) => try conn.close() catch { case _: IOException => () } }

  private def join(conn: Socket, order: Long, attempt: Int, rank: Int, message: String): Unit = {
    val ready = waiting.synchronized {
      val group = waiting.getOrElseUpdate(attempt, mutable.HashMap.empty)
      val stale = group.get(rank).exists(_._1 > order) // an older connection of this rank, read late
      if (stale) {
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
    try server.close() catch { case _: IOException => () }
    acceptor.join(5000)
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
    * @throws SparkException if the driver cannot be reached, the other ranks do not all
    *                        arrive within `timeoutMs`, or the task is killed meanwhile
    */
  def gather(rank: Int, attempt: Int, message: String, timeoutMs: Long): Seq[String] = {
    val conn = new Socket()
    try {
      try conn.connect(new InetSocketAddress(host, port), ConnectTimeoutMs)
      catch {
        case e: IOException => throw new SparkException(s"Rank $rank cannot reach the driver's rendezvous at " +
          s"$host:$port (${e.getMessage}). If executors cannot connect to the driver, set $ModeConf=barrier.", e)
      }
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
      val out = new DataOutputStream(new BufferedOutputStream(conn.getOutputStream))
      try {
        val challenge = new Array[Byte](32)
        in.readFully(challenge)
        out.write(hmac(key, challenge))
        out.writeInt(attempt)
        out.writeInt(rank)
        writeString(out, message)
        out.flush()
        val count = in.readInt()
        (0 until count).map(_ => readString(in))
      } catch {
        case _: EOFException => throw new SparkException(s"The driver closed the rendezvous before all ranks " +
          s"arrived (the fit was cancelled, or rank $rank's key was refused).")
      }
    } finally conn.close()
  }
}

private[ml] object DriverRendezvous {
  /** Spark setting choosing how ranks meet: `driver` (default) or `barrier`, as in Python. */
  val ModeConf = "spark.sparkdl.rendezvous"
  val Modes: Seq[String] = Seq("driver", "barrier")
  private[ml] val ConnectTimeoutMs = 10000
  private val HandshakeTimeoutMs = 30000
  private val MaxMessageBytes = 64 << 20

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

  /** A service for `numRanks` ranks at this driver's address, or None in `barrier` mode. */
  def start(sc: SparkContext, mode: String, numRanks: Int): Option[DriverRendezvous] =
    if (mode == "barrier") None
    else {
      val host = sc.getConf.get("spark.driver.host")
      Some(new DriverRendezvous(numRanks, host, sc.getConf.get("spark.driver.bindAddress", host)))
    }

  private[ml] def hmac(key: Array[Byte], challenge: Array[Byte]): Array[Byte] = {
    val mac = Mac.getInstance("HmacSHA256")
    mac.init(new SecretKeySpec(key, "HmacSHA256"))
    mac.doFinal(challenge)
  }

  private[ml] def writeString(out: DataOutputStream, s: String): Unit = {
    val bytes = s.getBytes(UTF_8)
    out.writeInt(bytes.length)
    out.write(bytes)
  }

  private[ml] def readString(in: DataInputStream): String = {
    val length = in.readInt()
    if (length < 0 || length > MaxMessageBytes) throw new IOException(s"a rendezvous message of $length bytes")
    val bytes = new Array[Byte](length)
    in.readFully(bytes)
    new String(bytes, UTF_8)
  }

  // A waiting rank sends nothing after its message, so anything readable is the end of the stream.
  private def hungUp(conn: Socket): Boolean =
    try {
      conn.setSoTimeout(1)
      try { conn.getInputStream.read(); true }
      catch { case _: SocketTimeoutException => false }
      finally conn.setSoTimeout(0)
    } catch { case _: IOException => true }

  private def daemon(name: String)(body: => Unit): Thread = {
    val t = new Thread(() => body, name)
    t.setDaemon(true)
    t.start()
    t
  }
}
