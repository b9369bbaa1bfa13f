package sparkdl.nn

import org.scalatest.funsuite.AnyFunSuite

import sparkdl.SharedFiles
import sparkdl.json.Json._
import sparkdl.json.JsonParser

/** The DSL: what it writes (byte for byte what Python writes for the same network), shape
  * inference, parameter counts and the functional API. Expected JSON texts and numbers were
  * produced by `sparkdl.nn` in Python.
  */
class NetworkSuite extends AnyFunSuite {

  private def mlp: Sequential =
    Sequential(Seq(Dense(32, activation = "relu"), Dropout(0.1), Dense(10)), inputShape = Seq(64))

  private def graph: Network = {
    val (a, b) = (Input(Seq(16), name = "a"), Input(Seq(8), name = "b"))
    val h = Dense(16, activation = "relu")(a)
    val joined = Concatenate()(Add()(a, h), Dense(8)(b))
    Network(inputs = Seq(a, b), outputs = Dense(3)(joined)).withOptimizer("sgd")
  }

  private def nodes(net: Network): Vector[JObj] =
    JsonParser.parse(net.toJson).asInstanceOf[JObj].get("nodes").collect { case JArr(xs) => xs.map(_.asInstanceOf[JObj]) }.get

  test("round trips are byte-identical and keep the kind of network (test_round_trip_is_byte_identical)") {
    for (net <- Seq(mlp, graph, mlp.withLoss("mse"))) {
      val text = net.toJson
      val again = Network.fromJson(text)
      assert(again.toJson == text)
      assert(again == net && again.hashCode == net.hashCode)
      assert(again.getClass == net.getClass)
      assert(Network.fromJson(text.getBytes("UTF-8")) == net)
      assert(SharedFiles.schemaViolations(text).isEmpty)
    }
  }

  test("non-canonical input gives canonical output") {
    val text = """{
                 |    "inputs": [{"shape": [4], "name": "x"}],
                 |    "format": "sparkdl.network/v1",
                 |    "layers": [{"units": 2, "type": "Dense"}]
                 |}""".stripMargin
    assert(Network.fromJson(text).toJson ==
      """{"format":"sparkdl.network/v1","inputs":[{"dtype":"float32","name":"x","shape":[4]}],""" +
        """"layers":[{"activation":null,"type":"Dense","units":2,"use_bias":true}]}""")
  }

  test("functional nodes get Python's generated, unique names") {
    val ns = nodes(graph)
    assert(ns.map(_.get("name").get) == Vector("dense", "add", "dense_1", "concatenate", "dense_2").map(JStr))
    assert(ns(1).get("inputs").get == JArr(Vector(JStr("a"), JStr("dense"))))
    assert(graph.optimizer.contains(Head("sgd", Map.empty)))
    assert(graph.toJson.contains(""""optimizer":{"name":"sgd","params":{}}"""))
    assert(graph.toJson.endsWith(""""outputs":["dense_2"]}"""))
  }

  test("snake_case names for every kind of layer, explicit names reserved first, several outputs") {
    val x = Input(Seq(4, 8), name = "x")
    val h = LSTM(3, returnSequences = true)(MultiHeadAttention(2, 4)(x))
    val d1 = Dense(2)(Conv1d(2, 1)(h).named("dense"))
    val out = Dense(1)(GlobalAveragePooling()(MaxPool1d(1)(d1)))
    val net = Network(inputs = x, outputs = Seq(out, d1))
    assert(net.toJson ==
      """{"format":"sparkdl.network/v1","inputs":[{"dtype":"float32","name":"x","shape":[4,8]}],"nodes":[""" +
        """{"inputs":["x"],"layer":{"dropout":0.0,"key_dim":4,"num_heads":2,"type":"MultiHeadAttention"},"name":"multi_head_attention"},""" +
        """{"inputs":["multi_head_attention"],"layer":{"return_sequences":true,"type":"LSTM","units":3},"name":"lstm"},""" +
        """{"inputs":["lstm"],"layer":{"activation":null,"filters":2,"kernel_size":1,"padding":0,"stride":1,"type":"Conv1d","use_bias":true},"name":"dense"},""" +
        """{"inputs":["dense"],"layer":{"activation":null,"type":"Dense","units":2,"use_bias":true},"name":"dense_1"},""" +
        """{"inputs":["dense_1"],"layer":{"padding":0,"pool_size":1,"stride":null,"type":"MaxPool1d"},"name":"max_pool1d"},""" +
        """{"inputs":["max_pool1d"],"layer":{"type":"GlobalAveragePooling"},"name":"global_average_pooling"},""" +
        """{"inputs":["global_average_pooling"],"layer":{"activation":null,"type":"Dense","units":1,"use_bias":true},"name":"dense_2"}],""" +
        """"outputs":["dense_2","dense_1"]}""")
    assert(net.outputShapes == Seq(Seq(1), Seq(2, 2)))
    assert(net.paramCount == 465)
    assert(intercept[IllegalStateException](net.outputShape).getMessage.contains("2 outputs"))
  }

  test("a reused node is one node; an equal layer applied twice is two") {
    val x = Input(Seq(4), name = "x")
    val h = Dense(4)(x)
    val shared = Network(inputs = x, outputs = Add()(h, h))
    assert(nodes(shared).map(_.get("name").get) == Vector(JStr("dense"), JStr("add")))
    val twice = Network(inputs = x, outputs = Add()(Dense(4)(x), Dense(4)(x)))
    assert(nodes(twice).map(_.get("name").get) == Vector(JStr("dense"), JStr("dense_1"), JStr("add")))
    assert(twice.paramCount == 2 * shared.paramCount)
  }

  test("both ways of giving a Sequential its input agree (test_sequential_forms_agree)") {
    val a = Sequential(Input(Seq(1, 8, 8)), Conv2d(8, 3, activation = "relu"), MaxPool2d(2), Flatten(), Dense(10))
    val b = Sequential(Seq(Conv2d(8, 3, activation = "relu"), MaxPool2d(2), Flatten(), Dense(10)), inputShape = Seq(1, 8, 8))
    assert(a == b && a.outputShape == Seq(10) && a.paramCount == 810)
    assert(a.layers.head == Conv2d(8, 3, activation = "relu"))
    assert(Linear(3, activation = "softmax") == Dense(3, activation = "softmax"))
  }

  // (layer, input shape, dtype, Python's layer JSON, output shape, parameter count): the
  // ONE_INPUT table of tests/unit/test_nn_layers.py, as Python wrote and counted it.
  private val oneInput: Seq[(Layer, Seq[Int], String, String, Seq[Int], Long)] = Seq(
    (Dense(7), Seq(5), "float32", """{"activation":null,"type":"Dense","units":7,"use_bias":true}""", Seq(7), 42),
    (Dense(7, activation = "gelu", useBias = false), Seq(4, 5), "float32",
      """{"activation":"gelu","type":"Dense","units":7,"use_bias":false}""", Seq(4, 7), 35),
    (Linear(3, activation = "softmax"), Seq(6), "float32",
      """{"activation":"softmax","type":"Dense","units":3,"use_bias":true}""", Seq(3), 21),
    (Activation("relu"), Seq(3, 4), "float32", """{"name":"relu","type":"Activation"}""", Seq(3, 4), 0),
    (Activation("leaky_relu"), Seq(3, 4), "float32", """{"name":"leaky_relu","type":"Activation"}""", Seq(3, 4), 0),
    (Dropout(0.5), Seq(9), "float32", """{"rate":0.5,"type":"Dropout"}""", Seq(9), 0),
    (Flatten(), Seq(2, 3, 4), "float32", """{"type":"Flatten"}""", Seq(24), 0),
    (Reshape(Seq(4, -1)), Seq(2, 3, 4), "float32", """{"shape":[4,-1],"type":"Reshape"}""", Seq(4, 6), 0),
    (Reshape(Seq(1, 8, 8)), Seq(64), "float32", """{"shape":[1,8,8],"type":"Reshape"}""", Seq(1, 8, 8), 0),
    (BatchNorm(), Seq(6), "float32", """{"epsilon":1e-05,"momentum":0.1,"type":"BatchNorm"}""", Seq(6), 12),
    (BatchNorm(), Seq(3, 10), "float32", """{"epsilon":1e-05,"momentum":0.1,"type":"BatchNorm"}""", Seq(3, 10), 6),
    (BatchNorm(momentum = 0.2), Seq(3, 5, 5), "float32", """{"epsilon":1e-05,"momentum":0.2,"type":"BatchNorm"}""",
      Seq(3, 5, 5), 6),
    (LayerNorm(), Seq(7, 12), "float32", """{"epsilon":1e-05,"type":"LayerNorm"}""", Seq(7, 12), 24),
    (Embedding(50, 6), Seq(9), "int64", """{"input_dim":50,"output_dim":6,"type":"Embedding"}""", Seq(9, 6), 300),
    (Conv1d(4, 3), Seq(2, 11), "float32",
      """{"activation":null,"filters":4,"kernel_size":3,"padding":0,"stride":1,"type":"Conv1d","use_bias":true}""", Seq(4, 9), 28),
    (Conv1d(4, 4, padding = "same", activation = "relu"), Seq(2, 11), "float32",
      """{"activation":"relu","filters":4,"kernel_size":4,"padding":"same","stride":1,"type":"Conv1d","use_bias":true}""",
      Seq(4, 11), 36),
    (Conv1d(4, 3, stride = 2, padding = 1, useBias = false), Seq(2, 11), "float32",
      """{"activation":null,"filters":4,"kernel_size":3,"padding":1,"stride":2,"type":"Conv1d","use_bias":false}""",
      Seq(4, 6), 24),
    (Conv2d(8, 3), Seq(1, 8, 8), "float32",
      """{"activation":null,"filters":8,"kernel_size":3,"padding":0,"stride":1,"type":"Conv2d","use_bias":true}""",
      Seq(8, 6, 6), 80),
    (Conv2d(8, (3, 2), stride = (2, 1), padding = (1, 0), activation = "tanh"), Seq(3, 9, 7), "float32",
      """{"activation":"tanh","filters":8,"kernel_size":[3,2],"padding":[1,0],"stride":[2,1],"type":"Conv2d","use_bias":true}""",
      Seq(8, 5, 6), 152),
    (Conv2d(5, 3, padding = "same"), Seq(2, 6, 5), "float32",
      """{"activation":null,"filters":5,"kernel_size":3,"padding":"same","stride":1,"type":"Conv2d","use_bias":true}""",
      Seq(5, 6, 5), 95),
    (MaxPool1d(2), Seq(3, 9), "float32", """{"padding":0,"pool_size":2,"stride":null,"type":"MaxPool1d"}""", Seq(3, 4), 0),
    (MaxPool2d(2), Seq(3, 9, 8), "float32", """{"padding":0,"pool_size":2,"stride":null,"type":"MaxPool2d"}""",
      Seq(3, 4, 4), 0),
    (MaxPool2d(3, stride = 1, padding = 1), Seq(3, 5, 5), "float32",
      """{"padding":1,"pool_size":3,"stride":1,"type":"MaxPool2d"}""", Seq(3, 5, 5), 0),
    (AvgPool1d(3, stride = 2), Seq(3, 10), "float32", """{"padding":0,"pool_size":3,"stride":2,"type":"AvgPool1d"}""",
      Seq(3, 4), 0),
    (AvgPool2d((2, 3)), Seq(3, 8, 9), "float32", """{"padding":0,"pool_size":[2,3],"stride":null,"type":"AvgPool2d"}""",
      Seq(3, 4, 3), 0),
    (GlobalAveragePooling(), Seq(4, 10), "float32", """{"type":"GlobalAveragePooling"}""", Seq(4), 0),
    (GlobalAveragePooling(), Seq(4, 5, 6), "float32", """{"type":"GlobalAveragePooling"}""", Seq(4), 0),
    (LSTM(8), Seq(6, 5), "float32", """{"return_sequences":false,"type":"LSTM","units":8}""", Seq(8), 480),
    (LSTM(8, returnSequences = true), Seq(6, 5), "float32", """{"return_sequences":true,"type":"LSTM","units":8}""",
      Seq(6, 8), 480),
    (GRU(8), Seq(6, 5), "float32", """{"return_sequences":false,"type":"GRU","units":8}""", Seq(8), 360),
    (GRU(8, returnSequences = true), Seq(6, 5), "float32", """{"return_sequences":true,"type":"GRU","units":8}""",
      Seq(6, 8), 360),
    (MultiHeadAttention(numHeads = 2, keyDim = 4), Seq(6, 8), "float32",
      """{"dropout":0.0,"key_dim":4,"num_heads":2,"type":"MultiHeadAttention"}""", Seq(6, 8), 288),
    (TransformerEncoder(numHeads = 2, ffDim = 16), Seq(6, 8), "float32",
      """{"activation":"relu","dropout":0.1,"ff_dim":16,"num_heads":2,"type":"TransformerEncoder"}""", Seq(6, 8), 600),
    (TransformerEncoder(numHeads = 4, ffDim = 8, dropout = 0.0, activation = "gelu"), Seq(3, 8), "float32",
      """{"activation":"gelu","dropout":0.0,"ff_dim":8,"num_heads":4,"type":"TransformerEncoder"}""", Seq(3, 8), 464),
    (SequencePooling(), Seq(6, 8), "float32", """{"mode":"mean","type":"SequencePooling"}""", Seq(8), 0),
    (SequencePooling("max"), Seq(Input.Variable, 8), "float32", """{"mode":"max","type":"SequencePooling"}""",
      Seq(8), 0),
    (LSTM(8, returnSequences = true), Seq(Input.Variable, 5), "float32",
      """{"return_sequences":true,"type":"LSTM","units":8}""", Seq(Input.Variable, 8), 480),
    (Embedding(50, 6), Seq(Input.Variable), "int64", """{"input_dim":50,"output_dim":6,"type":"Embedding"}""",
      Seq(Input.Variable, 6), 300))

  for (((layer, shape, dtype, json, out, params), i) <- oneInput.zipWithIndex)
    test(s"layer $i: ${layer.typeName} on ${Checks.fmtShape(shape)} writes Python's JSON, shape and count") {
      assert(layer.toJson == json)
      val net = Sequential(Input(shape, dtype = dtype), layer)
      assert(net.outputShape == out)
      assert(net.paramCount == params)
      assert(Network.fromJson(net.toJson) == net)
    }

  test("every layer type is exercised (test_every_registered_layer_is_exercised)") {
    assert((oneInput.map(_._1.typeName).toSet ++ Set("Add", "Concatenate")) == layerTypes.toSet)
    assert(layerTypes.size == 22)
  }

  test("merge layers (test_merge_layers)") {
    val cases: Seq[(Merge, Seq[Seq[Int]], Seq[Int], String)] = Seq(
      (Add(), Seq(Seq(4, 3), Seq(4, 3), Seq(4, 3)), Seq(4, 3),
        """{"format":"sparkdl.network/v1","inputs":[{"dtype":"float32","name":"x0","shape":[4,3]},""" +
          """{"dtype":"float32","name":"x1","shape":[4,3]},{"dtype":"float32","name":"x2","shape":[4,3]}],""" +
          """"nodes":[{"inputs":["x0","x1","x2"],"layer":{"type":"Add"},"name":"add"}],"outputs":["add"]}"""),
      (Concatenate(), Seq(Seq(4, 3), Seq(4, 5)), Seq(4, 8),
        """{"format":"sparkdl.network/v1","inputs":[{"dtype":"float32","name":"x0","shape":[4,3]},""" +
          """{"dtype":"float32","name":"x1","shape":[4,5]}],"nodes":[{"inputs":["x0","x1"],""" +
          """"layer":{"axis":-1,"type":"Concatenate"},"name":"concatenate"}],"outputs":["concatenate"]}"""),
      (Concatenate(axis = 1), Seq(Seq(2, 5), Seq(3, 5)), Seq(5, 5),
        """{"format":"sparkdl.network/v1","inputs":[{"dtype":"float32","name":"x0","shape":[2,5]},""" +
          """{"dtype":"float32","name":"x1","shape":[3,5]}],"nodes":[{"inputs":["x0","x1"],""" +
          """"layer":{"axis":1,"type":"Concatenate"},"name":"concatenate"}],"outputs":["concatenate"]}"""),
      (Concatenate(axis = -2), Seq(Seq(2, 5), Seq(3, 5)), Seq(5, 5),
        """{"format":"sparkdl.network/v1","inputs":[{"dtype":"float32","name":"x0","shape":[2,5]},""" +
          """{"dtype":"float32","name":"x1","shape":[3,5]}],"nodes":[{"inputs":["x0","x1"],""" +
          """"layer":{"axis":-2,"type":"Concatenate"},"name":"concatenate"}],"outputs":["concatenate"]}"""))
    for ((layer, shapes, expected, json) <- cases) {
      val inputs = shapes.zipWithIndex.map { case (s, i) => Input(s, name = s"x$i") }
      val net = Network(inputs = inputs, outputs = layer(inputs: _*))
      assert(net.outputShape == expected)
      assert(net.toJson == json)
    }
  }

  test("loss and optimizer parameters of every JSON kind are written as Python writes them") {
    val net = Sequential(Seq(Dense(2)), inputShape = Seq(3))
      .withLoss("mse", "reduction" -> "sum")
      .withOptimizer("sgd", "lr" -> 0.1, "momentum" -> 0.9, "nesterov" -> true, "steps" -> Seq(10, 20),
        "betas" -> (Seq(0.9, 0.999)), "eps" -> 1e-8, "n" -> None, "w" -> 1)
    val expected =
      """{"format":"sparkdl.network/v1","inputs":[{"dtype":"float32","name":"input","shape":[3]}],""" +
        """"layers":[{"activation":null,"type":"Dense","units":2,"use_bias":true}],"loss":{"name":"mse",""" +
        """"params":{"reduction":"sum"}},"optimizer":{"name":"sgd","params":{"betas":[0.9,0.999],"eps":1e-08,""" +
        """"lr":0.1,"momentum":0.9,"n":null,"nesterov":true,"steps":[10,20],"w":1}}}"""
    assert(net.toJson == expected)
    assert(net.isInstanceOf[Sequential])
    assert(net.toString == s"Sequential.fromJson('$expected')")
    assert(Network.fromJson(expected) == net)
  }

  test("corner cases of the functional API") {
    // Inputs are values: an equal Input stands for the declared one, as in Python.
    val net = Network(inputs = Input(Seq(3), name = "x"), outputs = Dense(2)(Input(Seq(3), name = "x")))
    assert(net.outputShape == Seq(2))
    // An output that is an input, with no layer: refused when made, as the schema refuses "nodes": [].
    val x = Input(Seq(3), name = "x")
    assert(intercept[sparkdl.ConfigException](Network(inputs = x, outputs = x)).getMessage ==
      "A network needs at least one layer between its inputs and outputs. Received: outputs=['x'], all " +
        "inputs. Apply a layer, e.g. Dense(10)(x), or use Sequential([Input(shape), ...]).")
    // With a layer, an input may also be an output.
    assert(Network(inputs = x, outputs = Seq(x, Dense(2)(x))).outputShapes == Seq(Seq(3), Seq(2)))
    // A name with a final newline is refused (Python's `$` alone would take it).
    assert(intercept[sparkdl.ConfigException](Dense(2)(x).named("n\n")).getMessage ==
      "A node name must match ^[A-Za-z_][A-Za-z0-9_]*$. Received: name='n\\n'")
    assert(intercept[sparkdl.ConfigException](Input(Seq(3), name = "x\n")).getMessage ==
      "Input: name must match ^[A-Za-z_][A-Za-z0-9_]*$. Received: name='x\\n'")
  }

  test("a NaN or infinite parameter is refused when set, naming it, as in Python") {
    val e = intercept[sparkdl.ConfigException](
      Sequential(Seq(Dense(2)), inputShape = Seq(3)).withOptimizer("sgd", "lr" -> Double.NaN))
    assert(e.getMessage == "optimizer params must be finite numbers: JSON has no NaN or Infinity. Received: lr=nan")
    val inf = intercept[sparkdl.ConfigException](
      Sequential(Seq(Dense(2)), inputShape = Seq(3)).withLoss("mse", "w" -> Seq(1.0, Double.PositiveInfinity)))
    assert(inf.getMessage == "loss params must be finite numbers: JSON has no NaN or Infinity. Received: w=[1.0, inf]")
    assert(intercept[sparkdl.ConfigException](BatchNorm(epsilon = Double.PositiveInfinity)).getMessage ==
      "BatchNorm: epsilon must be a positive, finite float. Received: epsilon=inf")
  }

  test("a variable sequence length: written as null, carried through shapes, refused where a size is needed") {
    val tokens = Input(Seq(Input.Variable), name = "tokens", dtype = "int64")
    val net = Sequential(tokens, Embedding(1000, 16), LSTM(32, returnSequences = true), GRU(16), Dense(2))
    assert(net.toJson.contains(""""inputs":[{"dtype":"int64","name":"tokens","shape":[null]}]"""))
    assert(net.outputShape == Seq(2))
    assert(net.paramCount == Sequential(Input(Seq(20), dtype = "int64"), Embedding(1000, 16),
      LSTM(32, returnSequences = true), GRU(16), Dense(2)).paramCount)
    assert(Network.fromJson(net.toJson) == net)
    assert(Sequential(tokens, Embedding(10, 4), LSTM(3, returnSequences = true)).outputShape == Seq(Input.Variable, 3))
    def message(f: => Any) = intercept[sparkdl.ConfigException](f).getMessage
    assert(message(Sequential(tokens, Embedding(10, 4), Flatten())) ==
      "Layer 1 (Flatten) needs fixed sizes, received (None, 4) with a variable sequence axis (None). " +
        "Reduce it first, e.g. with LSTM or GRU (return_sequences=False) or SequencePooling")
    assert(message(Sequential(Input(Seq(Input.Variable)), Dense(3))) ==
      "Layer 0 (Dense) expected input shape (..., features) with a fixed number of features, e.g. (None, 1) " +
        "for one feature per step, received (None,)")
    assert(message(Input(Seq(3, Input.Variable))) ==
      "Input: only the first axis may be None (a variable sequence length). Received: shape=(3, None)")
    assert(message(SequencePooling("sum")) == "SequencePooling: mode must be 'mean' or 'max'. Received: mode='sum'")
    val (a, b) = (Input(Seq(Input.Variable, 4), name = "a"), Input(Seq(Input.Variable, 2), name = "b"))
    assert(Network(inputs = Seq(a, b), outputs = Concatenate()(a, b)).outputShape == Seq(Input.Variable, 6))
    assert(message(Network(inputs = Seq(a, b), outputs = Concatenate(axis = 1)(a, a))) ==
      "Layer 'concatenate' (Concatenate) expected input shape a fixed size on axis=1 (it is the variable " +
        "sequence axis), received [(None, 4), (None, 4)]")
  }
}
