package sparkdl.nn

import java.nio.file.Path

import org.scalatest.funsuite.AnyFunSuite

import sparkdl.SharedFiles
import sparkdl.json.Json._
import sparkdl.json.{CanonicalJson, JsonParser}

/** The shared test vectors (`tests/vectors/network_*.json`), also read by pytest.
  *
  * For each vector: the spec read here writes `expected.canonical_json` byte for byte, with
  * the expected parameter count and output shape; the same network written with the Scala
  * DSL writes the same bytes; and what we write passes the schema file (checked by an
  * independent JSON Schema implementation).
  */
class VectorsSuite extends AnyFunSuite {

  /** Each vector's network written by hand with the DSL, keyed by the vector's file name. */
  private val written: Map[String, () => Network] = Map(
    "network_digits_cnn.json" -> (() =>
      Sequential(
        Input(Seq(1, 8, 8), name = "image"),
        Conv2d(8, 3, padding = "same", activation = "relu"),
        BatchNorm(),
        MaxPool2d(2),
        Conv2d(16, 3, activation = "relu"),
        Flatten(),
        Dense(10)).withLoss("cross_entropy")),
    "network_functional_graph.json" -> (() => {
      val a = Input(Seq(16), name = "a")
      val b = Input(Seq(8), name = "b")
      val hidden = Dense(16, activation = "relu")(a).named("hidden")
      val residual = Add()(a, hidden).named("residual")
      val joined = Concatenate()(residual, Dense(8, activation = "tanh")(b)).named("joined")
      Network(inputs = Seq(a, b), outputs = Dense(3)(joined).named("logits")).withLoss("cross_entropy")
    }),
    "network_lstm_sequence.json" -> (() =>
      Sequential(
        Input(Seq(20), name = "tokens", dtype = "int64"),
        Embedding(1000, 16),
        LSTM(32, returnSequences = true),
        LayerNorm(),
        GRU(16),
        Dense(2))),
    "network_ragged_lstm.json" -> (() =>
      Sequential(
        Input(Seq(Input.Variable), name = "tokens", dtype = "int64"),
        Embedding(1000, 16),
        LSTM(32, returnSequences = true),
        Dropout(0.1),
        GRU(16),
        Dense(2)).withLoss("cross_entropy")),
    "network_ragged_transformer.json" -> (() => {
      val tokens = Input(Seq(Input.Variable), name = "tokens", dtype = "int64")
      val embedded = Embedding(100, 32)(tokens).named("embedded")
      val encoded = TransformerEncoder(numHeads = 4, ffDim = 64, dropout = 0.0)(embedded).named("encoded")
      val attended = MultiHeadAttention(numHeads = 4, keyDim = 8)(encoded).named("attended")
      val normed = LayerNorm()(Add()(encoded, attended).named("residual")).named("normed")
      val pooled = Concatenate()(SequencePooling()(normed).named("mean"), SequencePooling("max")(normed).named("max"))
        .named("pooled")
      Network(inputs = tokens, outputs = Dense(3)(pooled).named("logits")).withLoss("cross_entropy")
    }),
    "network_mlp.json" -> (() =>
      Sequential(Seq(Dense(32, activation = "relu"), Dropout(0.1), Dense(10)), inputShape = Seq(64))
        .withLoss("cross_entropy")
        .withOptimizer("adam", "lr" -> 0.001)),
    "network_transformer.json" -> (() =>
      Sequential(
        Input(Seq(12), name = "tokens", dtype = "int64"),
        Embedding(100, 32),
        TransformerEncoder(numHeads = 4, ffDim = 64, dropout = 0.0),
        MultiHeadAttention(numHeads = 4, keyDim = 8),
        Flatten(),
        Dense(2))))

  private case class SharedVector(path: Path) {
    private val doc = JsonParser.parse(SharedFiles.read(path)).asInstanceOf[JObj]
    private val expected = doc.get("expected").get.asInstanceOf[JObj]
    val name: String = path.getFileName.toString
    val spec: String = CanonicalJson.write(doc.get("spec").get)
    val canonical: String = expected.get("canonical_json").collect { case JStr(s) => s }.get
    val paramCount: Long = expected.get("param_count").collect { case JInt(i) => i.toLong }.get
    val outputShape: Seq[Int] = expected.get("output_shape").collect { case JArr(xs) => xs.map { case JInt(i) => i.toInt; case _ => -1 } }.get
  }

  private val vectors = SharedFiles.networkVectors.map(SharedVector)

  test("there are at least five vectors, each with a DSL counterpart here") {
    assert(vectors.size >= 5, s"found ${vectors.map(_.name)} in ${SharedFiles.vectorsDir}")
    val missing = vectors.map(_.name).filterNot(written.contains)
    assert(missing.isEmpty, s"write these vectors' networks with the DSL in VectorsSuite.written: $missing")
  }

  for (v <- vectors) {
    test(s"${v.name}: fromJson(spec).toJson is canonical_json, with its param count and output shape") {
      val net = Network.fromJson(v.spec)
      assert(net.toJson == v.canonical)
      assert(net.paramCount == v.paramCount)
      assert(net.outputShape == v.outputShape)
      assert(Network.fromJson(v.canonical).toJson == v.canonical)
    }

    test(s"${v.name}: the network written with the DSL gives canonical_json") {
      written.get(v.name).foreach { make =>
        val net = make()
        assert(net.toJson == v.canonical)
        assert(net == Network.fromJson(v.canonical))
        assert(net.paramCount == v.paramCount)
        assert(net.outputShape == v.outputShape)
      }
    }

    test(s"${v.name}: what we write passes the schema file") {
      val json = Network.fromJson(v.spec).toJson
      assert(SharedFiles.schemaViolations(json).isEmpty)
      written.get(v.name).foreach(make => assert(SharedFiles.schemaViolations(make().toJson).isEmpty))
    }
  }

  test("a spec that breaks the schema is caught by the independent validator too") {
    val bad = """{"format":"sparkdl.network/v1","inputs":[{"name":"x","shape":[4]}],"layers":[{"type":"Dense"}]}"""
    assert(SharedFiles.schemaViolations(bad).nonEmpty)
  }
}
