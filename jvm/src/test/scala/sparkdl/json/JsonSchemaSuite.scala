package sparkdl.json

import org.scalatest.funsuite.AnyFunSuite

/** The jsonschema emulation on small schemas: its messages and best_match choices.
  * (`PythonParitySuite` compares it with Python on the network schema itself.)
  */
class JsonSchemaSuite extends AnyFunSuite {

  private def best(schema: String, instance: String): Option[(String, String)] =
    JsonSchema(JsonParser.parse(schema)).bestMatch(JsonParser.parse(instance)).map { case (e, path) =>
      (path.map(_.fold(identity, _.toString)).mkString("/"), e.message)
    }

  test("shallow errors win over deep ones") {
    val schema = """{"type": "object", "required": ["a"], "properties": {"b": {"type": "integer"}}}"""
    assert(best(schema, """{"b": "x"}""").contains(("", "'a' is a required property")))
    assert(best(schema, """{"a": 1, "b": 2.0}""").isEmpty) // an integral float is an integer
    assert(best(schema, """{"a": 1, "b": true}""").contains(("b", "True is not of type 'integer'")))
  }

  test("oneOf: the deepest alternative's error, unless two tie") {
    val schema = """{"oneOf": [{"type": "integer", "minimum": 1}, {"type": "array", "items": {"type": "integer"}}]}"""
    assert(best(schema, "0").contains(("", "0 is less than the minimum of 1")))
    assert(best(schema, """[1, "x"]""").contains(("1", "'x' is not of type 'integer'")))
    assert(best(schema, """"s"""").contains(("", "'s' is not valid under any of the given schemas")))
  }

  test("messages for not, const, enum, pattern, exclusive bounds and the false schema") {
    assert(best("""{"not": {"const": 0}}""", "0").contains(("", "0 should not be valid under {'const': 0}")))
    assert(best("""{"enum": ["a", null]}""", "1").contains(("", "1 is not one of ['a', None]")))
    assert(best("""{"pattern": "^[a-z]+$"}""", """"A"""").contains(("", "'A' does not match '^[a-z]+$'")))
    assert(best("""{"pattern": "^[a-z]+$"}""", "\"a\\n\"").isEmpty) // Python's $ matches before a final \n
    assert(best("""{"exclusiveMaximum": 1}""", "1.0").contains(("", "1.0 is greater than or equal to the maximum of 1")))
    assert(best("""{"properties": {"a": false}}""", """{"a": [1]}""").contains(("", "False schema does not allow [1]")))
  }

  test("a schema using a keyword the emulation lacks is refused when loaded") {
    val e = intercept[IllegalArgumentException](JsonSchema(JsonParser.parse("""{"uniqueItems": true}""")))
    assert(e.getMessage == "JSON Schema keyword 'uniqueItems' is not supported")
  }
}
