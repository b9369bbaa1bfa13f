package sparkdl.json

import java.nio.charset.StandardCharsets

import org.scalatest.funsuite.AnyFunSuite

import sparkdl.json.Json._

/** Python's `repr` and `json.dumps`, compared with what Python printed (`python-reprs.json`,
  * written by `jvm/src/test/python/make_parity_cases.py`): some 1,100 floats, many drawn from
  * random bit patterns (where JDK 17's `Double.toString` is not always shortest), and strings
  * with quotes, controls and non-ASCII text.
  */
class PyReprSuite extends AnyFunSuite {

  private val fixture: JObj = {
    val stream = getClass.getResourceAsStream("/sparkdl/json/python-reprs.json")
    try JsonParser.parse(new String(stream.readAllBytes(), StandardCharsets.UTF_8)).asInstanceOf[JObj]
    finally stream.close()
  }

  private def rows(key: String): Vector[Vector[Json]] =
    fixture.get(key).collect { case JArr(xs) => xs.collect { case JArr(row) => row } }.get

  test("floats: Python's repr, the shortest round-tripping digits in Python's layout") {
    val floats = rows("floats")
    assert(floats.size > 1000)
    val wrong = floats.flatMap {
      case Vector(JInt(bits), JStr(repr)) =>
        val d = java.lang.Double.longBitsToDouble(bits.toLong)
        val ours = PyRepr.float(d)
        if (ours == repr && CanonicalJson.write(JFloat(d)) == repr) None else Some(s"$repr (ours: $ours)")
      case other => Some(s"bad row $other")
    }
    assert(wrong.isEmpty, wrong.take(20).mkString("; "))
  }

  test("floats: the formats the spec uses") {
    assert(PyRepr.float(1e-5) == "1e-05")
    assert(PyRepr.float(0.1) == "0.1")
    assert(PyRepr.float(1.0) == "1.0")
    assert(PyRepr.float(0.0) == "0.0" && PyRepr.float(-0.0) == "-0.0")
    assert(PyRepr.float(1e16) == "1e+16" && PyRepr.float(1e15) == "1000000000000000.0")
    assert(PyRepr.float(0.0001) == "0.0001" && PyRepr.float(1.5e-7) == "1.5e-07")
    assert(PyRepr.float(Double.NaN) == "nan" && PyRepr.float(Double.NegativeInfinity) == "-inf")
    assert(PyRepr.float(2e23) == "2e+23") // JDK 17's Double.toString gives 2.0000000000000002E23
  }

  test("strings: Python's repr and json.dumps (ensure_ascii)") {
    for (row <- rows("strings")) row match {
      case Vector(JStr(s), JStr(repr), JStr(dumped)) =>
        assert(PyRepr.string(s) == repr, s)
        assert(CanonicalJson.write(JStr(s)) == dumped, s)
      case other => fail(s"bad row $other")
    }
  }

  test("values, tuples and lists as Python prints them") {
    assert(PyRepr(JsonParser.parse("""{"name": "x", "shape": [4], "ok": true, "none": null, "f": 2.0}""")) ==
      "{'name': 'x', 'shape': [4], 'ok': True, 'none': None, 'f': 2.0}")
    assert(PyRepr.tuple(Seq(64)) == "(64,)" && PyRepr.tuple(Seq(1, 8, 8)) == "(1, 8, 8)" && PyRepr.tuple(Nil) == "()")
    assert(PyRepr.list(Seq("a", "b")) == "['a', 'b']")
  }
}
