package sparkdl.ml

import java.net.{InetSocketAddress, Socket}
import java.util.concurrent.Executors

import scala.concurrent.duration._
import scala.concurrent.{Await, ExecutionContext, Future}

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
      assert(refused.getMessage.contains("closed the rendezvous"))
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
}
