package sparkdl.ml

import org.apache.arrow.memory.RootAllocator
import org.apache.spark.sql.Row
import org.apache.spark.sql.types._
import org.scalatest.funsuite.AnyFunSuite

import sparkdl.json.Json._
import sparkdl.json.JsonParser

class ArrowRowsSuite extends AnyFunSuite {

  test("rows of the prepared training columns round-trip through Arrow IPC") {
    val schema = StructType.fromDDL(
      "f array<float>, img array<array<float>>, y long, w double, i int, v boolean")
    val rows = Seq(
      Row(Seq(1.0f, 2.0f), Seq(Seq(1.0f), Seq(2.0f, 3.0f)), 3L, 0.5, 7, true),
      Row(Seq.empty[Float], Seq.empty[Seq[Float]], -1L, -2.0, 0, false),
      Row(null, Seq(Seq(4.0f)), 0L, 1e300, Int.MaxValue, false))
    val allocator = new RootAllocator(Long.MaxValue)
    try {
      val bytes = ArrowRows.toIpc(schema, schema.indices, rows, allocator)
      val (names, back) = ArrowRows.fromIpc(bytes, allocator)
      assert(names == schema.fieldNames.toSeq)
      assert(back.map(_.toSeq) == rows.map(_.toSeq))
    } finally allocator.close()
  }

  test("only the chosen columns are written, in order") {
    val schema = StructType.fromDDL("keep string, f array<float>, y long")
    val allocator = new RootAllocator(Long.MaxValue)
    try {
      val bytes = ArrowRows.toIpc(schema, Seq(2, 1), Seq(Row("x", Seq(1.5f), 4L)), allocator)
      val (names, back) = ArrowRows.fromIpc(bytes, allocator)
      assert(names == Seq("y", "f"))
      assert(back == Seq(Vector(4L, Vector(1.5f))))
    } finally allocator.close()
  }

  test("lists of doubles read back unboxed (the scoring outputs), nulls kept where they are") {
    val schema = StructType.fromDDL("p array<double>, d double")
    val rows = Seq(Row(Seq(1.0, 2.5), 1.0), Row(null, null), Row(Seq(3.0, null), 2.0), Row(Seq.empty[Double], 0.0))
    val allocator = new RootAllocator(Long.MaxValue)
    try {
      val (_, back) = ArrowRows.fromIpc(ArrowRows.toIpc(schema, schema.indices, rows, allocator), allocator)
      assert(back.map(_.toSeq) == rows.map(_.toSeq))
      assert(back.head(0).isInstanceOf[scala.collection.immutable.ArraySeq.ofDouble])
    } finally allocator.close()
  }

  test("an unsupported column type is named") {
    val error = intercept[IllegalArgumentException](ArrowRows.field("name", StringType))
    assert(error.getMessage.contains("Column 'name' of type string"))
  }

  test("metadata JSON writes NaN as Python's json module does and parses back") {
    val value = JObj("loss" -> JFloat(Double.NaN), "epochs" -> JArr(Vector(JInt(1), JFloat(0.5))),
      "name" -> JStr("a\"b"))
    val text = TorchModel.pyJson(value)
    assert(text == """{"loss":NaN,"epochs":[1,0.5],"name":"a\"b"}""")
    assert(TorchModel.pyJson(JsonParser.parse(text)) == text)
  }

  test("optimizer params stay a JSON object and setLearningRate keeps the others") {
    val est = new TorchEstimator().setOptimizerParams("""{"momentum": 0.9}""").setLearningRate(0.01)
    assert(JsonParser.parse(est.getOrDefault(est.optimizerParams)) ==
      JObj("lr" -> JFloat(0.01), "momentum" -> JFloat(0.9)))
    intercept[IllegalArgumentException](est.setOptimizerParams("[1]"))
  }
}
