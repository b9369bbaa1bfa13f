package sparkdl.ml.model

import org.apache.spark.ml.util.{MLReadable, MLReader}

/** The class name saved models give (`sparkdl.ml.model.TorchModel`, Python's), resolved on
  * the JVM: Spark's readers of `Pipeline`/`PipelineModel` stages and of a
  * `CrossValidatorModel`'s or `TrainValidationSplitModel`'s best model load a stage through
  * the `read` of the class its metadata names, so a saved [[sparkdl.ml.TorchModel]] loads
  * there as one. Use `sparkdl.ml.TorchModel.load` directly.
  */
object TorchModel extends MLReadable[sparkdl.ml.TorchModel] {
  override def read: MLReader[sparkdl.ml.TorchModel] = sparkdl.ml.TorchModel.read
}
