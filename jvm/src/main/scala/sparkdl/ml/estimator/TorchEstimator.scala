package sparkdl.ml.estimator

import org.apache.spark.ml.util.{MLReadable, MLReader}

/** The class name Python's `sparkdl.TorchEstimator` saves (`sparkdl.ml.estimator.TorchEstimator`),
  * resolved on the JVM: Spark's readers of a `Pipeline`'s stages and of a `CrossValidator`'s
  * or `TrainValidationSplit`'s estimator load a stage through the `read` of the class its
  * metadata names, so an estimator saved from Python loads there as a
  * [[sparkdl.ml.TorchEstimator]] (when its network is a `sparkdl.nn` network). Use
  * `sparkdl.ml.TorchEstimator.load` directly.
  */
object TorchEstimator extends MLReadable[sparkdl.ml.TorchEstimator] {
  override def read: MLReader[sparkdl.ml.TorchEstimator] = sparkdl.ml.TorchEstimator.read
}
