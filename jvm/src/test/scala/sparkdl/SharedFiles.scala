package sparkdl

import java.nio.charset.StandardCharsets
import java.nio.file.{Files, Path, Paths}

import scala.jdk.CollectionConverters._

import com.networknt.schema.{InputFormat, SchemaRegistry, SpecificationVersion}

/** Files shared with the Python side: test vectors and the JSON Schema.
  *
  * The pom passes their directories as system properties; the fallbacks let a suite run from
  * an IDE whose working directory is `jvm/`.
  */
object SharedFiles {
  private def dir(property: String, fallback: String): Path =
    Paths.get(sys.props.getOrElse(property, fallback)).toAbsolutePath.normalize

  val vectorsDir: Path = dir("sparkdl.vectors.dir", "../tests/vectors")
  val schemasDir: Path = dir("sparkdl.schemas.dir", "../sparkdl/schemas")

  def read(path: Path): String = new String(Files.readAllBytes(path), StandardCharsets.UTF_8)

  /** `tests/vectors/network_*.json`, sorted by name. */
  def networkVectors: Seq[Path] =
    Files.list(vectorsDir).iterator.asScala
      .filter(p => p.getFileName.toString.matches("network_.*\\.json"))
      .toSeq.sortBy(_.getFileName.toString)

  /** An independent JSON Schema implementation (networknt) loaded with the repo's schema file. */
  private lazy val schema = {
    val stream = Files.newInputStream(schemasDir.resolve("network-v1.schema.json"))
    try SchemaRegistry.withDefaultDialect(SpecificationVersion.DRAFT_2020_12).getSchema(stream)
    finally stream.close()
  }

  /** The messages of every schema violation of `json` (empty when it is valid). */
  def schemaViolations(json: String): Seq[String] = schema.validate(json, InputFormat.JSON).asScala.map(_.toString).toSeq
}
