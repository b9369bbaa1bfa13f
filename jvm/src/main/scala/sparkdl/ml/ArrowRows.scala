package sparkdl.ml

import java.io.{ByteArrayInputStream, ByteArrayOutputStream}
import java.nio.channels.Channels

import scala.jdk.CollectionConverters._

import org.apache.arrow.memory.BufferAllocator
import org.apache.arrow.vector._
import org.apache.arrow.vector.complex.ListVector
import org.apache.arrow.vector.ipc.{ArrowStreamReader, ArrowStreamWriter}
import org.apache.arrow.vector.types.FloatingPointPrecision
import org.apache.arrow.vector.types.pojo.{ArrowType, Field, FieldType, Schema}
import org.apache.spark.ml.linalg.SQLDataTypes
import org.apache.spark.sql.Row
import org.apache.spark.sql.types._

/** Spark rows to Arrow IPC and back, for the few column types the Python worker reads:
  * float, double, int, long, boolean and (nested) arrays of them.
  *
  * {{{
  * val bytes = ArrowRows.toIpc(StructType.fromDDL("f array<float>, y long"), rows, allocator)
  * ArrowRows.fromIpc(bytes, allocator)   // (column names, rows as Seq[Any])
  * }}}
  */
object ArrowRows {

  /** The Arrow field for a Spark type.
    * @throws IllegalArgumentException for a type the worker bridge does not carry.
    */
  def field(name: String, dataType: DataType): Field = {
    def leaf(t: ArrowType) = new Field(name, FieldType.nullable(t), null)
    dataType match {
      case FloatType   => leaf(new ArrowType.FloatingPoint(FloatingPointPrecision.SINGLE))
      case DoubleType  => leaf(new ArrowType.FloatingPoint(FloatingPointPrecision.DOUBLE))
      case IntegerType => leaf(new ArrowType.Int(32, true))
      case LongType    => leaf(new ArrowType.Int(64, true))
      case BooleanType => leaf(ArrowType.Bool.INSTANCE)
      case ArrayType(element, _) =>
        new Field(name, FieldType.nullable(ArrowType.List.INSTANCE), List(field("element", element)).asJava)
      case other =>
        throw new IllegalArgumentException(
          s"Column '$name' of type ${other.simpleString} cannot be sent to the Python worker; " +
            "supported: float, double, int, long, boolean and arrays of them")
    }
  }

  /** The Arrow field carrying a feature column as float32, as `Columns.asFloat` casts it:
    * numbers, (nested) arrays of numbers, and Spark ML vectors as lists.
    * @throws IllegalArgumentException for any other type.
    */
  def floatField(name: String, dataType: DataType): Field = dataType match {
    case _: NumericType => new Field(name, FieldType.nullable(new ArrowType.FloatingPoint(FloatingPointPrecision.SINGLE)), null)
    case ArrayType(element, _) =>
      new Field(name, FieldType.nullable(ArrowType.List.INSTANCE), List(floatField("element", element)).asJava)
    case t if t == SQLDataTypes.VectorType => floatField(name, ArrayType(FloatType))
    case other => field(name, other) // names the unsupported type
  }

  /** One Arrow IPC stream (schema, one record batch, end) holding `rows`' columns at
    * `columns` (positions in the row), named as `schema`'s fields there and typed as them, or,
    * with `asFloat`, as float32 ([[floatField]]: the values are converted while written, so a
    * feature column needs no cast column next to it).
    */
  def toIpc(schema: StructType, columns: Seq[Int], rows: Seq[Row], allocator: BufferAllocator,
            asFloat: Boolean = false): Array[Byte] = {
    val fields = columns.map(i => if (asFloat) floatField(schema(i).name, schema(i).dataType)
      else field(schema(i).name, schema(i).dataType))
    val root = VectorSchemaRoot.create(new Schema(fields.asJava), allocator)
    try {
      root.allocateNew()
      // One writer per column, chosen once: per value, only the write itself runs.
      val writers: Array[(Int, Any) => Unit] = root.getFieldVectors.asScala.map(v => columnWriter(v)).toArray
      var r = 0
      rows.foreach { row =>
        var c = 0
        while (c < columns.length) {
          writers(c)(r, row.get(columns(c)))
          c += 1
        }
        r += 1
      }
      root.setRowCount(rows.length)
      val out = new ByteArrayOutputStream()
      val writer = new ArrowStreamWriter(root, null, Channels.newChannel(out))
      writer.start()
      writer.writeBatch()
      writer.end()
      writer.close()
      out.toByteArray
    } finally root.close()
  }

  /** Writes a value (null, a number, a boolean or a Seq of them) at a row of `vector`. */
  private def columnWriter(vector: FieldVector): (Int, Any) => Unit = vector match {
    case v: Float4Vector => (i, x) => if (x == null) v.setNull(i) else v.setSafe(i, x.asInstanceOf[Number].floatValue)
    case v: Float8Vector => (i, x) => if (x == null) v.setNull(i) else v.setSafe(i, x.asInstanceOf[Double])
    case v: IntVector    => (i, x) => if (x == null) v.setNull(i) else v.setSafe(i, x.asInstanceOf[Int])
    case v: BigIntVector => (i, x) => if (x == null) v.setNull(i) else v.setSafe(i, x.asInstanceOf[Long])
    case v: BitVector    => (i, x) => if (x == null) v.setNull(i) else v.setSafe(i, if (x.asInstanceOf[Boolean]) 1 else 0)
    case v: ListVector =>
      val child = columnWriter(v.getDataVector)
      (i, x) => x match {
        case null => v.setNull(i)
        case xs: scala.collection.Seq[_] =>
          val start = v.startNewValue(i)
          var j = 0
          xs.foreach { e => child(start + j, e); j += 1 }
          v.endValue(i, xs.length)
        case vec: org.apache.spark.ml.linalg.Vector =>
          val values = vec.toArray
          val start = v.startNewValue(i)
          var j = 0
          while (j < values.length) { child(start + j, values(j)); j += 1 }
          v.endValue(i, values.length)
        case other => mismatch(v, other)
      }
    case v => (_, x) => mismatch(v, x)
  }

  private def mismatch(vector: FieldVector, value: Any): Nothing =
    throw new IllegalArgumentException(
      s"Cannot write a ${value.getClass.getName} into an Arrow ${vector.getClass.getSimpleName}")

  /** The column names and rows (Arrow objects as JVM values) of every batch in an IPC stream:
    * numbers as boxed values, lists as `Seq` (lists of doubles as `ArraySeq.ofDouble`, read
    * without boxing each element), strings as `String`, binary as `Array[Byte]`.
    */
  def fromIpc(bytes: Array[Byte], allocator: BufferAllocator): (Seq[String], Seq[IndexedSeq[Any]]) = {
    val reader = new ArrowStreamReader(new ByteArrayInputStream(bytes), allocator)
    try {
      val root = reader.getVectorSchemaRoot
      val names = root.getSchema.getFields.asScala.map(_.getName).toVector
      val rows = Vector.newBuilder[IndexedSeq[Any]]
      while (reader.loadNextBatch()) {
        val n = root.getRowCount
        val columns = root.getFieldVectors.asScala.toVector.map(values(_, n))
        for (r <- 0 until n) rows += columns.map(_(r))
      }
      (names, rows.result())
    } finally reader.close()
  }

  // Column-wise, so the vector type is matched once per batch, not once per value.
  private def values(vector: FieldVector, n: Int): Array[Any] = vector match {
    case v: ListVector if v.getDataVector.isInstanceOf[Float8Vector] =>
      val child = v.getDataVector.asInstanceOf[Float8Vector]
      Array.tabulate[Any](n) { r =>
        if (v.isNull(r)) null
        else {
          val (start, end) = (v.getElementStartIndex(r), v.getElementEndIndex(r))
          if ((start until end).exists(child.isNull)) plain(v.getObject(r)) // null elements stay null
          else new scala.collection.immutable.ArraySeq.ofDouble(Array.tabulate(end - start)(j => child.get(start + j)))
        }
      }
    case v => Array.tabulate[Any](n)(r => plain(v.getObject(r)))
  }

  private def plain(value: Any): Any = value match {
    case l: java.util.List[_]                   => l.asScala.map(plain).toVector
    case t: org.apache.arrow.vector.util.Text   => t.toString
    case other                                  => other
  }
}
