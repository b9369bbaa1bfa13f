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

  /** One Arrow IPC stream (schema, one record batch, end) holding `rows`' columns at
    * `columns` (positions in the row), named and typed as `schema`'s fields there.
    */
  def toIpc(schema: StructType, columns: Seq[Int], rows: Seq[Row], allocator: BufferAllocator): Array[Byte] = {
    val fields = columns.map(i => field(schema(i).name, schema(i).dataType))
    val root = VectorSchemaRoot.create(new Schema(fields.asJava), allocator)
    try {
      root.allocateNew()
      val vectors = root.getFieldVectors.asScala.toVector
      var r = 0
      rows.foreach { row =>
        var c = 0
        while (c < columns.length) {
          set(vectors(c), r, row.get(columns(c)))
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

  private def set(vector: FieldVector, i: Int, value: Any): Unit = (vector, value) match {
    case (v: ListVector, null)            => v.setNull(i)
    case (v: BaseFixedWidthVector, null)  => v.setNull(i)
    case (v: Float4Vector, x: Float)      => v.setSafe(i, x)
    case (v: Float8Vector, x: Double)     => v.setSafe(i, x)
    case (v: IntVector, x: Int)           => v.setSafe(i, x)
    case (v: BigIntVector, x: Long)       => v.setSafe(i, x)
    case (v: BitVector, x: Boolean)       => v.setSafe(i, if (x) 1 else 0)
    case (v: ListVector, xs: scala.collection.Seq[_]) =>
      val start = v.startNewValue(i)
      val child = v.getDataVector
      var j = 0
      xs.foreach { x => set(child, start + j, x); j += 1 }
      v.endValue(i, xs.length)
    case (v, x) =>
      throw new IllegalArgumentException(
        s"Cannot write a ${x.getClass.getName} into an Arrow ${v.getClass.getSimpleName}")
  }

  /** The column names and rows (Arrow objects as JVM values) of every batch in an IPC stream:
    * numbers as boxed values, lists as `Seq`, strings as `String`, binary as `Array[Byte]`.
    */
  def fromIpc(bytes: Array[Byte], allocator: BufferAllocator): (Seq[String], Seq[IndexedSeq[Any]]) = {
    val reader = new ArrowStreamReader(new ByteArrayInputStream(bytes), allocator)
    try {
      val root = reader.getVectorSchemaRoot
      val names = root.getSchema.getFields.asScala.map(_.getName).toVector
      val rows = Vector.newBuilder[IndexedSeq[Any]]
      while (reader.loadNextBatch()) {
        val vectors = root.getFieldVectors.asScala.toVector
        for (r <- 0 until root.getRowCount) rows += vectors.map(v => plain(v.getObject(r)))
      }
      (names, rows.result())
    } finally reader.close()
  }

  private def plain(value: Any): Any = value match {
    case l: java.util.List[_]                   => l.asScala.map(plain).toVector
    case t: org.apache.arrow.vector.util.Text   => t.toString
    case other                                  => other
  }
}
