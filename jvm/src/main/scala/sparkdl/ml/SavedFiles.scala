package sparkdl.ml

import java.io.IOException
import java.util.UUID

import scala.util.control.NonFatal

import org.apache.hadoop.fs.Path
import org.apache.spark.ml.util.MLWriter
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
  * Paths are Hadoop paths (local, `file:`, `hdfs://`, ...). A save is atomic
  * ([[SavedFiles.saveAtomically]]): a directory at the saved path is always complete.
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

  /** Marks a directory being written by [[saveAtomically]]: `<name>._sparkdl-tmp-<uuid>`. */
  val TempMarker = "._sparkdl-tmp-"
  /** Marks a replaced save while its replacement moves in: `<name>._sparkdl-old-<uuid>`. */
  val OldMarker = "._sparkdl-old-"

  /** Saves a directory so that `path` only ever holds a complete save: `write` fills a
    * temporary sibling (same parent, so the rename stays within one file system and, on HDFS,
    * is atomic), which is renamed to `path` once complete; an existing save there (with
    * `overwrite`) is first renamed aside and deleted only after the new one is in place.
    *
    * Why: Spark's `MLWriter.save` deletes the old directory before `saveImpl` writes the new
    * one, so a failure or a kill mid-save loses the old model and can leave a directory that
    * looks complete. Here a failed `write` leaves the old save untouched and its temporary
    * directory deleted; a kill leaves at worst a `._sparkdl-tmp-` sibling, never a partial
    * directory at `path` (and between the two renames, both complete saves as siblings).
    *
    * {{{
    * SavedFiles.saveAtomically(spark, "/models/m", overwrite = true) { dir => writeFiles(dir) }
    * }}}
    *
    * @throws IOException as Spark's `MLWriter.save` does when `path` exists and `overwrite`
    *                     is false, or when a rename fails
    */
  def saveAtomically(spark: SparkSession, path: String, overwrite: Boolean)(write: String => Unit): Unit = {
    val given = new Path(path)
    val fs = given.getFileSystem(spark.sparkContext.hadoopConfiguration)
    val target = fs.makeQualified(given)
    val parent = target.getParent
    if (parent == null) throw new IOException(s"Cannot save to $path: a root directory cannot be replaced; save " +
      "to a directory below it.")
    def exists(): Unit = if (!overwrite) throw new IOException(s"Path $path already exists. To overwrite it, " +
      "please use write.overwrite().save(path) for Scala and use write().overwrite().save(path) for Java and Python.")
    if (fs.exists(target)) exists()
    val id = UUID.randomUUID().toString
    val temp = new Path(parent, target.getName + TempMarker + id)
    try {
      write(temp.toString)
      if (fs.exists(target)) {
        exists() // another writer saved there meanwhile
        val old = new Path(parent, target.getName + OldMarker + id)
        if (!fs.rename(target, old)) throw new IOException(s"Cannot move the previous save at $path aside to $old.")
        if (!fs.rename(temp, target)) {
          fs.rename(old, target)
          throw new IOException(s"Cannot move the new save from $temp to $path; the previous save is kept.")
        }
        try fs.delete(old, true) catch { case NonFatal(_) => () } // saved; the old copy is only garbage now
      } else if (!fs.rename(temp, target)) throw new IOException(s"Cannot move the new save from $temp to $path.")
    } catch {
      case e: Throwable =>
        try fs.delete(temp, true) catch { case NonFatal(_) => () }
        throw e
    }
  }
}

/** A Spark ML writer whose `save` is atomic ([[SavedFiles.saveAtomically]]): `saveImpl` writes
  * into a temporary sibling of the path, and an existing save there (with `overwrite()`)
  * stays intact until the new one is complete. Spark's own `save` would delete it first.
  */
private[ml] abstract class AtomicMLWriter extends MLWriter {
  override def save(path: String): Unit =
    SavedFiles.saveAtomically(sparkSession, path, shouldOverwrite)(dir => saveImpl(dir))
}
