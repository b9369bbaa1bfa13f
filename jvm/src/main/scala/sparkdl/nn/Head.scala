package sparkdl.nn

import sparkdl.ConfigException
import sparkdl.json.Json._
import sparkdl.json.{CanonicalJson, Json, PyRepr}

/** A loss or an optimizer in a spec: a registered name and keyword parameters.
  *
  * @param name   e.g. `"cross_entropy"` or `"adam"`
  * @param params keyword arguments of the PyTorch loss or optimizer, e.g. `lr -> 0.001`
  *
  * Example:
  * {{{
  * net.withOptimizer("adam", "lr" -> 0.001).optimizer   // Some(Head(adam,Map(lr -> JFloat(0.001))))
  * }}}
  */
final case class Head(name: String, params: Map[String, Json]) {
  private[nn] def json: JObj = JObj("name" -> JStr(name), "params" -> JObj(params.toVector))
}

object Head {
  /** Loss names the Python worker knows (`sparkdl.losses.loss_names()`). */
  val Losses: Seq[String] = Seq("bce_with_logits", "cross_entropy", "mse", "nll")

  /** Optimizer names the Python worker knows (`sparkdl.optimizers.optimizer_names()`). */
  val Optimizers: Seq[String] = Seq("adam", "adamw", "rmsprop", "sgd")

  /** A head from Scala values (numbers, strings, booleans, sequences, maps: see [[Json.from]]). */
  def of(name: String, params: Seq[(String, Any)]): Head = Head(name, params.map { case (k, v) => k -> Json.from(v) }.toMap)

  /** Python's `_head`: refuses a name the worker does not know, listing the valid ones.
    *
    * @param kind "loss" or "optimizer"
    */
  private[nn] def check(head: Head, kind: String): Head = {
    val names = if (kind == "loss") Losses else Optimizers
    if (!names.contains(head.name))
      throw new ConfigException(s"Unknown $kind ${PyRepr.string(head.name)}. Valid: ${PyRepr.list(names)}")
    // Refused here, not when writing, so the error names the head and the parameter.
    head.params.toSeq.sortBy(_._1)(CanonicalJson.keyOrdering).find(p => !finite(p._2)).foreach { case (key, value) =>
      throw new ConfigException(s"$kind params must be finite numbers: JSON has no NaN or Infinity. " +
        s"Received: $key=${PyRepr(value)}")
    }
    head
  }

  private def finite(value: Json): Boolean = value match {
    case JFloat(d)    => !d.isNaN && !d.isInfinite
    case JArr(items)  => items.forall(finite)
    case JObj(fields) => fields.forall(f => finite(f._2))
    case _            => true
  }

  /** A head read from a spec (the schema has checked its form). */
  private[nn] def decode(obj: JObj): Head = {
    val name = obj.get("name").collect { case JStr(s) => s }.get
    val params = obj.get("params").collect { case JObj(fields) => fields.toMap }.getOrElse(Map.empty[String, Json])
    Head(name, params)
  }
}
