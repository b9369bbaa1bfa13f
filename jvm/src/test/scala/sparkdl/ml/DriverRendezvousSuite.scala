package sparkdl.ml

import java.io.DataInputStream
import java.net.{InetSocketAddress, ServerSocket, Socket}
import java.util.concurrent.Executors

import scala.collection.mutable
import scala.concurrent.duration._
import scala.concurrent.{Await, ExecutionContext, Future}
import scala.jdk.CollectionConverters._

import org.apache.spark.SparkException
import org.scalatest.funsuite.AnyFunSuite

/** The Scala fit's driver-hosted rendezvous, with ranks as threads. */
class DriverRendezvousSuite extends AnyFunSuite {

  private val pool = Executors.newCachedThreadPool()
  private implicit val ec: ExecutionContext = ExecutionContext.fromExecutor(pool)

  private def gatherAll(address: RendezvousAddress, ranks: Seq[Int], attempt: Int = 0): Map[Int, Seq[String]] = {
    val futures = ranks.map(r => Future(r -> address.gather(r, attempt, s"hello from $r", timeoutMs = 20000)))
    Await.result(Future.sequence(futures), 30.seconds).toMap
  }

  test("every rank gets every message, in rank order, whatever order they arrive in") {
    val rdv = new DriverRendezvous(3, "127.0.0.1", "127.0.0.1")
    try {
      val got = gatherAll(rdv.address, Seq(2, 0, 1))
      assert(got.values.toSet == Set(Seq("hello from 0", "hello from 1", "hello from 2")))
      // a retried stage meets again under its own attempt number
      assert(gatherAll(rdv.address, Seq(1, 2, 0), attempt = 1)(0).size == 3)
    } finally rdv.close()
  }

  test("a rank with the wrong key is refused, and one that waits past its timeout says so") {
    val rdv = new DriverRendezvous(2, "127.0.0.1", "127.0.0.1")
    try {
      val wrong = rdv.address.copy(key = new Array[Byte](32))
      val refused = intercept[SparkException](wrong.gather(0, 0, "x", timeoutMs = 20000))
      assert(refused.getMessage == s"Rank 0 was refused by the rendezvous at 127.0.0.1:${rdv.address.port}: " +
        "wrong key (a task of another fit?), or it is not this fit's driver.")
      val alone = intercept[SparkException](rdv.address.gather(0, 0, "x", timeoutMs = 1500))
      assert(alone.getMessage == "Rank 0 waited 1.5 s at the rendezvous for the other ranks; some never " +
        "started (see the other tasks' logs).")
    } finally rdv.close()
  }

  test("a rank that hung up after posting does not complete the group; its retry does") {
    val rdv = new DriverRendezvous(2, "127.0.0.1", "127.0.0.1")
    try {
      // rank 0 posts, then its task dies (the timeout closes its connection)
      intercept[SparkException](rdv.address.gather(0, 0, "dead", timeoutMs = 1200))
      val got = gatherAll(rdv.address, Seq(1, 0))
      assert(got(1) == Seq("hello from 0", "hello from 1"))
    } finally rdv.close()
  }

  test("closing the service releases waiting ranks; an unreachable driver is named") {
    val rdv = new DriverRendezvous(2, "127.0.0.1", "127.0.0.1")
    val waiting = Future(rdv.address.gather(0, 0, "x", timeoutMs = 20000))
    Thread.sleep(300)
    rdv.close()
    val e = intercept[SparkException](Await.result(waiting, 10.seconds))
    assert(e.getMessage.contains("closed the rendezvous before all ranks arrived"))
    val gone = intercept[SparkException](rdv.address.gather(0, 0, "x", timeoutMs = 2000))
    assert(gone.getMessage.contains("cannot reach the driver's rendezvous") &&
      gone.getMessage.contains("spark.sparkdl.rendezvous=barrier"))
  }

  test("an unauthenticated connection that sends garbage does not disturb the ranks") {
    val rdv = new DriverRendezvous(2, "127.0.0.1", "127.0.0.1")
    try {
      val junk = new Socket()
      junk.connect(new InetSocketAddress("127.0.0.1", rdv.address.port))
      junk.getOutputStream.write(Array.fill[Byte](64)(7))
      junk.close()
      assert(gatherAll(rdv.address, Seq(0, 1))(0).size == 2)
    } finally rdv.close()
  }

  private def rendezvousThreads: Seq[String] =
    Thread.getAllStackTraces.keySet.asScala.toSeq.map(_.getName).filter(_.startsWith("sparkdl-rendezvous"))

  private def silentConnections(port: Int, n: Int): Seq[Socket] = (1 to n).map { _ =>
    val s = new Socket()
    s.connect(new InetSocketAddress("127.0.0.1", port), 5000)
    s
  }

  test("silent connections do not stall the ranks, and a flood of them neither exhausts threads nor stops the ranks") {
    val rdv = new DriverRendezvous(2, "127.0.0.1", "127.0.0.1")
    val squatters = scala.collection.mutable.Buffer.empty[Socket]
    try {
      squatters ++= silentConnections(rdv.address.port, 3)
      val began = System.nanoTime()
      assert(gatherAll(rdv.address, Seq(0, 1))(0) == Seq("hello from 0", "hello from 1"))
      assert((System.nanoTime() - began) / 1e9 < 5, "ranks waited behind silent connections")
      // Far more connections than handshakes allowed at once: the extra ones are closed at
      // once, the others time out, and the ranks (retrying dropped connections) still meet.
      squatters ++= silentConnections(rdv.address.port, 300)
      Thread.sleep(500)
      val threads = rendezvousThreads
      assert(threads.size <= DriverRendezvous.MaxPending + 1, s"${threads.size} rendezvous threads")
      val retried = gatherAll(rdv.address, Seq(1, 0), attempt = 1)
      assert(retried(1) == Seq("hello from 0", "hello from 1"))
    } finally {
      squatters.foreach(_.close())
      rdv.close()
    }
  }

  /** A stand-in driver on a port of its own: `behave` gets each accepted connection. */
  private def fakeDriver(behave: Socket => Unit): (ServerSocket, Future[Unit]) = {
    val server = new ServerSocket(0)
    (server, Future { val conn = server.accept(); try behave(conn) finally conn.close() })
  }

  test("a rank refuses a driver that cannot prove it holds the key, and sends it nothing") {
    var afterProof = -1
    val (server, driver) = fakeDriver { conn =>
      val in = new DataInputStream(conn.getInputStream)
      conn.getOutputStream.write(Array.fill[Byte](32)(1)) // a challenge
      in.readFully(new Array[Byte](64)) // the rank's answer and its own challenge
      conn.getOutputStream.write(Array.fill[Byte](32)(2)) // a guessed proof
      var n = 0
      try while (in.read() >= 0) n += 1 catch { case _: java.io.IOException => () }
      afterProof = n
    }
    try {
      val address = RendezvousAddress("127.0.0.1", server.getLocalPort, Array.fill[Byte](32)(3))
      val e = intercept[SparkException](address.gather(0, 0, "the rank's address " * 10, timeoutMs = 20000))
      assert(e.getMessage == s"The rendezvous at 127.0.0.1:${server.getLocalPort} did not prove it holds this " +
        "fit's key: it is not this fit's driver (another process took its address?). Rank 0 sent it nothing.")
      Await.result(driver, 10.seconds)
      assert(afterProof == 0, s"the rank sent $afterProof bytes to a driver that did not prove itself")
    } finally server.close()
  }

  test("a driver that never answers fails the rank within the handshake deadline, not the rendezvous timeout") {
    val (server, driver) = fakeDriver { conn =>
      try conn.getInputStream.read() catch { case _: java.io.IOException => () } // silent until the rank leaves
    }
    try {
      val address = RendezvousAddress("127.0.0.1", server.getLocalPort, Array.fill[Byte](32)(3))
      val began = System.nanoTime()
      val e = intercept[SparkException](address.gather(0, 0, "x", timeoutMs = 120000))
      val took = (System.nanoTime() - began) / 1e9
      assert(e.getMessage.startsWith(s"The rendezvous at 127.0.0.1:${server.getLocalPort} did not answer rank 0's " +
        "handshake within 10 s"), e.getMessage)
      assert(took < 20, s"the rank waited $took s")
      Await.result(driver, 10.seconds)
    } finally server.close()
  }

  test("a peer that trickles its handshake is dropped at the handshake deadline, however prompt each byte") {
    val rdv = new DriverRendezvous(1, "127.0.0.1", "127.0.0.1")
    try {
      val slow = new Socket("127.0.0.1", rdv.address.port)
      val in = new DataInputStream(slow.getInputStream)
      in.readFully(new Array[Byte](32))
      val began = System.nanoTime()
      val closed =
        try {
          // one byte of the answer every half second: each read is prompt, the whole is not
          (1 to 64).foreach { _ => slow.getOutputStream.write(0); Thread.sleep(500) }
          false
        } catch { case _: java.io.IOException => true }
      val dropped = closed || (try in.read() < 0 catch { case _: java.io.IOException => true })
      assert(dropped && (System.nanoTime() - began) / 1e9 < 15)
      slow.close()
      assert(gatherAll(rdv.address, Seq(0))(0) == Seq("hello from 0"))
    } finally rdv.close()
  }

  /** Posts `kind` and `body` after an authenticated handshake; the driver's one-byte answer. */
  private def post(address: RendezvousAddress, kind: Int)(body: java.io.DataOutputStream => Unit): Int = {
    val conn = address.open(0)
    try {
      val out = new java.io.DataOutputStream(new java.io.BufferedOutputStream(conn.getOutputStream))
      out.writeInt(kind)
      body(out)
      out.flush()
      conn.setSoTimeout(10000)
      conn.getInputStream.read()
    } finally conn.close()
  }

  test("rank 0's training state is taken within the cap and refused unread beyond it; failures are noted") {
    val states = mutable.Buffer.empty[(Int, Int)]
    val failures = mutable.Buffer.empty[(Int, String)]
    val rdv = new DriverRendezvous(2, "127.0.0.1", "127.0.0.1", maxStateBytes = 1000,
      onState = (e, b) => states.synchronized(states += (e -> b.length)),
      onFailure = (r, t) => failures.synchronized(failures += (r -> t)))
    try {
      assert(post(rdv.address, DriverRendezvous.StatePost) { out =>
        out.writeInt(3); out.writeLong(1000); out.write(new Array[Byte](1000)) } == 1)
      // 2 GB announced: answered "refused" at once, nothing allocated or read
      assert(post(rdv.address, DriverRendezvous.StatePost) { out => out.writeInt(4); out.writeLong(2L << 30) } == 0)
      assert(post(rdv.address, DriverRendezvous.StatePost) { out => out.writeInt(5); out.writeLong(1001) } == 0)
      assert(post(rdv.address, DriverRendezvous.FailurePost) { out =>
        out.writeInt(1); DriverRendezvous.writeString(out, "Traceback ... TrainingCodeError: boom") } == 1)
      assert(states.toSeq == Seq(3 -> 1000))
      assert(failures.toSeq == Seq(1 -> "Traceback ... TrainingCodeError: boom"))
      // the ranks still meet on the same service
      assert(gatherAll(rdv.address, Seq(0, 1))(1) == Seq("hello from 0", "hello from 1"))
    } finally rdv.close()
    val off = new DriverRendezvous(1, "127.0.0.1", "127.0.0.1") // states off: maxStateBytes 0
    try assert(post(off.address, DriverRendezvous.StatePost) { out => out.writeInt(1); out.writeLong(10) } == 0)
    finally off.close()
    assert(DriverRendezvous.stateDeadlineMs(1L << 30) == 10000 + 128000)
  }

  test("a state that stalls is dropped at its deadline; an unknown kind is dropped at once") {
    val rdv = new DriverRendezvous(1, "127.0.0.1", "127.0.0.1", maxStateBytes = 1L << 20, onState = (_, _) =>
      fail("a partial state was taken"))
    try {
      val conn = rdv.address.open(0)
      val out = new java.io.DataOutputStream(conn.getOutputStream)
      out.writeInt(DriverRendezvous.StatePost); out.writeInt(1); out.writeLong(1L << 20); out.write(new Array[Byte](10))
      out.flush()
      conn.setSoTimeout(20000)
      val began = System.nanoTime()
      val answer = try conn.getInputStream.read() catch { case _: java.io.IOException => -1 }
      assert(answer == -1 && (System.nanoTime() - began) / 1e9 < DriverRendezvous.stateDeadlineMs(1L << 20) / 1000.0 + 3)
      conn.close()
      assert(post(rdv.address, 77)(_ => ()) == -1)
    } finally rdv.close()
  }
}
