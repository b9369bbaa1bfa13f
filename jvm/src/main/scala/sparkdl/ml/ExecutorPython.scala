package sparkdl.ml

import java.io.IOException
import java.nio.charset.StandardCharsets.UTF_8
import java.util.concurrent.TimeUnit

import scala.collection.concurrent.TrieMap

import org.apache.spark.{SparkContext, SparkEnv, SparkException}

/** What the executors' Python can do, asked once per application and executable, before the
  * first fit: whether it has what the sparkdl worker imports (a fit fails in seconds instead
  * of inside the barrier job), and whether it can import Horovod (the "auto" backend).
  *
  * {{{
  * ExecutorPython.facts(sc, "/usr/bin/python3", 2).horovod   // true where horovod.torch imports
  * }}}
  */
private[ml] object ExecutorPython {

  /** @param python  the executable asked
    * @param horovod whether every executor asked can import `horovod.torch`
    */
  final case class Facts(python: String, horovod: Boolean)

  private val known = TrieMap.empty[(String, String), Facts]

  /** The facts for `python`, from a job of `n` tasks the first time in this application.
    *
    * @throws SparkException naming each executor whose Python lacks sparkdl, torch or pyarrow
    */
  def facts(sc: SparkContext, python: String, n: Int): Facts =
    known.getOrElse((sc.applicationId, python), {
      val answers = sc.parallelize(0 until n, n).mapPartitions { _ =>
        Iterator(probe(python).left.map(p => s"executor ${SparkEnv.get.executorId}: $p"))
      }.collect()
      val problems = answers.collect { case Left(p) => p }.distinct
      if (problems.nonEmpty)
        throw new SparkException(s"The executors cannot run the sparkdl Python worker: ${problems.mkString("; ")}. " +
          "Install sparkdl (with torch and pyarrow) on the executors, or set spark.pyspark.python / PYSPARK_PYTHON " +
          "to a Python that has it.")
      val found = Facts(python, horovod = answers.forall(_ == Right(true)))
      known.put((sc.applicationId, python), found)
      found
    })

  // Finds modules without importing torch (seconds): the same test as Python's
  // sparkdl.collective.horovod_available().
  private val Script =
    "import importlib.util as u, sys\n" +
      "m = [n for n in ('sparkdl', 'torch', 'pyarrow') if u.find_spec(n) is None]\n" +
      "if m: print(' '.join(m)); sys.exit(3)\n" +
      "try: h = u.find_spec('horovod') is not None and u.find_spec('horovod.torch') is not None\n" +
      "except (ImportError, ValueError): h = False\n" +
      "print('horovod' if h else 'no-horovod')\n"

  /** Runs on an executor: a problem in words, or whether Horovod is importable. */
  def probe(python: String): Either[String, Boolean] =
    try {
      val p = new ProcessBuilder(python, "-c", Script).redirectErrorStream(true).start()
      val text = new String(p.getInputStream.readAllBytes(), UTF_8).trim
      if (!p.waitFor(60, TimeUnit.SECONDS)) { p.destroyForcibly(); Left(s"'$python' did not answer within 60 s") }
      else if (p.exitValue() == 0) Right(text.linesIterator.toSeq.lastOption.contains("horovod"))
      else if (p.exitValue() == 3) Left(s"'$python' cannot import: $text")
      else Left(s"'$python' failed (exit code ${p.exitValue()}): $text")
    } catch {
      case e: IOException => Left(s"cannot run '$python': ${e.getMessage}")
    }
}
