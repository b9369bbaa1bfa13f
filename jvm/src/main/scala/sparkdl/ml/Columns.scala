package sparkdl.ml

import org.apache.spark.ml.functions.vector_to_array
import org.apache.spark.ml.linalg.SQLDataTypes
import org.apache.spark.sql.Column
import org.apache.spark.sql.functions.col
import org.apache.spark.sql.types._

/** Driver-side checks and float32 preparation of the columns a network reads, as Python's
  * `sparkdl.data.columns` does them.
  */
private[ml] object Columns {

  /** What a column holds: a Spark ML vector, a (nested) numeric array of some depth, or a number. */
  sealed trait Kind
  case object VectorKind extends Kind
  final case class ArrayKind(depth: Int) extends Kind
  case object NumberKind extends Kind

  val Supported: String = "Spark ML vector (dense or sparse), array<numeric> (nested arrays for tensors), " +
    "numeric (int, long, float, double; several columns allowed)"

  def kind(dataType: DataType): Option[Kind] = dataType match {
    case t if t == SQLDataTypes.VectorType => Some(VectorKind)
    case _: NumericType                    => Some(NumberKind)
    case a: ArrayType =>
      var depth = 0
      var t: DataType = a
      while (t.isInstanceOf[ArrayType]) { depth += 1; t = t.asInstanceOf[ArrayType].elementType }
      if (t.isInstanceOf[NumericType]) Some(ArrayKind(depth)) else None
    case _ => None
  }

  /** The kinds of `names`, or an IllegalArgumentException naming the missing or unsupported column. */
  def require(schema: StructType, names: Seq[String], role: String): Map[String, Kind] = {
    val kinds = names.map { name =>
      if (!schema.fieldNames.contains(name))
        throw new IllegalArgumentException(
          s"$role column '$name' does not exist. Existing columns: ${schema.fieldNames.mkString("[", ", ", "]")}. " +
            s"Set the $role column parameter to one of them.")
      val found = schema(name).dataType
      name -> kind(found).getOrElse(throw new IllegalArgumentException(
        s"$role column '$name' has unsupported type ${found.simpleString}. Supported: $Supported."))
    }.toMap
    if (names.length > 1 && kinds.values.exists(_ != NumberKind))
      throw new IllegalArgumentException(
        s"Several $role columns ${names.mkString("[", ", ", "]")} must all be numeric. Assemble them into " +
          "one array or vector column instead.")
    kinds
  }

  def quoted(name: String): Column = col("`" + name.replace("`", "``") + "`")

  /** A float32 expression for a column: vectors to `array<float>`, arrays cast to float. */
  def asFloat(name: String, kind: Kind): Column = kind match {
    case VectorKind       => vector_to_array(quoted(name), "float32")
    case ArrayKind(depth) => quoted(name).cast((1 to depth).foldLeft("float")((t, _) => s"array<$t>"))
    case NumberKind       => quoted(name).cast("float")
  }
}
