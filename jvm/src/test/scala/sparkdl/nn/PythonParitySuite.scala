package sparkdl.nn

import java.nio.charset.StandardCharsets

import org.scalatest.funsuite.AnyFunSuite

import sparkdl.ConfigException
import sparkdl.json.Json._
import sparkdl.json.JsonParser

/** `Network.fromJson` agrees with Python's `Network.from_json` on some 1,200 specs.
  *
  * The cases (`python-parity-cases.json`, written by `jvm/src/test/python/make_parity_cases.py`)
  * hold Python's verdict on each spec text: its canonical JSON, parameter count and output
  * shapes, or its exact error message. They cover every attribute of every vector's layers
  * set to values of each JSON kind, each layer on inputs of several ranks, graph errors and
  * schema corners, so the schema emulation, the layer checks and the number formatting are
  * all compared with Python's own output.
  */
class PythonParitySuite extends AnyFunSuite {

  private case class Case(name: String, text: String, expected: JObj, beyondInt32: Boolean)

  private val cases: Seq[Case] = {
    val stream = getClass.getResourceAsStream("/sparkdl/nn/python-parity-cases.json")
    val doc = try JsonParser.parse(new String(stream.readAllBytes(), StandardCharsets.UTF_8)) finally stream.close()
    doc.asInstanceOf[JObj].get("cases").collect { case JArr(xs) => xs }.get.map { c =>
      val o = c.asInstanceOf[JObj]
      def str(k: String) = o.get(k).collect { case JStr(s) => s }.get
      Case(str("name"), str("text"), o.get("expected").get.asInstanceOf[JObj], o.contains("beyond_int32"))
    }
  }

  /** What Scala says, in the fixture's terms. */
  private def verdict(text: String): JObj =
    try {
      val net = Network.fromJson(text)
      try {
        JObj(
          "canonical_json" -> JStr(net.toJson),
          "param_count" -> JInt(net.paramCount),
          "output_shapes" -> JArr(net.outputShapes.map(s =>
            JArr(s.map(d => if (d == Input.Variable) JNull else JInt(d)).toVector)).toVector))
      } catch { case e: IllegalArgumentException => JObj("python_exception" -> JStr(s"ValueError: ${e.getMessage}")) }
    } catch { case e: ConfigException => JObj("error" -> JStr(e.getMessage)) }

  // Python's ints are unbounded; sizes here are 32-bit ints, and larger ones are refused.
  private def agrees(c: Case, actual: JObj): Boolean =
    c.expected == actual || sameJsonSyntaxError(c.expected, actual) ||
      c.beyondInt32 && actual.get("error").exists { case JStr(m) => m.contains("must fit a 32-bit int"); case _ => false }

  // Text that is not JSON: Jackson words the problem its own way, but the position agrees.
  private val notJson = """A network spec must be JSON: .*(line \d+ column \d+ \(char \d+\))""".r

  private def sameJsonSyntaxError(expected: JObj, actual: JObj): Boolean =
    (expected.get("error"), actual.get("error")) match {
      case (Some(JStr(notJson(a))), Some(JStr(notJson(b)))) => a == b
      case _                                                => false
    }

  test("the fixture has its cases") {
    assert(cases.size > 1000)
  }

  test("every spec gets Python's verdict: the same canonical JSON, counts and shapes, or error message") {
    val mismatches = cases.flatMap { c =>
      val actual = verdict(c.text)
      if (agrees(c, actual)) None else Some((c, actual))
    }
    val report = mismatches.take(40).map { case (c, actual) =>
      s"\n- ${c.name}\n    text:   ${c.text.take(400)}\n    python: ${c.expected.toString.take(600)}\n    scala:  ${actual.toString.take(600)}"
    }.mkString
    assert(mismatches.isEmpty, s"${mismatches.size} of ${cases.size} cases differ:$report")
  }
}
