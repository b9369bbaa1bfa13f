package sparkdl.ml

import java.nio.charset.StandardCharsets.UTF_8
import java.nio.file.{Files, Paths}
import java.util.concurrent.TimeUnit

import org.scalatest.funsuite.AnyFunSuite

/** The executor's pool of warm `python -m sparkdl.worker` processes, with real workers.
  *
  * A worker that has connected and authenticated waits between requests, so these tests
  * need no torch work: they take, give back, kill and time out real processes.
  */
class PythonWorkerPoolSuite extends AnyFunSuite {

  private val python = sys.props.getOrElse("sparkdl.python", "../.venv/bin/python")
  private val reuse = PythonWorkerPool.Settings(reuse = true, idleTimeoutMs = 60000)

  private def key(name: String) = PythonWorkerPool.Key(python, Map("SPARKDL_POOL_TEST" -> name))

  private def alive(pid: Long): Boolean = ProcessHandle.of(pid).map[Boolean](_.isAlive).orElse(false)

  private def gone(pid: Long): Boolean = {
    ProcessHandle.of(pid).ifPresent(h => h.onExit().get(10, TimeUnit.SECONDS))
    !alive(pid)
  }

  private def requirePython(): Unit =
    assume(Files.isExecutable(Paths.get(python)), s"no Python with sparkdl at $python (run make setup)")

  test("conf values parse, and bad ones name the conf key") {
    assert(PythonWorkerPool.Settings.parse("false", "5min") == PythonWorkerPool.Settings(reuse = false, 300000))
    assert(PythonWorkerPool.Settings.parse(" TRUE ", "60s") == PythonWorkerPool.Settings(reuse = true, 60000))
    assert(intercept[IllegalArgumentException](PythonWorkerPool.Settings.parse("yes", "60s")).getMessage ==
      "spark.sparkdl.worker.reuse must be true or false. Received: spark.sparkdl.worker.reuse=yes")
    assert(intercept[IllegalArgumentException](PythonWorkerPool.Settings.parse("true", "soon")).getMessage ==
      "spark.sparkdl.worker.idleTimeout must be a duration such as 60s or 5min. " +
        "Received: spark.sparkdl.worker.idleTimeout=soon")
    assert(intercept[IllegalArgumentException](PythonWorkerPool.Settings.parse("true", "0s")).getMessage
      .startsWith("spark.sparkdl.worker.idleTimeout must be positive"))
  }

  test("a worker given back is taken again; with reuse off a new one starts and the old one stops") {
    requirePython()
    val k = key("reuse")
    val first = PythonWorkerPool.take(k, "task 1", reuse)
    PythonWorkerPool.release(k, first, reuse, succeeded = true)
    assert(PythonWorkerPool.idlePids.contains(first.pid))
    val second = PythonWorkerPool.take(k, "task 2", reuse)
    assert(second eq first)
    val off = reuse.copy(reuse = false)
    val third = PythonWorkerPool.take(k, "task 3", off)
    assert(third.pid != first.pid)
    PythonWorkerPool.release(k, third, off, succeeded = true)
    PythonWorkerPool.release(k, second, off, succeeded = true)
    assert(gone(first.pid) && gone(third.pid))
  }

  test("a worker killed while idle is replaced by a new one") {
    requirePython()
    val k = key("killed")
    val first = PythonWorkerPool.take(k, "task 1", reuse)
    PythonWorkerPool.release(k, first, reuse, succeeded = true)
    new ProcessBuilder("kill", "-9", first.pid.toString).start().waitFor()
    assert(gone(first.pid))
    val next = PythonWorkerPool.take(k, "task 2", reuse)
    assert(next.pid != first.pid && next.reusable)
    next.close()
  }

  test("a worker mid-request, or of a failed task, is stopped instead of kept") {
    requirePython()
    val k = key("unclean")
    val busy = PythonWorkerPool.take(k, "task 1", reuse)
    // A scoring request whose architecture never comes: the worker waits mid-request.
    busy.send(PythonWorker.Request, """{"mode": "score", "task": {"rank": 0}}""".getBytes(UTF_8))
    assert(!busy.reusable)
    PythonWorkerPool.release(k, busy, reuse, succeeded = true)
    assert(gone(busy.pid) && !PythonWorkerPool.idlePids.contains(busy.pid))
    val failed = PythonWorkerPool.take(k, "task 2", reuse)
    PythonWorkerPool.release(k, failed, reuse, succeeded = false)
    assert(gone(failed.pid))
  }

  test("idle workers stop after the idle timeout") {
    requirePython()
    val k = key("timeout")
    val short = reuse.copy(idleTimeoutMs = 50)
    val worker = PythonWorkerPool.take(k, "task 1", short)
    PythonWorkerPool.release(k, worker, short, succeeded = true)
    PythonWorkerPool.reap(System.currentTimeMillis() + 100)
    assert(!PythonWorkerPool.idlePids.contains(worker.pid) && gone(worker.pid))
  }

  test("a worker that dies before connecting fails with its exit code and output") {
    requirePython()
    val script = Files.createTempFile("sparkdl-dies", ".sh")
    Files.writeString(script, "#!/bin/sh\necho 'no sparkdl here' >&2\nexit 7\n")
    script.toFile.setExecutable(true)
    val k = PythonWorkerPool.Key(script.toString, Map.empty)
    val e = intercept[org.apache.spark.SparkException](PythonWorkerPool.take(k, "rank 0", reuse))
    assert(e.getMessage.contains("for rank 0 exited with code 7 before connecting"))
    assert(e.getMessage.contains("no sparkdl here"))
    Files.delete(script)
  }
}
