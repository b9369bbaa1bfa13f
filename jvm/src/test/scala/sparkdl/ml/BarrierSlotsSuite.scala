package sparkdl.ml

import java.util.concurrent.{CountDownLatch, TimeUnit}
import java.util.concurrent.atomic.{AtomicInteger, AtomicReference}

import org.scalatest.funsuite.AnyFunSuite

/** The driver-wide lease on task slots that lets concurrent fits take turns. */
class BarrierSlotsSuite extends AnyFunSuite {

  private def tooFew(found: Int) = new IllegalStateException(s"only $found slots")

  /** Acquires in a thread; the lease (or error) arrives in the returned reference. */
  private def acquireLater(n: Int, total: Option[Int]): (Thread, AtomicReference[Either[Throwable, BarrierSlots.Lease]],
    CountDownLatch) = {
    val result = new AtomicReference[Either[Throwable, BarrierSlots.Lease]]()
    val done = new CountDownLatch(1)
    val thread = new Thread(() => {
      try result.set(Right(BarrierSlots.acquire(n, () => total, tooFew)))
      catch { case e: Throwable => result.set(Left(e)) }
      finally done.countDown()
    })
    thread.setDaemon(true)
    thread.start()
    (thread, result, done)
  }

  private def settle(): Unit = Thread.sleep(300)

  test("fits that fit together run together; one that does not waits for a lease to close") {
    val first = BarrierSlots.acquire(1, () => Some(2), tooFew)
    val second = BarrierSlots.acquire(1, () => Some(2), tooFew)
    assert(BarrierSlots.inUse == 2)
    val (_, third, done) = acquireLater(1, Some(2))
    settle()
    assert(done.getCount == 1, "no slot is free")
    first.close()
    assert(done.await(5, TimeUnit.SECONDS))
    second.close()
    third.get.toOption.get.close()
    first.close() // a second close gives back nothing more
    assert(BarrierSlots.inUse == 0)
  }

  test("first come, first served: a small fit does not overtake a waiting large one") {
    val held = BarrierSlots.acquire(1, () => Some(2), tooFew)
    val (_, large, largeDone) = acquireLater(2, Some(2))
    settle()
    val (_, small, smallDone) = acquireLater(1, Some(2))
    settle()
    assert(largeDone.getCount == 1 && smallDone.getCount == 1, "the free slot waits for the large fit")
    held.close()
    assert(largeDone.await(5, TimeUnit.SECONDS))
    settle()
    assert(smallDone.getCount == 1)
    large.get.toOption.get.close()
    assert(smallDone.await(5, TimeUnit.SECONDS))
    small.get.toOption.get.close()
    assert(BarrierSlots.inUse == 0)
  }

  test("a fit needing more slots than the cluster has fails at once, also while waiting") {
    val start = System.nanoTime()
    assert(intercept[IllegalStateException](BarrierSlots.acquire(3, () => Some(2), tooFew)).getMessage == "only 2 slots")
    assert(System.nanoTime() - start < TimeUnit.SECONDS.toNanos(1))
    val slots = new AtomicInteger(2)
    val held = BarrierSlots.acquire(2, () => Some(2), tooFew)
    val result = new AtomicReference[Throwable]()
    val done = new CountDownLatch(1)
    val waiting = new Thread(() => {
      try BarrierSlots.acquire(2, () => Some(slots.get), tooFew).close()
      catch { case e: Throwable => result.set(e) }
      finally done.countDown()
    })
    waiting.start()
    settle()
    slots.set(1) // an executor was lost
    assert(done.await(5, TimeUnit.SECONDS))
    assert(result.get.getMessage == "only 1 slots")
    held.close()
    assert(BarrierSlots.inUse == 0)
  }

  test("with the cluster's size unknown, barrier jobs run one at a time") {
    val held = BarrierSlots.acquire(1, () => None, tooFew)
    val (_, next, done) = acquireLater(1, None)
    settle()
    assert(done.getCount == 1)
    held.close()
    assert(done.await(5, TimeUnit.SECONDS))
    next.get.toOption.get.close()
  }

  test("an interrupted wait leaves the queue, so the fits behind it go on") {
    val held = BarrierSlots.acquire(2, () => Some(2), tooFew)
    val (thread, interrupted, interruptedDone) = acquireLater(2, Some(2))
    settle()
    val (_, behind, behindDone) = acquireLater(1, Some(2))
    settle()
    thread.interrupt()
    assert(interruptedDone.await(5, TimeUnit.SECONDS))
    assert(interrupted.get.left.toOption.exists(_.isInstanceOf[InterruptedException]))
    held.close()
    assert(behindDone.await(5, TimeUnit.SECONDS))
    behind.get.toOption.get.close()
    assert(BarrierSlots.inUse == 0)
  }
}
