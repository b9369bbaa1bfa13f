package sparkdl.json

import scala.collection.immutable.ListMap

import org.scalatest.funsuite.AnyFunSuite

import sparkdl.json.Json._

/** Reading JSON as Python's `json.loads` does and writing it as
  * `json.dumps(sort_keys=True, separators=(",", ":"))` does.
  */
class CanonicalJsonSuite extends AnyFunSuite {

  test("numbers keep Python's int/float distinction; ints are unbounded") {
    assert(JsonParser.parse("[1e5, 1E-2, -0, 10.0e0, 12345678901234567890123]") ==
      JArr(Vector(JFloat(100000.0), JFloat(0.01), JInt(0), JFloat(10.0), JInt(BigInt("12345678901234567890123")))))
    assert(CanonicalJson.write(JsonParser.parse("[1e5, 1E-2, -0, 10.0e0, -0.0]")) == "[100000.0,0.01,0,10.0,-0.0]")
  }

  test("keys are sorted by code point at every level; duplicates keep the last value at the first place") {
    val parsed = JsonParser.parse("""{"b": 1, "a": {"z": 1, "\uffff": 2, "\ud83d\ude00": 3, "é": 4}, "b": 2}""")
    assert(parsed.asInstanceOf[JObj].keys == Vector("b", "a"))
    // (A plain literal: Scala would turn \\u escapes in a triple-quoted one into characters.)
    assert(CanonicalJson.write(parsed) == "{\"a\":{\"z\":1,\"\\u00e9\":4,\"\\uffff\":2,\"\\ud83d\\ude00\":3},\"b\":2}")
  }

  test("Python's non-standard NaN and Infinity are read, and refused when written") {
    assert(JsonParser.parse("[NaN, -Infinity]") match {
      case JArr(Vector(JFloat(a), JFloat(b))) => a.isNaN && b == Double.NegativeInfinity
      case _                                  => false
    })
    assert(intercept[IllegalArgumentException](CanonicalJson.write(JFloat(Double.PositiveInfinity))).getMessage ==
      "Out of range float values are not JSON compliant")
  }

  test("errors say where, as Python counts lines, columns and characters") {
    def error(text: String) = intercept[IllegalArgumentException](JsonParser.parse(text)).getMessage
    assert(error("") == "Expecting value: line 1 column 1 (char 0)")
    assert(error(" \n ") == "Expecting value: line 2 column 2 (char 3)")
    assert(error("{}\n  x") == "Extra data: line 2 column 3 (char 5)")
    assert(error("[1,]").endsWith("line 1 column 4 (char 3)"))
  }

  test("Scala values become JSON as Python values would") {
    assert(Json.from(ListMap("lr" -> 0.001, "steps" -> Seq(1, 2L), "name" -> "x", "on" -> true, "none" -> None)) ==
      JObj("lr" -> JFloat(0.001), "steps" -> JArr(Vector(JInt(1), JInt(2))), "name" -> JStr("x"),
        "on" -> JBool(true), "none" -> JNull))
    assert(intercept[IllegalArgumentException](Json.from(new Object)).getMessage.startsWith("Cannot write a java.lang.Object"))
  }
}
