package sparkdl.nn

import scala.collection.mutable
import scala.language.implicitConversions

import sparkdl.ConfigException
import sparkdl.json.Json._
import sparkdl.json.{CanonicalJson, Json, JsonParser, PyRepr}

/** A network spec: inputs, then a stack of layers ([[Sequential]]) or a graph of named
  * nodes, and an optional loss and optimizer. Immutable.
  *
  * Its JSON form (format `sparkdl.network/v1`) is what crosses languages: for the same
  * network, [[toJson]] here and `to_json()` in Python give the same bytes. Shapes are
  * inferred when the network is made, so a layer that cannot take its input fails at once,
  * naming the layer, the expected and the received shape.
  *
  * Example (functional API):
  * {{{
  * import sparkdl.nn._
  * val x = Input(Seq(64), name = "x")
  * val h = Dense(32, activation = "relu")(x)
  * val net = Network(inputs = x, outputs = Dense(10)(h)).withLoss("cross_entropy")
  * net.outputShape   // Vector(10)
  * net.paramCount    // 2410
  * net.toJson        // {"format":"sparkdl.network/v1","inputs":[...],"loss":...,"nodes":[{...,"name":"dense"},...
  * }}}
  */
class Network private[nn] (
    val inputs: Seq[Input],
    private[nn] val body: Network.Body,
    val loss: Option[Head],
    val optimizer: Option[Head]) {

  loss.foreach(Head.check(_, "loss"))
  optimizer.foreach(Head.check(_, "optimizer"))

  private val (shapes, paramCounts) = Network.infer(inputs, body)

  /** The output shapes without the batch dimension, one per output. */
  def outputShapes: Seq[Shape] = shapes

  /** The output shape without the batch dimension.
    *
    * @throws IllegalStateException for a network with several outputs (see [[outputShapes]]).
    */
  def outputShape: Shape = outputShapes match {
    case Seq(one) => one
    case many     => throw new IllegalStateException(s"This network has ${many.size} outputs; use outputShapes")
  }

  /** Trainable scalars of the PyTorch module this spec builds, computed from the spec alone. */
  def paramCount: Long = paramCounts.sum

  /** The same network with a loss, e.g. `withLoss("cross_entropy")`.
    *
    * @throws ConfigException for a name the Python worker does not know (listing the valid ones)
    */
  def withLoss(name: String, params: (String, Any)*): Network =
    new Network(inputs, body, Some(Head.of(name, params)), optimizer)

  /** The same network with an optimizer, e.g. `withOptimizer("adam", "lr" -> 0.001)`.
    *
    * @throws ConfigException for a name the Python worker does not know (listing the valid ones)
    */
  def withOptimizer(name: String, params: (String, Any)*): Network =
    new Network(inputs, body, loss, Some(Head.of(name, params)))

  /** The spec as a JSON value (`loss`/`optimizer` only when set). */
  private[nn] def json: JObj = {
    val structure = body match {
      case Network.Stack(layers) => Vector("layers" -> JArr(layers.map(_.json).toVector))
      case Network.Graph(nodes, outputs) =>
        Vector(
          "nodes" -> JArr(nodes.map(n => JObj("name" -> JStr(n.name), "layer" -> n.layer.json,
            "inputs" -> JArr(n.inputs.map(JStr(_)).toVector))).toVector),
          "outputs" -> JArr(outputs.map(JStr(_)).toVector))
    }
    JObj(Vector("format" -> JStr(Network.Format), "inputs" -> JArr(inputs.map(_.json).toVector)) ++ structure ++
      loss.map("loss" -> _.json) ++ optimizer.map("optimizer" -> _.json))
  }

  /** Canonical JSON: sorted keys, no spaces, Python's float repr; the same bytes as Python's
    * `to_json()` for the same network, so specs can be compared and hashed as strings.
    *
    * @throws ConfigException if the spec holds a value JSON cannot carry (the layer and head
    *                         checks refuse NaN and infinities first: a safety net, as in Python)
    */
  lazy val toJson: String =
    try CanonicalJson.write(json)
    catch {
      case e: IllegalArgumentException => throw new ConfigException(s"This network cannot be written as JSON: ${e.getMessage}")
    }

  override def equals(other: Any): Boolean = other match {
    case that: Network => toJson == that.toJson
    case _             => false
  }

  override def hashCode: Int = toJson.hashCode

  override def toString: String = {
    val kind = getClass.getSimpleName
    try s"$kind.fromJson(${PyRepr.string(toJson)})"
    catch { case _: IllegalArgumentException => s"$kind(${inputs.size} inputs, not JSON-compliant parameters)" }
  }
}

object Network {

  /** The spec format this code reads and writes. */
  val Format = "sparkdl.network/v1"

  /** A graph node of a spec: its name, layer and the names of its inputs. */
  private[nn] final case class NodeSpec(name: String, layer: Layer, inputs: Seq[String])

  private[nn] sealed trait Body
  private[nn] final case class Stack(layers: Seq[Layer]) extends Body
  private[nn] final case class Graph(nodes: Seq[NodeSpec], outputs: Seq[String]) extends Body

  /** One value or a sequence of them: `inputs = x` and `inputs = Seq(a, b)` both work. */
  final class OneOrMore[+A] private (val values: Seq[A])

  object OneOrMore {
    implicit def one[A](value: A): OneOrMore[A] = new OneOrMore(Seq(value))
    implicit def many[A](values: Seq[A]): OneOrMore[A] = new OneOrMore(values)
  }

  /** A network from the functional API: the graph reaching `outputs` from `inputs`.
    *
    * Unnamed nodes are named after their layer type in snake_case, with `_1`, `_2`, ... for
    * repeats (`dense`, `dense_1`, `multi_head_attention`), as Python names them.
    *
    * @param inputs  an [[Input]] or a sequence of them (their order is the module's)
    * @param outputs a layer output ([[Node]]) or a sequence of them
    * @throws ConfigException for a graph using an undeclared input, a layer that cannot take
    *                         its input (naming it, and the expected and received shapes), ...
    */
  def apply(inputs: OneOrMore[Input], outputs: OneOrMore[Tensor]): Network = {
    val ins = inputs.values.toVector
    val outs = outputs.values.toVector
    val order = mutable.ArrayBuffer.empty[Node]
    val seen = mutable.Set.empty[Node] // Node has identity equality

    def visit(x: Tensor): Unit = x match {
      case i: Input =>
        if (!ins.contains(i))
          throw new ConfigException(s"The graph uses input ${PyRepr.string(i.name)}, which is not among " +
            s"inputs=${PyRepr.list(ins.map(_.name))}")
      case n: Node =>
        if (!seen(n)) {
          n.inputs.foreach(visit)
          seen += n
          order += n
        }
    }
    outs.foreach(visit)
    if (order.isEmpty)
      throw new ConfigException("A network needs at least one layer between its inputs and outputs. Received: " +
        s"outputs=${PyRepr.list(outs.collect { case i: Input => i.name })}, all inputs. Apply a layer, e.g. " +
        "Dense(10)(x), or use Sequential([Input(shape), ...]).")

    // Explicit names are reserved first, so generated ones never take them.
    val taken = mutable.Set.empty[String] ++ ins.map(_.name) ++ order.flatMap(_.name)
    val names = mutable.Map.empty[Node, String]
    for (node <- order) {
      names(node) = node.name.getOrElse {
        val base = snake(node.layer.typeName)
        val name = Iterator.from(0).map(k => if (k == 0) base else s"${base}_$k").find(!taken(_)).get
        taken += name
        name
      }
    }
    def nameOf(t: Tensor): String = t match {
      case i: Input => i.name
      case n: Node  => names(n)
    }
    val nodes = order.map(n => NodeSpec(names(n), n.layer, n.inputs.map(nameOf).toVector)).toVector
    new Network(ins, Graph(nodes, outs.map(nameOf)), None, None)
  }

  /** `MultiHeadAttention` -> `multi_head_attention`, `LSTM` -> `lstm`, `Conv2d` -> `conv2d`. */
  private[nn] def snake(name: String): String =
    name.replaceAll("(?<=[a-z0-9])(?=[A-Z])", "_").toLowerCase(java.util.Locale.ROOT)

  /** Parse, validate against the schema and rebuild a network (a [[Sequential]] for a stack).
    * `fromJson(net.toJson).toJson == net.toJson`; non-canonical input gives canonical output.
    *
    * Example:
    * {{{
    * Network.fromJson("""{"format":"sparkdl.network/v1","inputs":[{"name":"input","shape":[4]}],
    *                      "layers":[{"type":"Dense","units":2}]}""").paramCount   // 10
    * }}}
    *
    * @throws ConfigException for text that is not JSON, a spec the schema refuses (naming the
    *                         JSON path), an unknown layer type, or a network whose shapes do not fit
    */
  def fromJson(text: String): Network = {
    val value =
      try JsonParser.parse(text)
      catch { case e: IllegalArgumentException => throw new ConfigException(s"A network spec must be JSON: ${e.getMessage}") }
    fromJsonValue(value)
  }

  /** [[fromJson]] for UTF-8 bytes. */
  def fromJson(bytes: Array[Byte]): Network = fromJson(new String(bytes, java.nio.charset.StandardCharsets.UTF_8))

  private[nn] def fromJsonValue(value: Json): Network = {
    SpecSchema.validate(value)
    val spec = value.asInstanceOf[JObj]
    def items(key: String): Vector[Json] = spec.get(key).collect { case JArr(xs) => xs }.getOrElse(Vector.empty)
    def string(j: Json): String = j.asInstanceOf[JStr].value
    def obj(j: Json): JObj = j.asInstanceOf[JObj]
    val inputs = items("inputs").map(obj).map(readInput)
    def layer(path: String, j: Json): Layer =
      try LayerCodec.decode(obj(j))
      catch { case e: ConfigException => throw new ConfigException(s"Invalid network spec at $path: ${e.getMessage}") }
    val loss = spec.get("loss").map(j => Head.decode(obj(j)))
    val optimizer = spec.get("optimizer").map(j => Head.decode(obj(j)))
    if (spec.contains("layers")) {
      val layers = items("layers").zipWithIndex.map { case (j, k) => layer(s"layers/$k", j) }
      new Sequential(inputs, layers, loss, optimizer)
    } else {
      val nodes = items("nodes").zipWithIndex.map { case (j, k) =>
        val node = obj(j)
        val l = layer(s"nodes/$k/layer", node.get("layer").get)
        NodeSpec(string(node.get("name").get), l, node.get("inputs").collect { case JArr(xs) => xs.map(string) }.get)
      }
      new Network(inputs, Graph(nodes, items("outputs").map(string)), loss, optimizer)
    }
  }

  private def readInput(obj: JObj): Input = {
    val shape = obj.get("shape").collect { case JArr(xs) => xs }.get
    val dims = shape.collect {
      case item: JInt => Checks.int("Input", "shape", item, "")
      case JNull      => Input.Variable
    }
    if (dims.size != shape.size) // e.g. 4.0, which the schema takes for an integer
      throw new ConfigException("Input: shape must be a non-empty sequence of positive ints. " +
        s"Received: shape=${PyRepr.tuple(shape)}")
    val name = obj.get("name").collect { case JStr(s) => s }.get
    Input(dims, name, obj.get("dtype").collect { case JStr(s) => s }.getOrElse("float32"))
  }

  /** Shape inference, step by step (Python's `Network._infer`): the output shapes, and the
    * parameter count of each step.
    */
  private def infer(inputs: Seq[Input], body: Body): (Seq[Shape], Seq[Long]) = {
    val inputNames = inputs.map(_.name)
    if (inputNames.distinct.size != inputNames.size)
      throw new ConfigException(s"Input names must be unique. Received: ${PyRepr.list(inputNames)}")
    val steps: Seq[(String, String, Layer, Seq[String])] = body match {
      case Stack(layers) =>
        if (inputs.size != 1)
          throw new ConfigException(s"A sequential network takes exactly one input. Received: ${inputs.size} inputs")
        layers.zipWithIndex.map { case (layer, i) =>
          (s"Layer $i (${layer.typeName})", i.toString, layer, Seq(if (i == 0) inputs.head.name else (i - 1).toString))
        }
      case Graph(nodes, _) =>
        nodes.map(n => (s"Layer ${PyRepr.string(n.name)} (${n.layer.typeName})", n.name, n.layer, n.inputs))
    }
    val env = mutable.Map.empty[String, (Shape, String)] ++ inputs.map(i => i.name -> (i.shape, i.dtype))
    val params = Vector.newBuilder[Long]
    def known = PyRepr.list(env.keys.toSeq.sorted(CanonicalJson.keyOrdering))
    for ((label, name, layer, args) <- steps) {
      body match {
        case _: Graph =>
          if (!Checks.isName(name)) throw new ConfigException(s"$label: a node name must match ${Checks.NamePattern}")
          if (env.contains(name)) throw new ConfigException(s"$label: the name ${PyRepr.string(name)} is already taken")
          args.find(!env.contains(_)).foreach { missing =>
            throw new ConfigException(s"$label takes ${PyRepr.string(missing)}, which is not an input or an " +
              s"earlier node. Known: $known")
          }
        case _ =>
      }
      val arityOk = layer.arity.fold(args.size >= 2)(_ == args.size)
      if (!arityOk) {
        val want = layer.arity.fold("at least 2 inputs")(a => s"$a input")
        throw new ConfigException(s"$label takes $want. Received: ${args.size} ${PyRepr.list(args)}")
      }
      val inShapes = args.map(env(_)._1)
      val dtypes = args.map(env(_)._2)
      dtypes.find(!layer.inputDtypes.contains(_)).foreach { bad =>
        throw new ConfigException(s"$label expects ${layer.inputDtypes.mkString(" or ")} input, received $bad")
      }
      inShapes.find(s => s.nonEmpty && s.head == Input.Variable).filter(_ => !layer.variableLength).foreach { s =>
        throw new ConfigException(s"$label needs fixed sizes, received ${Checks.fmtShape(s)} with a variable " +
          "sequence axis (None). Reduce it first, e.g. with LSTM or GRU (return_sequences=False) or SequencePooling")
      }
      val out =
        try layer.infer(inShapes)
        catch { case e: ShapeMismatch => throw new ConfigException(s"$label expected input shape ${e.expected}, received ${e.received}") }
      env(name) = (out, layer.outputDtype(dtypes))
      params += layer.paramCount(inShapes)
    }
    val outputShapes = body match {
      case Graph(_, outputs) =>
        outputs.find(!env.contains(_)).foreach { out =>
          throw new ConfigException(s"Unknown output ${PyRepr.string(out)}. Known: $known")
        }
        outputs.map(env(_)._1)
      case Stack(layers) => Seq(env(if (layers.isEmpty) inputs.head.name else (layers.size - 1).toString)._1)
    }
    (outputShapes, params.result())
  }
}
