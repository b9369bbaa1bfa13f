package sparkdl

/** Root of every error sparkdl raises on the JVM, as `SparkDLError` is in Python.
  *
  * A marker trait, so that each error can also extend the matching JDK exception
  * (`catch { case e: SparkDLException => ... }` catches anything sparkdl rejects).
  */
trait SparkDLException extends Throwable

/** A parameter, layer or network spec is invalid (Python: `ConfigError`, a `ValueError`).
  *
  * The message is the one Python gives for the same mistake, word for word: it names
  * the layer, echoes the bad value and says what is accepted.
  *
  * Example:
  * {{{
  * import sparkdl.nn._
  * try Dense(0) catch { case e: ConfigException => e.getMessage }
  * // "Dense: units must be a positive integer. Received: units=0"
  * }}}
  */
class ConfigException(message: String) extends IllegalArgumentException(message) with SparkDLException
