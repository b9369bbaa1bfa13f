package sparkdl.ml

import org.apache.spark.ml.functions.vector_to_array
import org.apache.spark.sql.{Column, DataFrame, Row}
import org.apache.spark.sql.functions._

import sparkdl.json.PyRepr
import sparkdl.ml.Columns.{ArrayKind, Kind, NumberKind, VectorKind}

/** Checks of the data itself, on the driver before the barrier job, as Python's
  * `sparkdl.data.columns.collect_stats` and `TorchEstimator._check_labels` make them: an empty
  * DataFrame, nulls, null array elements, ragged arrays, non-integer class labels, labels
  * outside the network's classes or targets of the wrong size. One aggregate query finds
  * them all; each problem is an IllegalArgumentException naming the column, the value found
  * and what to change.
  *
  * {{{
  * val stats = DataChecks.collect(df, Seq("features" -> VectorKind), "label", NumberKind, integerLabels = true)
  * DataChecks.checkLabels("multiclass", Seq(10), stats, "label")
  * }}}
  */
private[ml] object DataChecks {

  /** What the query found.
    *
    * @param rows      number of rows
    * @param shapes    per feature column, the per-row shape (empty for a number column)
    * @param labelMin  smallest label (number labels)
    * @param labelMax  largest label (number labels)
    * @param labelSize values per row of an array or vector label
    */
  final case class Stats(rows: Long, shapes: Map[String, Seq[Int]], labelMin: Option[Double],
                         labelMax: Option[Double], labelSize: Option[Long])

  /** Runs the query and throws on the first problem, in Python's order.
    *
    * @throws IllegalArgumentException for an empty DataFrame, nulls, null array elements,
    *                                  ragged arrays or non-integer class labels
    */
  def collect(df: DataFrame, features: Seq[(String, Kind)], label: String, labelKind: Kind,
              integerLabels: Boolean): Stats = {
    val checks = features :+ (label -> labelKind)
    val aggs = Seq.newBuilder[Column]
    aggs += count(lit(1)).as("rows")
    val depths = checks.zipWithIndex.map { case ((name, kind), i) =>
      aggs += sum(Columns.quoted(name).isNull.cast("long")).as(s"n$i")
      kind match {
        case ArrayKind(depth) => aggs += sum(exists(leaves(name, depth), _.isNull).cast("long")).as(s"e$i")
        case _                =>
      }
      val levels = sizeLevels(name, kind)
      levels.zipWithIndex.foreach { case (sizes, level) =>
        aggs += min(array_min(sizes)).as(s"lo${i}_$level")
        aggs += max(array_max(sizes)).as(s"hi${i}_$level")
      }
      levels.size
    }
    if (labelKind == NumberKind) {
      val l = Columns.quoted(label)
      aggs += min(l).cast("double").as("label_min")
      aggs += max(l).cast("double").as("label_max")
      if (integerLabels) aggs += sum((l =!= floor(l)).cast("long")).as("label_frac")
    }
    val all = aggs.result()
    val row = df.agg(all.head, all.tail: _*).first()
    def long(field: String): Long = if (row.isNullAt(row.fieldIndex(field))) 0L else row.getAs[Number](field).longValue
    val rows = long("rows")
    if (rows == 0)
      throw new IllegalArgumentException("The DataFrame is empty: there is nothing to train on. Check the filters " +
        "and the source path.")
    var shapes = Map.empty[String, Seq[Int]]
    var labelSize: Option[Long] = None
    checks.zip(depths).zipWithIndex.foreach { case (((name, _), levels), i) =>
      val role = if (name == label && i == checks.size - 1) "Label" else "Feature"
      val nulls = long(s"n$i")
      if (nulls > 0)
        throw new IllegalArgumentException(s"$role column ${PyRepr.string(name)} has $nulls null value(s) out of " +
          s"$rows rows. Drop them (df.na.drop(Seq(${quote(name)}))) or fill them before fitting.")
      if (row.schema.fieldNames.contains(s"e$i") && long(s"e$i") > 0)
        throw new IllegalArgumentException(s"$role column ${PyRepr.string(name)} has ${long(s"e$i")} row(s) with " +
          "null array elements. Fill or drop them before fitting.")
      val shape = (0 until levels).map { level =>
        val (lo, hi) = (long(s"lo${i}_$level"), long(s"hi${i}_$level"))
        if (lo != hi)
          throw new IllegalArgumentException(s"$role column ${PyRepr.string(name)} has ragged arrays: lengths range " +
            s"from $lo to $hi at nesting level ${level + 1}. Every row must have the same shape; filter with " +
            s"size(col(${quote(name)})) === n, or pad the arrays.")
        lo.toInt
      }
      if (role == "Label") labelSize = if (shape.isEmpty) None else Some(shape.map(_.toLong).product)
      else shapes += name -> shape
    }
    if (integerLabels && labelKind == NumberKind && long("label_frac") > 0)
      throw new IllegalArgumentException(s"Label column ${PyRepr.string(label)} has ${long("label_frac")} " +
        "non-integer value(s), but this loss expects integer class ids 0..C-1. Use a regression loss (mse) or " +
        "index the labels (StringIndexer).")
    def double(field: String): Option[Double] =
      if (!row.schema.fieldNames.contains(field) || row.isNullAt(row.fieldIndex(field))) None
      else Some(row.getAs[Double](field))
    Stats(rows, shapes, double("label_min"), double("label_max"), labelSize)
  }

  /** The network's per-row input shape against what the feature column(s) hold.
    *
    * @param wanted the shape the network reads (featureShape, else the network input's)
    * @throws IllegalArgumentException when the sizes differ, naming both
    */
  def checkFeatures(stats: Stats, features: Seq[String], wanted: Seq[Int], fromParam: Boolean): Unit = {
    val found = if (features.size == 1) stats.shapes(features.head) else Seq(features.size)
    val (have, need) = (found.map(_.toLong).product, wanted.map(_.toLong).product)
    if (have != need) {
      val what = if (fromParam) s"featureShape=${wanted.mkString("[", ", ", "]")} holds $need values per row"
        else s"The network's input shape ${wanted.mkString("[", ", ", "]")} holds $need values per row"
      throw new IllegalArgumentException(s"$what but feature column(s) ${PyRepr.list(features)} hold $have (shape " +
        s"${found.mkString("[", ", ", "]")}). Fix featureShape or the network's Input shape.")
    }
  }

  /** Labels against the network's output, as Python's `_check_labels`.
    *
    * @param task multiclass, binary or regression
    * @throws IllegalArgumentException for class ids outside 0..C-1, a target size that differs
    *                                  from the output's, or binary targets outside [0, 1]
    */
  def checkLabels(task: String, outputShape: Seq[Int], stats: Stats, label: String): Unit = {
    def range = s"values from ${fmt(stats.labelMin.get)} to ${fmt(stats.labelMax.get)}"
    if (task == "multiclass") {
      val classes = outputShape.head
      if (stats.labelMin.exists(_ < 0) || stats.labelMax.exists(_ >= classes))
        throw new IllegalArgumentException(s"Label column ${PyRepr.string(label)} has $range, but the network " +
          s"outputs $classes classes (valid labels 0..${classes - 1}). Re-index the labels or widen the output layer.")
    } else {
      val outSize = outputShape.map(_.toLong).product
      val labelSize = stats.labelSize.getOrElse(1L)
      if (labelSize != outSize)
        throw new IllegalArgumentException(s"Label column ${PyRepr.string(label)} has $labelSize value(s) per row but " +
          s"the network outputs $outSize (shape ${outputShape.mkString("[", ", ", "]")}). They must match.")
      if (task == "binary" && (stats.labelMin.exists(_ < 0) || stats.labelMax.exists(_ > 1)))
        throw new IllegalArgumentException(s"Label column ${PyRepr.string(label)} has $range; bce_with_logits needs " +
          "targets in [0, 1].")
    }
  }

  // Python's `{x:g}`: 3 for 3.0, 0.5 for 0.5.
  private def fmt(d: Double): String = if (d == math.rint(d) && math.abs(d) < 1e15) d.toLong.toString else d.toString

  private def quote(name: String): String = "\"" + name.replace("\\", "\\\\").replace("\"", "\\\"") + "\""

  /** Per-row arrays whose elements are each nesting level's lengths. */
  private def sizeLevels(name: String, kind: Kind): Seq[Column] = kind match {
    case NumberKind => Nil
    case VectorKind => Seq(array(size(vector_to_array(Columns.quoted(name)))))
    case ArrayKind(depth) =>
      var inner = Columns.quoted(name)
      Seq(array(size(inner))) ++ (1 until depth).map { _ =>
        val sizes = transform(inner, a => size(a))
        inner = flatten(inner)
        sizes
      }
  }

  /** The innermost elements of a nested array column, flattened. */
  private def leaves(name: String, depth: Int): Column =
    (1 until depth).foldLeft(Columns.quoted(name))((c, _) => flatten(c))
}
