package sparkdl.nn

import sparkdl.ConfigException
import sparkdl.json.Json
import sparkdl.json.Json._
import sparkdl.json.PyRepr

/** The attributes of one layer's JSON object, read by that layer's `decode`. */
private[nn] final class Attrs(val kind: String, obj: JObj) {
  /** A required attribute (the schema has already checked that it is there). */
  def apply(key: String): Json =
    obj.get(key).getOrElse(throw new ConfigException(s"$kind: missing required attribute ${PyRepr.string(key)}"))

  /** An attribute with a default (Python's dataclass default), used when it is absent. */
  def getOrElse(key: String, default: => Json): Json = obj.get(key).getOrElse(default)
}

/** The layer registry: JSON `type` -> how to read that layer (Python's `LAYERS`).
  *
  * Example:
  * {{{
  * LayerCodec.decode(JsonParser.parse("""{"type": "Dense", "units": 2}""").asInstanceOf[Json.JObj])
  * // Dense(2,None,true)
  * }}}
  */
private[nn] object LayerCodec {

  private final case class Entry(decode: Attrs => Layer, attributes: Set[String])

  private def entry(example: Layer, decode: Attrs => Layer): (String, Entry) =
    example.typeName -> Entry(decode, example.attributes.map(_._1).toSet)

  // One example of each layer gives its attribute names, so they are written down once.
  private val registry: Map[String, Entry] = Map(
    entry(Activation("relu"), Activation.decode),
    entry(Add(), Add.decode),
    entry(AvgPool1d(2), AvgPool1d.decode),
    entry(AvgPool2d(2), AvgPool2d.decode),
    entry(BatchNorm(), BatchNorm.decode),
    entry(Concatenate(), Concatenate.decode),
    entry(Conv1d(1, 1), Conv1d.decode),
    entry(Conv2d(1, 1), Conv2d.decode),
    entry(Dense(1), Dense.decode),
    entry(Dropout(0.0), Dropout.decode),
    entry(Embedding(1, 1), Embedding.decode),
    entry(Flatten(), Flatten.decode),
    entry(GRU(1), GRU.decode),
    entry(GlobalAveragePooling(), GlobalAveragePooling.decode),
    entry(LSTM(1), LSTM.decode),
    entry(LayerNorm(), LayerNorm.decode),
    entry(MaxPool1d(2), MaxPool1d.decode),
    entry(MaxPool2d(2), MaxPool2d.decode),
    entry(MultiHeadAttention(1, 1), MultiHeadAttention.decode),
    entry(Reshape(Seq(1)), Reshape.decode),
    entry(SequencePooling(), SequencePooling.decode),
    entry(TransformerEncoder(1, 1), TransformerEncoder.decode))

  /** Every layer type, sorted as Python sorts them. */
  val types: Seq[String] = registry.keys.toSeq.sorted(sparkdl.json.CanonicalJson.keyOrdering)

  /** A layer from its JSON object (Python's `Layer.from_dict`).
    *
    * @throws ConfigException for an unknown `type` or attribute, or a bad attribute value.
    */
  def decode(obj: JObj): Layer = {
    val kind = obj.get("type")
    val entry = kind match {
      case Some(JStr(name)) if registry.contains(name) => registry(name)
      case _ =>
        throw new ConfigException(s"Unknown layer type ${kind.fold("None")(PyRepr(_))}. " +
          s"Valid types: ${PyRepr.list(types)}")
    }
    val name = kind.collect { case JStr(n) => n }.get
    val unknown = obj.keys.filterNot(k => k == "type" || entry.attributes(k)).distinct.sorted(sparkdl.json.CanonicalJson.keyOrdering)
    if (unknown.nonEmpty)
      throw new ConfigException(s"$name: unknown attributes ${PyRepr.list(unknown)}. " +
        s"Valid: ${PyRepr.list(entry.attributes.toSeq.sorted(sparkdl.json.CanonicalJson.keyOrdering))}")
    entry.decode(new Attrs(name, obj))
  }
}
