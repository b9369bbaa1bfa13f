package sparkdl.examples

import org.apache.spark.ml.feature.VectorAssembler
import org.apache.spark.sql.SparkSession
import org.apache.spark.sql.functions.{avg, col}

import sparkdl.ml.TorchEstimator
import sparkdl.nn._

/** Trains an MLP on the 8x8 digits with two workers, prints the test accuracy and, given a
  * second argument, saves the model there (any Hadoop path: a local directory, `hdfs://...`).
  *
  * The data is Parquet with `features` (array<float> or vector, 64 values) and `label`,
  * or a CSV with 64 pixel columns and a `label` column (header row):
  * {{{
  * spark-submit --master local-cluster[2,1,1024] --jars jvm/target/sparkdl-jvm_2.13-0.1.0.jar \
  *   --class sparkdl.examples.TrainDigits jvm/target/sparkdl-jvm_2.13-0.1.0.jar digits.parquet \
  *   [hdfs:///models/digits]
  * }}}
  * Executors need a Python with sparkdl (`spark.pyspark.python` or `PYSPARK_PYTHON`).
  */
object TrainDigits {
  def main(args: Array[String]): Unit = {
    require(args.length == 1 || args.length == 2,
      "usage: TrainDigits <digits.parquet | digits.csv> [<model output directory>]")
    val spark = SparkSession.builder().appName("sparkdl-train-digits").getOrCreate()
    val path = args(0)
    val data =
      if (path.endsWith(".csv")) {
        val raw = spark.read.option("header", "true").option("inferSchema", "true").csv(path)
        new VectorAssembler().setInputCols(raw.columns.filter(_ != "label")).setOutputCol("features")
          .transform(raw).select("features", "label")
      } else spark.read.parquet(path)
    val Array(train, test) = data.randomSplit(Array(0.8, 0.2), seed = 3)

    val net = Sequential(Input(Seq(64)), Dense(64, activation = "relu"), Dense(10))
    val model = new TorchEstimator().setNetwork(net).setLoss("cross_entropy").setOptimizer("adam")
      .setLearningRate(1e-2).setBatchSize(32).setFeaturesCol("features").setLabelCol("label")
      .setNumWorkers(2).setEpochs(20).setSeed(1L).fit(train)

    val accuracy = model.transform(test)
      .select(avg((col("prediction") === col("label").cast("double")).cast("double"))).first().getDouble(0)
    println(f"test accuracy: $accuracy%.4f")
    args.drop(1).headOption.foreach { out =>
      model.write.overwrite().save(out)
      println(s"saved model: $out")
    }
    spark.stop()
  }
}
