package sparkdl.nn

import org.scalatest.funsuite.AnyFunSuite

import sparkdl.{ConfigException, SparkDLException}

/** Mistakes made with the DSL fail at once with Python's message, word for word.
  *
  * The expected texts are what `sparkdl.nn` (Python) says for the same call; several come
  * from `tests/unit/test_nn_layers.py` and `test_nn_network.py`.
  */
class ErrorMessagesSuite extends AnyFunSuite {

  private def message(make: => Any): String = {
    val e = intercept[ConfigException](make)
    assert(e.isInstanceOf[IllegalArgumentException] && e.isInstanceOf[SparkDLException])
    e.getMessage
  }

  private val activations = "['gelu', 'leaky_relu', 'relu', 'sigmoid', 'softmax', 'tanh']"

  private val badAttributes: Seq[(String, () => Any, String)] = Seq(
    ("Dense(0)", () => Dense(0), "Dense: units must be a positive integer. Received: units=0"),
    ("Dense swish", () => Dense(3, activation = "swish"),
      s"Dense: activation must be one of $activations or None. Received: activation='swish'"),
    ("Dropout(1.0)", () => Dropout(1.0), "Dropout: rate must be in [0, 1). Received: rate=1.0"),
    ("Dropout(-0.5)", () => Dropout(-0.5), "Dropout: rate must be in [0, 1). Received: rate=-0.5"),
    ("Dropout(NaN)", () => Dropout(Double.NaN), "Dropout: rate must be in [0, 1). Received: rate=nan"),
    ("Conv2d same, stride 2", () => Conv2d(4, 3, stride = 2, padding = "same"),
      """Conv2d: padding="same" needs stride=1. Received: stride=2"""),
    ("Conv2d same, stride (1, 2)", () => Conv2d(4, 3, stride = (1, 2), padding = Padding.Same),
      """Conv2d: padding="same" needs stride=1. Received: stride=(1, 2)"""),
    ("Conv2d kernel 3x3x3", () => Conv2d(4, Seq(3, 3, 3)),
      "Conv2d: kernel_size must be an int >= 1 or a pair of them. Received: kernel_size=(3, 3, 3)"),
    ("Conv1d kernel (3, 3)", () => Conv1d(4, (3, 3)),
      "Conv1d: kernel_size must be an int >= 1. Received: kernel_size=(3, 3)"),
    ("Conv2d padding valid", () => Conv2d(4, 3, padding = "valid"),
      """Conv2d: padding must be an int, a pair or "same". Received: padding='valid'"""),
    ("Conv2d padding -1", () => Conv2d(4, 3, padding = -1),
      "Conv2d: padding must be an int >= 0 or a pair of them. Received: padding=-1"),
    ("Conv2d filters 0", () => Conv2d(0, 3), "Conv2d: filters must be a positive integer. Received: filters=0"),
    ("Conv2d swish", () => Conv2d(2, 3, activation = "swish"),
      s"Conv2d: activation must be one of $activations or None. Received: activation='swish'"),
    ("MaxPool2d padding", () => MaxPool2d(2, padding = 2),
      "MaxPool2d: padding must be at most half of pool_size. Received: padding=2, pool_size=2"),
    ("MaxPool2d padding pair", () => MaxPool2d((2, 4), padding = (1, 3)),
      "MaxPool2d: padding must be at most half of pool_size. Received: padding=(1, 3), pool_size=(2, 4)"),
    ("AvgPool1d stride 0", () => AvgPool1d(2, stride = 0), "AvgPool1d: stride must be an int >= 1. Received: stride=0"),
    ("Reshape -1, -1", () => Reshape(Seq(-1, -1)),
      "Reshape: shape must be positive ints with at most one -1. Received: shape=(-1, -1)"),
    ("Reshape 0", () => Reshape(Seq(0, 3)),
      "Reshape: shape must be positive ints with at most one -1. Received: shape=(0, 3)"),
    ("Concatenate axis 0", () => Concatenate(axis = 0),
      "Concatenate: axis must be a non-zero int (0 is the batch). Received: axis=0"),
    ("Embedding 0", () => Embedding(0, 3), "Embedding: input_dim must be a positive integer. Received: input_dim=0"),
    ("Embedding out 0", () => Embedding(3, 0), "Embedding: output_dim must be a positive integer. Received: output_dim=0"),
    ("TransformerEncoder tanh", () => TransformerEncoder(2, 8, activation = "tanh"),
      "TransformerEncoder: activation must be 'relu' or 'gelu'. Received: activation='tanh'"),
    ("TransformerEncoder dropout 1", () => TransformerEncoder(2, 8, dropout = 1),
      "TransformerEncoder: dropout must be in [0, 1). Received: dropout=1.0"),
    ("MultiHeadAttention heads 0", () => MultiHeadAttention(0, 8),
      "MultiHeadAttention: num_heads must be a positive integer. Received: num_heads=0"),
    ("LSTM 0", () => LSTM(0), "LSTM: units must be a positive integer. Received: units=0"),
    ("GRU -1", () => GRU(-1), "GRU: units must be a positive integer. Received: units=-1"),
    ("BatchNorm momentum", () => BatchNorm(momentum = 1.5),
      "BatchNorm: momentum must be a float in [0, 1]. Received: momentum=1.5"),
    ("BatchNorm epsilon", () => BatchNorm(epsilon = 0), "BatchNorm: epsilon must be a positive, finite float. Received: epsilon=0.0"),
    ("LayerNorm epsilon", () => LayerNorm(epsilon = -1e-3),
      "LayerNorm: epsilon must be a positive, finite float. Received: epsilon=-0.001"),
    ("Activation swish", () => Activation("swish"),
      s"Activation: activation must be one of $activations. Received: activation='swish'"),
    ("Input (0, 3)", () => Input(Seq(0, 3)),
      "Input: shape must be a non-empty sequence of positive ints. Received: shape=(0, 3)"),
    ("Input ()", () => Input(Seq()), "Input: shape must be a non-empty sequence of positive ints. Received: shape=()"),
    ("Input dtype", () => Input(Seq(3), dtype = "float64"),
      "Input: dtype must be one of ['float32', 'int64']. Received: dtype='float64'"),
    ("Input name", () => Input(Seq(3), name = "a b"),
      "Input: name must match ^[A-Za-z_][A-Za-z0-9_]*$. Received: name='a b'"),
    ("node name", () => Dense(2)(Input(Seq(3))).named("a.b"),
      "A node name must match ^[A-Za-z_][A-Za-z0-9_]*$. Received: name='a.b'"),
    ("Sequential without layers", () => Sequential(Input(Seq(3))),
      "A Sequential needs at least one layer. Received: layers=[]"),
    ("unknown loss", () => Sequential(Seq(Dense(2)), inputShape = Seq(3)).withLoss("hinge"),
      "Unknown loss 'hinge'. Valid: ['bce_with_logits', 'cross_entropy', 'mse', 'nll']"),
    ("unknown optimizer", () => Sequential(Seq(Dense(2)), inputShape = Seq(3)).withOptimizer("lbfgs"),
      "Unknown optimizer 'lbfgs'. Valid: ['adam', 'adamw', 'rmsprop', 'sgd']"))

  for ((name, make, expected) <- badAttributes)
    test(s"bad attribute: $name") {
      assert(message(make()) == expected)
    }

  // (layers, input shape, dtype, message): test_wrong_shape_names_layer_and_both_shapes.
  private val wrongShapes: Seq[(Seq[Layer], Seq[Int], String, String)] = Seq(
    (Seq(Dense(64), Conv2d(8, 3)), Seq(10), "float32",
      "Layer 1 (Conv2d) expected input shape (channels, height, width), received (64,)"),
    (Seq(Conv2d(3, 5)), Seq(1, 3, 3), "float32",
      "Layer 0 (Conv2d) expected input shape (channels, height, width) with spatial sizes >= 5, received (1, 3, 3)"),
    (Seq(Conv1d(3, 2)), Seq(1, 3, 3), "float32",
      "Layer 0 (Conv1d) expected input shape (channels, length), received (1, 3, 3)"),
    (Seq(Flatten(), LSTM(4)), Seq(2, 3), "float32",
      "Layer 1 (LSTM) expected input shape (sequence, features), received (6,)"),
    (Seq(MultiHeadAttention(numHeads = 2, keyDim = 4)), Seq(5, 6), "float32",
      "Layer 0 (MultiHeadAttention) expected input shape (sequence, 8) as num_heads * key_dim = 2 * 4, received (5, 6)"),
    (Seq(TransformerEncoder(numHeads = 4, ffDim = 8)), Seq(5, 6), "float32",
      "Layer 0 (TransformerEncoder) expected input shape (sequence, d_model) with d_model divisible by num_heads=4, " +
        "received (5, 6)"),
    (Seq(Reshape(Seq(5, 5))), Seq(24), "float32",
      "Layer 0 (Reshape) expected input shape 25 elements to fill (5, 5), received (24,)"),
    (Seq(GlobalAveragePooling()), Seq(24), "float32",
      "Layer 0 (GlobalAveragePooling) expected input shape (channels, length) or (channels, height, width), received (24,)"),
    (Seq(Embedding(10, 4)), Seq(5), "float32", "Layer 0 (Embedding) expects int64 input, received float32"),
    (Seq(Dense(4)), Seq(5), "int64", "Layer 0 (Dense) expects float32 input, received int64"),
    // Floor division: (3 - 5) // 2 + 1 is 0 in Python, not 1 as truncation would give.
    (Seq(Conv1d(1, 5, stride = 2)), Seq(1, 3), "float32",
      "Layer 0 (Conv1d) expected input shape (channels, length) with spatial sizes >= 5, received (1, 3)"))

  for (((layers, shape, dtype, expected), i) <- wrongShapes.zipWithIndex)
    test(s"wrong shape $i: ${layers.map(_.typeName).mkString(", ")} on ${Checks.fmtShape(shape)} $dtype") {
      assert(message(Sequential(Input(shape, dtype = dtype), layers: _*)) == expected)
    }

  test("graph errors name the node (test_graph_shape_errors_name_the_node)") {
    val (a, b, c) = (Input(Seq(8), name = "a"), Input(Seq(4), name = "b"), Input(Seq(2, 4), name = "c"))
    assert(message(Network(inputs = Seq(a, b), outputs = Add()(a, b).named("total"))) ==
      "Layer 'total' (Add) expected input shape (8,) for every input, received [(8,), (4,)]")
    assert(message(Network(inputs = Seq(a, c), outputs = Concatenate()(a, c))) ==
      "Layer 'concatenate' (Concatenate) expected input shape shapes of one rank, equal on every axis but axis=-1, " +
        "received [(8,), (2, 4)]")
    assert(message(Network(inputs = Seq(a, b), outputs = Dense(3)(a, b))) ==
      "Layer 'dense' (Dense) takes 1 input. Received: 2 ['a', 'b']")
    assert(message(Network(inputs = a, outputs = Add()(a))) == "Layer 'add' (Add) takes at least 2 inputs. Received: 1 ['a']")
  }

  test("a graph's inputs must be declared and uniquely named (test_graph_input_must_be_declared)") {
    val (x, y) = (Input(Seq(3), name = "x"), Input(Seq(3), name = "y"))
    assert(message(Network(inputs = x, outputs = Add()(x, y))) == "The graph uses input 'y', which is not among inputs=['x']")
    assert(message(Network(inputs = Seq(x, Input(Seq(3), name = "x")), outputs = Dense(2)(x))) ==
      "Input names must be unique. Received: ['x', 'x']")
    assert(message(Network(inputs = x, outputs = Dense(2)(Dense(2)(x).named("h")).named("h"))) ==
      "Layer 'h' (Dense): the name 'h' is already taken")
    assert(message(Network(inputs = x, outputs = Dense(2)(x).named("x"))) == "Layer 'x' (Dense): the name 'x' is already taken")
    assert(message(Network(inputs = x, outputs = Embedding(3, 2)(x))) ==
      "Layer 'embedding' (Embedding) expects int64 input, received float32")
  }

  test("fromJson: an unknown layer type is named, with the valid ones") {
    val spec = """{"format":"sparkdl.network/v1","inputs":[{"name":"x","shape":[4]}],"layers":[{"type":"Dense2","units":2}]}"""
    assert(message(Network.fromJson(spec)) ==
      "Invalid network spec at layers/0/type: 'Dense2' is not one of " + layerTypes.map("'" + _ + "'").mkString("[", ", ", "]"))
  }

  test("fromJson: schema errors name the JSON path (test_schema_rejects_with_a_clear_message)") {
    def spec(layers: String = """[{"type":"Dense","units":2}]""", extra: String = "",
        inputs: String = """[{"name":"x","shape":[4]}]""", format: String = "sparkdl.network/v1") =
      s"""{"format":"$format","inputs":$inputs,"layers":$layers$extra}"""
    val cases = Seq(
      spec(layers = """[{"type":"Dense"}]""") -> "Invalid network spec at layers/0: 'units' is a required property",
      spec(layers = """[{"type":"Dense","units":2,"in_features":4}]""") ->
        "Invalid network spec at layers/0: Additional properties are not allowed ('in_features' was unexpected)",
      spec(layers = """[{"type":"Dense","units":"2"}]""") ->
        "Invalid network spec at layers/0/units: '2' is not of type 'integer'",
      spec(layers = """[{"units":2}]""") -> "Invalid network spec at layers/0: 'type' is a required property",
      spec(format = "sparkdl.network/v9") -> "Invalid network spec at format: 'sparkdl.network/v1' was expected",
      spec(inputs = """[{"name":"x","shape":[4],"dtype":"float16"}]""") ->
        "Invalid network spec at inputs/0/dtype: 'float16' is not one of ['float32', 'int64']",
      """{"format":"sparkdl.network/v1","inputs":[{"name":"x","shape":[4]}]}""" ->
        ("Invalid network spec at <root>: 'nodes' is a required property. A spec has either 'layers' " +
          "(a sequential stack) or 'nodes' and 'outputs' (a graph)"),
      spec(extra = ""","nodes":[{"name":"n","layer":{"type":"Flatten"},"inputs":["x"]}],"outputs":["n"]""") ->
        ("Invalid network spec at <root>: 'layers' cannot be given with 'nodes' or 'outputs'. A spec has either " +
          "'layers' (a sequential stack) or 'nodes' and 'outputs' (a graph)"),
      spec(inputs = """[{"name":"x","shape":[4]},{"name":"y","shape":[4]}]""") ->
        "Invalid network spec at inputs: [{'name': 'x', 'shape': [4]}, {'name': 'y', 'shape': [4]}] is too long",
      """{"format":"sparkdl.network/v1","inputs":[{"name":"x","shape":[4]}],"outputs":["n"],""" +
        """"nodes":[{"name":"n","layer":{"type":"Dense"},"inputs":["x"]}]}""" ->
        "Invalid network spec at nodes/0/layer: 'units' is a required property",
      spec(layers = """[{"type":"Conv2d","filters":2,"kernel_size":3,"stride":2,"padding":"same"}]""") ->
        """Invalid network spec at layers/0: Conv2d: padding="same" needs stride=1. Received: stride=2""",
      spec(layers = """[{"type":"Dense","units":2.0}]""") ->
        "Invalid network spec at layers/0: Dense: units must be a positive integer. Received: units=2.0",
      spec(extra = ""","loss":{"name":"hinge"}""") ->
        "Unknown loss 'hinge'. Valid: ['bce_with_logits', 'cross_entropy', 'mse', 'nll']")
    for ((text, expected) <- cases) assert(message(Network.fromJson(text)) == expected, text)
  }

  test("fromJson: graph errors after the schema (test_semantic_errors_after_schema)") {
    def graph(nodes: String, outputs: String) =
      s"""{"format":"sparkdl.network/v1","inputs":[{"name":"x","shape":[4]}],"outputs":$outputs,"nodes":$nodes}"""
    assert(message(Network.fromJson(graph("""[{"name":"n","layer":{"type":"Dense","units":2},"inputs":["y"]}]""", """["n"]"""))) ==
      "Layer 'n' (Dense) takes 'y', which is not an input or an earlier node. Known: ['x']")
    assert(message(Network.fromJson(graph("""[{"name":"x","layer":{"type":"Dense","units":2},"inputs":["x"]}]""", """["x"]"""))) ==
      "Layer 'x' (Dense): the name 'x' is already taken")
    assert(message(Network.fromJson(graph("""[{"name":"n","layer":{"type":"Dense","units":2},"inputs":["x"]}]""", """["z"]"""))) ==
      "Unknown output 'z'. Known: ['n', 'x']")
  }

  test("fromJson: text that is not JSON") {
    assert(message(Network.fromJson("{not json")).startsWith("A network spec must be JSON: "))
    assert(message(Network.fromJson("")) == "A network spec must be JSON: Expecting value: line 1 column 1 (char 0)")
    assert(message(Network.fromJson("""{"format":1} x""")) == "A network spec must be JSON: Extra data: line 1 column 14 (char 13)")
  }
}
