package sparkdl.ml

import scala.collection.mutable
import scala.util.control.NonFatal

import org.apache.spark.TaskContext
import org.apache.spark.network.util.JavaUtils
import org.apache.spark.sql.SparkSession

/** This executor JVM's idle `python -m sparkdl.worker` processes, kept warm between tasks as
  * PySpark keeps its Python workers (`spark.python.worker.reuse`): a task takes an idle live
  * worker, or starts one, and gives it back at its end if the task succeeded and the worker
  * is between requests; any other worker is stopped. Python and torch are then imported once
  * per worker instead of once per task.
  *
  * Idle workers are keyed by Python executable and the environment sparkdl sets for them, and
  * stop after `spark.sparkdl.worker.idleTimeout` unused (default 60s) and when the JVM exits.
  * A worker also exits by itself when its socket closes, so one never outlives its JVM.
  * `spark.sparkdl.worker.reuse=false` starts a fresh worker for every task.
  *
  * {{{
  * spark.conf.set("spark.sparkdl.worker.reuse", "false")      // a fresh worker per task
  * spark.conf.set("spark.sparkdl.worker.idleTimeout", "5min")  // keep idle workers longer
  * }}}
  */
private[ml] object PythonWorkerPool {
  val ReuseConf = "spark.sparkdl.worker.reuse"
  val IdleTimeoutConf = "spark.sparkdl.worker.idleTimeout"
  private val DefaultIdleTimeout = "60s"
  private val ReapEveryMs = 1000L

  /** Workers are interchangeable only for the same Python and environment. */
  final case class Key(python: String, env: Map[String, String])

  /** How tasks use the pool; read on the driver, shipped with the tasks.
    *
    * @param reuse         take idle workers and keep healthy ones after a task
    * @param idleTimeoutMs how long an idle worker waits for a task before it is stopped
    */
  final case class Settings(reuse: Boolean, idleTimeoutMs: Long)

  object Settings {
    /** The session's settings: runtime conf (`spark.conf.set`) first, then the SparkConf.
      *
      * @throws IllegalArgumentException naming the conf key for a value that does not parse
      */
    def of(spark: SparkSession): Settings =
      parse(spark.conf.get(ReuseConf, "true"), spark.conf.get(IdleTimeoutConf, DefaultIdleTimeout))

    /** Settings from the two conf values, as text.
      *
      * @throws IllegalArgumentException naming the conf key for a value that does not parse
      */
    def parse(reuseText: String, timeoutText: String): Settings = {
      val reuse = reuseText.trim.toLowerCase(java.util.Locale.ROOT) match {
        case "true"  => true
        case "false" => false
        case _ => throw new IllegalArgumentException(
          s"$ReuseConf must be true or false. Received: $ReuseConf=${reuseText.trim}")
      }
      val timeoutMs =
        try JavaUtils.timeStringAsMs(timeoutText.trim)
        catch {
          case NonFatal(_) => throw new IllegalArgumentException(
            s"$IdleTimeoutConf must be a duration such as 60s or 5min. Received: $IdleTimeoutConf=${timeoutText.trim}")
        }
      if (timeoutMs <= 0)
        throw new IllegalArgumentException(
          s"$IdleTimeoutConf must be positive. Received: $IdleTimeoutConf=${timeoutText.trim}")
      Settings(reuse, timeoutMs)
    }
  }

  private final class Idle(val worker: PythonWorker, val expires: Long)

  // Guarded by `idle`. Most recently used last: tasks take the warmest, the rest time out.
  private val idle = mutable.HashMap.empty[Key, List[Idle]]

  /** A worker for the current task, given back (or stopped) when the task completes.
    *
    * @param what what the task is, for messages, e.g. "rank 0"
    */
  def forTask(ctx: TaskContext, python: String, what: String, settings: Settings): PythonWorker = {
    val key = Key(python, env(ctx))
    val worker = take(key, what, settings)
    ctx.addTaskCompletionListener[Unit] { done =>
      release(key, worker, settings, succeeded = !done.isFailed() && !done.isInterrupted())
    }
    worker
  }

  // Sized at start for the task's CPUs (OpenMP and MKL read it at import), unless the
  // executor sets it: PySpark does the same for its workers.
  private def env(ctx: TaskContext): Map[String, String] =
    if (sys.env.contains("OMP_NUM_THREADS") || ctx.cpus() <= 0) Map.empty
    else Map("OMP_NUM_THREADS" -> ctx.cpus().toString)

  /** An idle live worker for `key`, or a new one. */
  def take(key: Key, what: String, settings: Settings): PythonWorker = {
    if (settings.reuse) {
      var next = pop(key)
      while (next.isDefined) {
        val worker = next.get
        if (worker.reusable) {
          worker.assign(what)
          return worker
        }
        worker.close() // it died or was killed while idle: replaced transparently
        next = pop(key)
      }
    }
    new PythonWorker(key.python, key.env, what)
  }

  private def pop(key: Key): Option[PythonWorker] = idle.synchronized {
    idle.get(key) match {
      case Some(items) if items.nonEmpty =>
        if (items.size == 1) idle.remove(key) else idle(key) = items.init
        Some(items.last.worker)
      case _ => None
    }
  }

  /** Keeps `worker` for the next task if it may be reused; stops it otherwise. */
  def release(key: Key, worker: PythonWorker, settings: Settings, succeeded: Boolean): Unit =
    if (settings.reuse && succeeded && worker.reusable) {
      reaper
      idle.synchronized {
        idle(key) = idle.getOrElse(key, Nil) :+ new Idle(worker, System.currentTimeMillis() + settings.idleTimeoutMs)
      }
    } else worker.close()

  /** Process ids of the idle workers (diagnostics). */
  def idlePids: Seq[Long] = idle.synchronized(idle.values.flatten.map(_.worker.pid).toSeq)

  /** Stops idle workers whose time is up or whose process ended. */
  private[ml] def reap(now: Long = System.currentTimeMillis()): Unit = {
    val retired = idle.synchronized {
      val (gone, kept) = idle.toSeq.map { case (key, items) =>
        val (old, live) = items.partition(i => i.expires <= now || !i.worker.reusable)
        (old, key -> live)
      }.unzip
      idle.clear()
      kept.filter(_._2.nonEmpty).foreach(idle += _)
      gone.flatten
    }
    retired.foreach(_.worker.close())
  }

  private def closeAll(): Unit = {
    val all = idle.synchronized { val items = idle.values.flatten.toList; idle.clear(); items }
    all.foreach(i => try i.worker.close() catch { case NonFatal(_) => () })
  }

  // Started with the first idle worker: a daemon thread that retires idle workers, and a
  // shutdown hook that stops them with the JVM (they would exit anyway on the closed socket).
  private lazy val reaper: Unit = {
    val thread = new Thread(() => {
      while (true) {
        Thread.sleep(ReapEveryMs)
        try reap() catch { case NonFatal(_) => () } // never stop the executor over a worker
      }
    }, "sparkdl-worker-pool-reaper")
    thread.setDaemon(true)
    thread.start()
    Runtime.getRuntime.addShutdownHook(new Thread(() => closeAll(), "sparkdl-worker-pool-shutdown"))
  }
}
