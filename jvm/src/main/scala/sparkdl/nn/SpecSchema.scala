package sparkdl.nn

import java.nio.charset.StandardCharsets

import sparkdl.ConfigException
import sparkdl.json.{Json, JsonParser, JsonSchema}

/** The JSON Schema of the network spec (`sparkdl/schemas/network-v1.schema.json`).
  *
  * The jar carries the very file the Python package ships (the build copies it), and errors
  * are reported as Python's `sparkdl.nn._schema.validate` reports them: the JSON path of
  * jsonschema's best match and its message.
  *
  * Example:
  * {{{
  * SpecSchema.validate(JsonParser.parse(
  *   """{"format": "sparkdl.network/v1", "inputs": [{"name": "x", "shape": [3]}], "layers": [{"type": "Dense"}]}"""))
  * // ConfigException: Invalid network spec at layers/0: 'units' is a required property
  * }}}
  */
private[nn] object SpecSchema {
  val Resource = "/sparkdl/schemas/network-v1.schema.json"

  /** The schema document, read once from the classpath. */
  lazy val document: Json = {
    val stream = getClass.getResourceAsStream(Resource)
    if (stream == null) throw new IllegalStateException(s"$Resource is missing from the classpath")
    try JsonParser.parse(new String(stream.readAllBytes(), StandardCharsets.UTF_8))
    finally stream.close()
  }

  private lazy val validator = JsonSchema(document)

  /** @throws ConfigException naming the JSON path of the most relevant error and what is wrong. */
  def validate(spec: Json): Unit =
    validator.bestMatch(spec).foreach { case (error, path) =>
      val where = if (path.isEmpty) "<root>" else path.map(_.fold(identity, _.toString)).mkString("/")
      val message =
        if (path.nonEmpty || !(error.keyword.isEmpty || error.keyword.contains("required"))) error.message
        else {
          // Missing 'nodes'/'outputs', or 'layers' given with them (the false schema).
          val what = if (error.keyword.isEmpty) "'layers' cannot be given with 'nodes' or 'outputs'" else error.message
          what + ". A spec has either 'layers' (a sequential stack) or 'nodes' and 'outputs' (a graph)"
        }
      throw new ConfigException(s"Invalid network spec at $where: $message")
    }
}
