package sparkdl.ml

import java.time.{OffsetDateTime, ZoneOffset}
import java.time.format.DateTimeFormatter
import java.time.temporal.ChronoUnit

import scala.annotation.tailrec

import org.apache.spark.SparkException
import org.slf4j.LoggerFactory

import sparkdl.json.Json._

/** Running a Scala fit's barrier job again after a lost executor: the JVM twin of Python's
  * `sparkdl.ml.recovery`.
  *
  * Spark never retries a failed barrier ResultStage. [[run]] runs the job again, up to
  * `maxRestarts` times, when it failed for a reason outside the user's code (a lost
  * executor, a killed or crashed rank process, a rank that stopped answering, a collective
  * or rendezvous timeout), after waiting for the cluster to have `numWorkers` task slots
  * again ([[waitForSlots]], bounded by the fit's `timeout`). A failure that would repeat
  * ([[retryable]]: the user's code, settings or data, a cancelled job) surfaces at once.
  * Each run is an [[Attempt]] in the model's history, with the fields Python records.
  *
  * A restarted attempt resumes from the newest training state rank 0 handed the driver
  * ([[EpochState]], every `driverStateInterval` epochs), or from the first epoch without one:
  * training is deterministic, so the final weights are those of an uninterrupted run.
  *
  * {{{
  * val done = Restarts.run(maxRestarts = 3, beforeRestart = () => waitForCluster(),
  *   resumeEpoch = () => newestState.fold(0)(_.epoch)) { attempt =>
  *   try barrierRdd.collect()
  *   catch { case e: SparkException => throw new Restarts.JobFailed(shownText(e), e) }
  * }
  * done.result; done.attempts.map(_.toJson)
  * }}}
  */
private[ml] object Restarts {

  private val log = LoggerFactory.getLogger(getClass)

  /** Errors that fail the same way on every attempt (the user's code, settings, data) and
    * fits that were cancelled or whose SparkContext stopped: the words Python's
    * `sparkdl.ml.recovery` checks. The Python worker's traceback, which names the exception's
    * class (`sparkdl.errors.TrainingCodeError: ...`), is in the job's message.
    */
  val Deterministic: Seq[String] = Seq("TrainingCodeError", "ConfigError", "SchemaError", "UntrustedCodeError",
    "ModuleNotFoundError", "PicklingError", "SyntaxError", "cancelled", "SparkContext was shut down",
    "SparkContext has been shutdown")

  /** Results over the driver's cap: as large on every attempt. */
  private val Final = """is bigger than spark\.driver\.maxResultSize""".r

  /** A failed barrier job.
    *
    * @param shown what the fit reports (the worker's own text, without JVM frames)
    * @param job   Spark's exception for the job; its message is classified
    */
  final class JobFailed(val shown: String, val job: Throwable) extends SparkException(shown, job) {
    /** Everything known about the failure: Spark's message, which holds the worker's traceback. */
    def fullText: String = s"${Option(job).flatMap(j => Option(j.getMessage)).getOrElse("")}\n$shown"
  }

  /** Whether a failed barrier job may succeed when run again.
    *
    * {{{
    * retryable("ExecutorLostFailure (executor 1 exited caused by one of the running tasks)") // true
    * retryable("A training worker failed: ... sparkdl.errors.TrainingCodeError: ...")         // false
    * }}}
    */
  def retryable(message: String): Boolean = {
    val text = Option(message).getOrElse("")
    !Deterministic.exists(text.contains) && Final.findFirstIn(text).isEmpty
  }

  /** The failed rank and executor named in Spark's barrier-stage error, where given. */
  final case class Facts(failedRank: Option[Int] = None, failedExecutor: Option[String] = None)

  private val BarrierTask = """barrier task \w+Task\(\d+, (\d+)\)""".r
  // Spark's own phrasings only: "ExecutorLostFailure (executor 3 exited ...)",
  // "Lost task 0.0 in stage 5.0 (TID 9) (10.0.0.7 executor 3): ...".
  private val Executor = Seq("""ExecutorLostFailure \(executor (\w+)""".r, """\(TID \d+\) \(\S+ executor (\w+)\)""".r)

  /** As Python's `failure_facts`:
    * {{{
    * failureFacts("Stage failed because barrier task ResultTask(7, 1) finished unsuccessfully.\n" +
    *   "ExecutorLostFailure (executor 3 exited ...)")   // Facts(Some(1), Some("3"))
    * }}}
    */
  def failureFacts(message: String): Facts = {
    val text = Option(message).getOrElse("")
    Facts(BarrierTask.findFirstMatchIn(text).map(_.group(1).toInt),
      Executor.iterator.flatMap(_.findFirstMatchIn(text)).nextOption().map(_.group(1)))
  }

  /** The line that says what went wrong: the last one naming an Error or a Failure (as
    * Python's `_cause`), at most 500 characters; JVM frames and Spark's driver stack trace
    * are left out.
    */
  def cause(message: String): String = {
    val text = Option(message).getOrElse("").split("\nDriver stacktrace:").head
    val lines = text.split("\n").map(_.trim).filter(l => l.nonEmpty && !l.startsWith("at "))
    lines.reverseIterator.find(l => l.contains("Error") || l.contains("Failure"))
      .orElse(lines.lastOption).getOrElse("").take(500)
  }

  /** One run of the barrier job, as Python's `TrainingHistory.attempts` holds it. */
  final case class Attempt(attempt: Int, started: String, ended: String, status: String, resumedFromEpoch: Int = 0,
                           cause: Option[String] = None, facts: Facts = Facts()) {
    /** The JSON object Python's `TrainingHistory.from_dict` reads. */
    def toJson: JObj = JObj(Vector("attempt" -> JInt(attempt), "started" -> JStr(started),
      "resumed_from_epoch" -> JInt(resumedFromEpoch), "ended" -> JStr(ended), "status" -> JStr(status)) ++
      cause.map(c => "cause" -> JStr(c)) ++ facts.failedRank.map(r => "failed_rank" -> JInt(r)) ++
      facts.failedExecutor.map(e => "failed_executor" -> JStr(e)))
  }

  private val Iso = DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ssxxx")

  /** Now in UTC, to the second, as Python's `datetime.isoformat(timespec="seconds")`:
    * `2025-01-31T12:00:00+00:00`.
    */
  def now(): String = OffsetDateTime.now(ZoneOffset.UTC).truncatedTo(ChronoUnit.SECONDS).format(Iso)

  /** Python's `f"{value:g}"` for a timeout: `600`, `15`, `0.5`. */
  private[ml] def seconds(value: Double): String =
    if (value == math.rint(value) && math.abs(value) < 1e15) value.toLong.toString
    else java.math.BigDecimal.valueOf(value).stripTrailingZeros.toPlainString

  /** Waits until `numWorkers` barrier tasks fit again (after a lost executor), at most
    * `timeoutS` seconds: a cluster manager replaces a lost executor within seconds to minutes.
    *
    * @param slots the cluster's task slots now, if this Spark tells ([[TorchEstimator.taskSlots]])
    * @return the slots found (unknown: at once, as [[BarrierSlots]] then runs jobs one at a time)
    * @throws SparkException naming `numWorkers`, the slots seen and the timeout, if they did
    *                        not come back in time
    */
  def waitForSlots(numWorkers: Int, timeoutS: Double, slots: () => Option[Int], master: String,
                   pollMs: Long = 500L, clock: () => Long = () => System.nanoTime()): Option[Int] = {
    val deadline = clock() + (timeoutS * 1e9).toLong
    var found = slots()
    val seen = scala.collection.mutable.SortedSet.empty[Int] ++ found
    while (found.exists(_ < numWorkers) && clock() < deadline) {
      Thread.sleep(pollMs)
      found = slots()
      seen ++= found
    }
    if (found.exists(_ < numWorkers))
      throw new SparkException(s"The training job lost an executor and the cluster did not come back to " +
        s"numWorkers=$numWorkers task slots within timeout=${seconds(timeoutS)} s (slots seen while waiting: " +
        s"${seen.mkString("[", ", ", "]")}; master '$master'). Add executors, lower numWorkers, or raise timeout.")
    found
  }

  /** The last job's result and every attempt, in order. */
  final case class Done[T](result: T, attempts: Vector[Attempt]) {
    def attemptsJson: JArr = JArr(attempts.map(_.toJson))
  }

  /** Runs `job` (given its attempt number, 1, 2, ...) and runs it again, up to `maxRestarts`
    * times, after it threw a [[JobFailed]] that is [[retryable]]: logs a warning, calls
    * `beforeRestart` (which waits for the cluster; what it throws ends the fit), then reruns.
    * Anything else `job` throws ends the fit at once, unrecorded. `resumeEpoch` tells, before
    * each attempt, the epoch it resumes from (0: the first epoch).
    *
    * @throws SparkException the last failure: the [[JobFailed]] itself if it was the only
    *                        attempt, else its text plus "(sparkdl ran the barrier job N
    *                        times; maxRestarts=M)"
    */
  def run[T](maxRestarts: Int, beforeRestart: () => Unit, resumeEpoch: () => Int = () => 0,
             warn: String => Unit = log.warn(_), clock: () => String = () => now())(job: Int => T): Done[T] = {
    require(maxRestarts >= 0, s"maxRestarts must be >= 0. Received: maxRestarts=$maxRestarts")
    val attempts = Vector.newBuilder[Attempt]

    @tailrec def attempt(number: Int, from: Int): T = {
      val started = clock()
      val outcome = try Right(job(number)) catch { case failed: JobFailed => Left(failed) }
      outcome match {
        case Right(result) =>
          attempts += Attempt(number, started, clock(), "finished", from)
          result
        case Left(failed) =>
          val text = failed.fullText
          val record = Attempt(number, started, clock(), "failed", from, cause = Some(cause(failed.shown)),
            facts = failureFacts(text))
          attempts += record
          if (!retryable(text) || number > maxRestarts) {
            if (number == 1) throw failed
            throw new SparkException(s"${failed.shown}\n(sparkdl ran the barrier job $number times; " +
              s"maxRestarts=$maxRestarts)", failed.job)
          }
          warn(s"sparkdl: the training job failed (attempt $number of ${maxRestarts + 1}): " +
            s"${record.cause.getOrElse("")}; restarting")
          beforeRestart()
          val next = resumeEpoch()
          warn(s"sparkdl: restarting the training job (attempt ${number + 1}) from " +
            (if (next > 0) s"epoch $next" else "the first epoch"))
          attempt(number + 1, next)
      }
    }

    val result = attempt(1, resumeEpoch())
    Done(result, attempts.result())
  }
}
