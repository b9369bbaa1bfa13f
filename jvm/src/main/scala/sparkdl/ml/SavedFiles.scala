package sparkdl.ml

import org.apache.hadoop.fs.Path
import org.apache.spark.sql.SparkSession

/** The files sparkdl saves beside Spark ML's `metadata/`, named as Python's
  * `sparkdl.ml.persistence` names them, so either language loads the other's models:
  *
  *  - `network.json`: a `sparkdl.nn` network's JSON spec (architecture kind "spec")
  *  - `architecture.pkl`: a cloudpickled module or factory (kinds "module", "factory",
  *    written by Python only); models saved before files were named by kind keep any
  *    architecture here
  *  - `weights.safetensors`: a model's weights
  *
  * Paths are Hadoop paths (local, `file:`, `hdfs://`, ...).
  */
private[ml] object SavedFiles {
  val NetworkFile = "network.json"
  val ArchitectureFile = "architecture.pkl"
  val WeightsFile = "weights.safetensors"

  /** The file an architecture of this kind is saved in. */
  def architectureFile(kind: String): String = if (kind == "spec") NetworkFile else ArchitectureFile

  /** The architecture saved in `dir`: its kind's file, else `architecture.pkl` (older saves). */
  def readArchitecture(spark: SparkSession, dir: String, kind: String): Array[Byte] = {
    val named = s"$dir/${architectureFile(kind)}"
    read(spark, if (exists(spark, named)) named else s"$dir/$ArchitectureFile")
  }

  def write(spark: SparkSession, path: String, data: Array[Byte]): Unit = {
    val p = new Path(path)
    val out = p.getFileSystem(spark.sparkContext.hadoopConfiguration).create(p, true)
    try out.write(data) finally out.close()
  }

  def read(spark: SparkSession, path: String): Array[Byte] = {
    val p = new Path(path)
    val in = p.getFileSystem(spark.sparkContext.hadoopConfiguration).open(p)
    try in.readAllBytes() finally in.close()
  }

  def exists(spark: SparkSession, path: String): Boolean = {
    val p = new Path(path)
    p.getFileSystem(spark.sparkContext.hadoopConfiguration).exists(p)
  }
}
