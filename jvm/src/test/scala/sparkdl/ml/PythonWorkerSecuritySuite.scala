package sparkdl.ml

import java.nio.file.{Files, Path, Paths}

import scala.concurrent.duration._
import scala.concurrent.{Await, ExecutionContext, Future}

import org.apache.spark.SparkException
import org.scalatest.funsuite.AnyFunSuite

/** The worker socket against other local users: a stranger that reaches the JVM's port
  * before the real worker (the port shows in `ps` and `/proc/net/tcp`) can neither exhaust
  * the heap, nor hang or fail the task, and a peer that proves it holds the secret still
  * cannot make the JVM allocate what it declares.
  *
  * The stranger runs from a stand-in `python` that the JVM starts in place of the worker:
  * it connects to the port (the worker's argument) first, then hands over to the real
  * `python -m sparkdl.worker`.
  */
class PythonWorkerSecuritySuite extends AnyFunSuite {

  private val python = Paths.get(sys.props.getOrElse("sparkdl.python", "../.venv/bin/python")).toAbsolutePath
  private implicit val ec: ExecutionContext = ExecutionContext.global

  private def requirePython(): Unit =
    assume(Files.isExecutable(python), s"no Python with sparkdl at $python (run make setup)")

  // Connects to the JVM's port as `mode` says, signals `ready`, and holds its connections
  // until the JVM closes them (or a minute passes).
  private val Rogue =
    """import select, socket, sys, time
      |mode, port, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
      |def header(kind, length):
      |    return kind.to_bytes(4, "big") + length.to_bytes(8, "big", signed=True)
      |conns = [socket.create_connection(("127.0.0.1", port))
      |         for _ in range(40 if mode == "flood" else 1)]
      |if mode == "huge":      # a 2 GB AUTH frame: the JVM must not allocate it
      |    conns[0].sendall(header(0, 2_000_000_000))
      |elif mode == "negative":
      |    conns[0].sendall(header(0, -1))
      |elif mode == "wrong":   # a well-formed answer, without the key
      |    conns[0].sendall(header(0, 64) + bytes(64))
      |open(ready, "w").close()
      |deadline = time.time() + 60
      |while conns and time.time() < deadline:
      |    for c in select.select(conns, [], [], 1)[0]:
      |        try:
      |            data = c.recv(1 << 16)
      |        except OSError:
      |            data = b""
      |        if not data:
      |            conns.remove(c)
      |""".stripMargin

  /** A `python` that lets the rogue in `mode` connect first, then starts the real worker. */
  private def pythonAfterRogue(mode: String): Path = {
    val dir = Files.createTempDirectory("sparkdl-rogue")
    val rogue = dir.resolve("rogue.py")
    Files.writeString(rogue, Rogue)
    script(dir, s"""'$python' '$rogue' $mode "$$4" '$dir/ready' &
                   |while [ ! -e '$dir/ready' ]; do sleep 0.05; done
                   |exec '$python' "$$@"
                   |""".stripMargin)
  }

  private def script(dir: Path, body: String): Path = {
    val file = dir.resolve("python")
    Files.writeString(file, "#!/bin/sh\n" + body)
    file.toFile.setExecutable(true)
    file
  }

  /** Starts a worker through `exec` within `limit`; a hang fails the test instead of the run. */
  private def start(exec: Path, limit: FiniteDuration = 60.seconds): (PythonWorker, Double) = {
    val began = System.nanoTime()
    val worker = Await.result(Future(new PythonWorker(exec.toString, Map.empty, "rank 0")), limit)
    (worker, (System.nanoTime() - began) / 1e9)
  }

  /** The real worker got through: it is connected, authenticated and serves a request. */
  private def serves(worker: PythonWorker): Unit = {
    assert(worker.reusable)
    worker.send(PythonWorker.Request, """{"mode": "dance", "task": {"rank": 0}}""".getBytes("UTF-8"))
    val e = intercept[SparkException](worker.recv())
    assert(e.getMessage.contains("Unknown mode 'dance'"), e.getMessage)
  }

  test("a stranger that connects first and declares a 2 GB handshake frame is dropped unread") {
    requirePython()
    val (worker, _) = start(pythonAfterRogue("huge"))
    try serves(worker) finally worker.close()
  }

  test("a stranger that connects first and declares a negative length is dropped") {
    requirePython()
    val (worker, _) = start(pythonAfterRogue("negative"))
    try serves(worker) finally worker.close()
  }

  test("a stranger that connects first and stays silent does not delay the worker to its deadline") {
    requirePython()
    val (worker, took) = start(pythonAfterRogue("silent"))
    try {
      // Handshakes run side by side: the worker does not wait behind the silent one.
      assert(took < PythonWorker.HandshakeTimeoutMs / 1000.0, s"the worker connected after $took s")
      serves(worker)
    } finally worker.close()
  }

  test("a stranger's wrong proof neither fails the task nor closes the listener") {
    requirePython()
    val (worker, _) = start(pythonAfterRogue("wrong"))
    try serves(worker) finally worker.close()
  }

  test("a flood of silent connections beyond the handshake limit delays the worker, never stops it") {
    requirePython()
    val (worker, took) = start(pythonAfterRogue("flood"))
    try {
      assert(took < PythonWorker.ConnectTimeoutS)
      serves(worker)
    } finally worker.close()
  }

  test("an authenticated peer's frame longer than any array fails the task before allocating") {
    requirePython()
    val dir = Files.createTempDirectory("sparkdl-fake-worker")
    val fake = dir.resolve("fake.py")
    Files.writeString(fake,
      """import os, sys, time
        |from sparkdl.worker.jvm_worker import RESULT, SECRET_ENV, connect
        |channel = connect(int(sys.argv[1]), os.environ[SECRET_ENV].encode())
        |channel.sock.sendall(RESULT.to_bytes(4, "big") + (1 << 40).to_bytes(8, "big"))
        |print("sent a 1 TiB header", flush=True)
        |time.sleep(30)
        |""".stripMargin)
    val (worker, _) = start(script(dir, s"""exec '$python' '$fake' "$$4"\n"""))
    val e = intercept[SparkException](worker.recv())
    assert(e.getMessage.contains("sent a frame (kind 6) declaring 1099511627776 bytes, outside 0 to 2147483639"),
      e.getMessage)
    worker.close()
  }
}
