package sparkdl.ml

import org.apache.spark.sql.SparkSession

/** One local SparkSession for the suites that save and load stages (no Python needed). */
object LocalSpark {
  lazy val session: SparkSession = SparkSession.builder()
    .master("local[2]")
    .appName("sparkdl-jvm-tests")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.shuffle.partitions", "2")
    .getOrCreate()
}
