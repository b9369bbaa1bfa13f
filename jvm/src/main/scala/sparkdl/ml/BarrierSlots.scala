package sparkdl.ml

import scala.collection.mutable

/** The driver's lease on task slots for barrier jobs, shared by every fit in this JVM.
  *
  * A barrier job needs all its tasks running at once. Fits started together (e.g.
  * `CrossValidator.setParallelism(2)`) could otherwise submit barrier jobs whose tasks
  * together need more slots than the cluster has, each waiting for slots the other holds.
  * Each fit takes a lease of `numWorkers` slots before it submits its barrier job and gives
  * it back when the job ends: fits that fit together run together, the others wait their
  * turn, first come first served. A fit needing more slots than the cluster has fails at
  * once instead of waiting.
  *
  * {{{
  * val lease = BarrierSlots.acquire(2, () => TorchEstimator.taskSlots(sc), found => error(found))
  * try runBarrierJob() finally lease.close()
  * }}}
  */
private[ml] object BarrierSlots {

  /** Slots held by one fit; `close` gives them back (once). */
  final class Lease private[BarrierSlots] (val slots: Int) extends AutoCloseable {
    private var open = true
    override def close(): Unit = lock.synchronized {
      if (open) {
        open = false
        held -= slots
        lock.notifyAll()
      }
    }
  }

  private val lock = new Object
  private var held = 0                           // guarded by lock
  private val waiting = mutable.Queue.empty[Long] // tickets, in arrival order; guarded by lock
  private var nextTicket = 0L                     // guarded by lock
  private val RecheckMs = 500L

  /** Slots leased now, by fits of this JVM. */
  def inUse: Int = lock.synchronized(held)

  /** Waits until `n` slots are free, then leases them.
    *
    * @param total    the cluster's task slots now, if known (re-read while waiting, as
    *                 executors come and go); unknown: barrier jobs run one at a time
    * @param tooFew   the error for a cluster with fewer than `n` slots in all
    * @throws InterruptedException if the waiting thread is interrupted (a cancelled fit)
    */
  def acquire(n: Int, total: () => Option[Int], tooFew: Int => Exception): Lease = lock.synchronized {
    require(n > 0, s"numWorkers must be positive. Received: numWorkers=$n")
    val ticket = nextTicket
    nextTicket += 1
    waiting.enqueue(ticket)
    try {
      var slots = total()
      while (waiting.head != ticket || !slots.fold(held == 0)(held + n <= _)) {
        slots.filter(_ < n).foreach(found => throw tooFew(found))
        lock.wait(RecheckMs)
        slots = total()
      }
      held += n
      new Lease(n)
    } finally {
      waiting -= ticket
      lock.notifyAll()
    }
  }
}
