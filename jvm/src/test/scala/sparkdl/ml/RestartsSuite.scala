package sparkdl.ml

import java.util.concurrent.atomic.AtomicInteger

import scala.collection.mutable

import org.apache.spark.SparkException
import org.scalatest.funsuite.AnyFunSuite

import sparkdl.json.CanonicalJson
import sparkdl.json.Json._

/** Which failed barrier jobs run again, what each attempt records, and the wait for slots.
  * The real thing (an executor JVM killed mid-fit) is in
  * `tests/integration/test_scala_estimator.py`.
  */
class RestartsSuite extends AnyFunSuite {

  /** Spark's message for a barrier stage that lost an executor (Spark 4), as the fit sees it. */
  private val executorLost =
    "Job aborted due to stage failure: Could not recover from a failed barrier ResultStage. Most recent failure " +
      "reason: Stage failed because barrier task ResultTask(12, 1) finished unsuccessfully.\n" +
      "ExecutorLostFailure (executor 1 exited caused by one of the running tasks) Reason: Command exited with code " +
      "137\nDriver stacktrace:\n\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler" +
      ".scala:2935)\n\tat scala.Option.foreach(Option.scala:437)"

  /** A rank's Python worker whose forward pass raised: the worker's traceback in the task's error. */
  private val userCode =
    "Job aborted due to stage failure: Lost task 0.0 in stage 4.0 (TID 9) (10.0.0.2 executor 0): " +
      "org.apache.spark.SparkException: The sparkdl Python worker for rank 0 failed:\nTraceback (most recent call " +
      "last):\n  File \"loop.py\", line 147, in train_loop\nValueError: boom\n\nsparkdl.errors.TrainingCodeError: " +
      "The network's forward pass, the loss or the backward pass raised ValueError on rank 0 in epoch 3, step 2: boom" +
      "\n\tat sparkdl.ml.PythonWorker.expect(PythonWorker.scala:307)"

  private def failed(message: String): Restarts.JobFailed =
    new Restarts.JobFailed(TorchEstimator.workerError(message), new SparkException(message))

  test("infrastructure failures are retried; the user's code, settings and data, and cancelled jobs are not") {
    assert(Restarts.retryable(executorLost))
    assert(Restarts.retryable("The sparkdl Python worker ('python3 -m sparkdl.worker', pid 7) for rank 1 exited " +
      "(exit code 11)"))
    assert(Restarts.retryable("RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed " +
      "by peer"))
    assert(!Restarts.retryable(userCode))
    for (name <- Restarts.Deterministic)
      assert(!Restarts.retryable(s"Traceback ...\nsparkdl.errors.$name: bad"), name)
    assert(!Restarts.retryable("Job 7 cancelled part of cancelled job group tuning"))
    assert(!Restarts.retryable("Job 3 cancelled because SparkContext was shut down"))
    assert(!Restarts.retryable("Cannot call methods on a stopped SparkContext: SparkContext has been shutdown"))
    assert(!Restarts.retryable("Total size of serialized results of 2 tasks (1100.0 MiB) is bigger than " +
      "spark.driver.maxResultSize (1024.0 MiB)"))
    assert(Restarts.retryable(null))
  }

  test("the failed rank and executor come from Spark's barrier-stage message, as in Python") {
    assert(Restarts.failureFacts(executorLost) == Restarts.Facts(Some(1), Some("1")))
    assert(Restarts.failureFacts("Stage failed because barrier task ResultTask(7, 1) finished unsuccessfully.\n" +
      "ExecutorLostFailure (executor 3 exited ...)") == Restarts.Facts(Some(1), Some("3")))
    assert(Restarts.failureFacts(userCode) == Restarts.Facts(None, Some("0")))
    assert(Restarts.failureFacts("nothing to see") == Restarts.Facts())
    assert(Restarts.failureFacts("the worker on executor 5 said no") == Restarts.Facts(), "Spark's phrasings only")
  }

  test("the cause is the last line naming an error or failure, without JVM frames") {
    assert(Restarts.cause(TorchEstimator.workerError(executorLost)).startsWith(
      "ExecutorLostFailure (executor 1 exited caused by one of the running tasks)"))
    assert(Restarts.cause(TorchEstimator.workerError(userCode)).startsWith("sparkdl.errors.TrainingCodeError: " +
      "The network's forward pass"))
    assert(Restarts.cause("just this") == "just this")
    assert(Restarts.cause("x" * 900 + "Error").length == 500)
  }

  test("an attempt is the JSON object Python's TrainingHistory keeps") {
    val ok = Restarts.Attempt(2, "2025-01-31T12:00:05+00:00", "2025-01-31T12:00:09+00:00", "finished")
    assert(CanonicalJson.write(ok.toJson) == """{"attempt":2,"ended":"2025-01-31T12:00:09+00:00",""" +
      """"resumed_from_epoch":0,"started":"2025-01-31T12:00:05+00:00","status":"finished"}""")
    val bad = ok.copy(attempt = 1, status = "failed", cause = Some("ExecutorLostFailure"),
      facts = Restarts.Facts(Some(1), Some("3")))
    assert(bad.toJson.get("failed_rank").contains(JInt(1)) && bad.toJson.get("failed_executor").contains(JStr("3")))
    assert(bad.toJson.get("cause").contains(JStr("ExecutorLostFailure")))
    assert(Restarts.now().matches("""\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"""))
  }

  /** Runs `Restarts.run` with a job that fails with `failures` (in order), then returns 42. */
  private def runWith(maxRestarts: Int, failures: String*): (Either[Throwable, Restarts.Done[Int]], Seq[Int],
    Seq[String], Int) = runResuming(maxRestarts, () => 0, failures: _*)

  private def runResuming(maxRestarts: Int, resumeEpoch: () => Int, failures: String*)
      : (Either[Throwable, Restarts.Done[Int]], Seq[Int], Seq[String], Int) = {
    val calls = mutable.Buffer.empty[Int]
    val warnings = mutable.Buffer.empty[String]
    val waits = new AtomicInteger()
    val tick = new AtomicInteger()
    val result =
      try Right(Restarts.run(maxRestarts, () => { waits.incrementAndGet(); () }, resumeEpoch, warnings += _,
        () => f"2025-01-31T12:00:${tick.getAndIncrement()}%02d+00:00") { attempt =>
        calls += attempt
        if (attempt <= failures.length) throw failed(failures(attempt - 1))
        42
      })
      catch { case e: Throwable => Left(e) }
    (result, calls.toSeq, warnings.toSeq, waits.get)
  }

  test("a lost executor reruns the job after waiting for the cluster, and every attempt is recorded") {
    val (result, calls, warnings, waits) = runWith(3, executorLost)
    val done = result.toOption.get
    assert(done.result == 42 && calls == Seq(1, 2) && waits == 1)
    assert(done.attempts.map(a => (a.attempt, a.status)) == Vector(1 -> "failed", 2 -> "finished"))
    val first = done.attempts.head
    assert(first.started == "2025-01-31T12:00:00+00:00" && first.ended == "2025-01-31T12:00:01+00:00")
    assert(first.facts == Restarts.Facts(Some(1), Some("1")) && first.cause.exists(_.startsWith("ExecutorLostFailure")))
    assert(done.attempts.forall(_.resumedFromEpoch == 0))
    assert(warnings.head.startsWith("sparkdl: the training job failed (attempt 1 of 4): ExecutorLostFailure"))
    assert(warnings(1) == "sparkdl: restarting the training job (attempt 2) from the first epoch")
    assert(done.attemptsJson.items.length == 2)
  }

  test("a restart resumes from the epoch of the newest state the driver holds, and says so") {
    val (none, _, first, _) = runWith(3, executorLost)
    assert(none.toOption.get.attempts.map(_.resumedFromEpoch) == Vector(0, 0))
    assert(first(1) == "sparkdl: restarting the training job (attempt 2) from the first epoch")
    // asked once before the first attempt and once per restart, after the wait for the cluster
    val newest = new AtomicInteger(2)
    val (result, calls, warnings, _) = runResuming(3, () => newest.getAndIncrement(), executorLost, executorLost)
    val done = result.toOption.get
    assert(calls == Seq(1, 2, 3) && done.attempts.map(_.resumedFromEpoch) == Vector(2, 3, 4))
    assert(done.attempts(1).toJson.get("resumed_from_epoch").contains(JInt(3)))
    assert(warnings(1) == "sparkdl: restarting the training job (attempt 2) from epoch 3")
    assert(warnings(3) == "sparkdl: restarting the training job (attempt 3) from epoch 4")
  }

  test("a failure in the user's code surfaces at once, as before, without a restart") {
    val (result, calls, warnings, waits) = runWith(3, userCode)
    val error = result.swap.toOption.get
    assert(calls == Seq(1) && waits == 0 && warnings.isEmpty)
    assert(error.isInstanceOf[Restarts.JobFailed])
    assert(error.getMessage.contains("TrainingCodeError") && !error.getMessage.contains("ran the barrier job"))
  }

  test("maxRestarts=0 fails on the first failure with the message of today") {
    val (result, calls, _, waits) = runWith(0, executorLost)
    val error = result.swap.toOption.get
    assert(calls == Seq(1) && waits == 0)
    assert(error.getMessage == TorchEstimator.workerError(executorLost))
  }

  test("after maxRestarts restarts the last error is raised, saying how often the job ran") {
    val (result, calls, _, waits) = runWith(2, executorLost, executorLost,
      executorLost.replace("code 137", "code 137 (third)"))
    val error = result.swap.toOption.get
    assert(calls == Seq(1, 2, 3) && waits == 2)
    assert(error.isInstanceOf[SparkException] && error.getMessage.contains("(third)"))
    assert(error.getMessage.endsWith("\n(sparkdl ran the barrier job 3 times; maxRestarts=2)"))
    assert(error.getCause.getMessage.contains("(third)"))
  }

  test("a user error after a restart is not retried either, and says the job ran twice") {
    val (result, calls, _, _) = runWith(3, executorLost, userCode)
    val error = result.swap.toOption.get
    assert(calls == Seq(1, 2))
    assert(error.getMessage.contains("TrainingCodeError") &&
      error.getMessage.contains("(sparkdl ran the barrier job 2 times; maxRestarts=3)"))
  }

  test("other errors of the job (no slots, an interrupted wait) end the fit unrecorded; so does the wait's own") {
    val calls = new AtomicInteger()
    val other = intercept[IllegalStateException](Restarts.run(3, () => ()) { _ =>
      calls.incrementAndGet(); throw new IllegalStateException("no slots")
    })
    assert(other.getMessage == "no slots" && calls.get == 1)
    val waited = intercept[SparkException](Restarts.run(3, () => throw new SparkException("slots gone"), warn = _ => ()) {
      _ => throw failed(executorLost)
    })
    assert(waited.getMessage == "slots gone")
    intercept[IllegalArgumentException](Restarts.run(-1, () => ())(_ => 1))
  }

  test("the wait for slots returns as soon as they are back") {
    val answers = Iterator(Some(1), Some(1), Some(2))
    assert(Restarts.waitForSlots(2, 60.0, () => answers.next(), "local-cluster[2,1,1024]", pollMs = 1L) == Some(2))
    assert(Restarts.waitForSlots(2, 60.0, () => None, "yarn", pollMs = 1L).isEmpty, "unknown: no wait")
  }

  test("slots that do not come back fail within the timeout, naming numWorkers, the slots seen and the timeout") {
    var nanos = 0L
    val answers = Iterator(Some(1), Some(0)) ++ Iterator.continually(Some(1))
    val error = intercept[SparkException](Restarts.waitForSlots(2, 15.0, () => answers.next(),
      "local-cluster[2,1,1024]", pollMs = 0L, clock = () => { nanos += 1000000000L; nanos }))
    assert(error.getMessage == "The training job lost an executor and the cluster did not come back to " +
      "numWorkers=2 task slots within timeout=15 s (slots seen while waiting: [0, 1]; master " +
      "'local-cluster[2,1,1024]'). Add executors, lower numWorkers, or raise timeout.")
    assert(Restarts.seconds(600.0) == "600" && Restarts.seconds(0.5) == "0.5")
  }

  test("maxRestarts and driverStateInterval: defaults as in Python, set and validated with a clear message") {
    val est = new TorchEstimator()
    assert(est.getMaxRestarts == 3 && est.getDriverStateInterval == 1)
    assert(est.setMaxRestarts(0).getMaxRestarts == 0 && est.setDriverStateInterval(0).getDriverStateInterval == 0)
    val bad = intercept[IllegalArgumentException](est.setMaxRestarts(-1))
    assert(bad.getMessage == "maxRestarts must be >= 0. Received: maxRestarts=-1")
    val badInterval = intercept[IllegalArgumentException](est.setDriverStateInterval(-2))
    assert(badInterval.getMessage == "driverStateInterval must be >= 0. Received: driverStateInterval=-2")
    assert(!est.maxRestarts.isValid(-1), "a ParamMap or grid value is checked too")
    assert(est.copy(org.apache.spark.ml.param.ParamMap.empty).getMaxRestarts == 0)
  }
}
