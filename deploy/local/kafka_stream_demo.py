"""Score a Kafka stream on this machine, end to end: broker, model, stream, three sinks.

1. starts a Kafka broker (KRaft, :class:`servers.KafkaBroker`) and creates the
   topics ``digits`` (3 partitions), ``digits-scores`` and ``digits-dlq``;
2. trains an MLP on the scikit-learn digits across 2 executors;
3. produces the digits as JSON records, plus three malformed ones;
4. runs two streaming queries: scores to Parquet (exactly once, with a
   checkpoint) and scores plus dead letters to Kafka (at least once);
5. prints each micro-batch's rows, dead letters and the model version, then what
   landed in each sink.

Run it (needs ``make kafka-jars``)::

    .venv/bin/python deploy/local/kafka_stream_demo.py --output out/kafka-stream
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the one way to import servers.py (see its docstring)
    sys.path.append(str(HERE))

from servers import KafkaBroker  # noqa: E402 - a sibling script, not a package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="out/kafka-stream",
                        help="Parquet scores and checkpoints go here (replaced)")
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    import torch
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from sklearn.datasets import load_digits

    from sparkdl import TorchEstimator
    from sparkdl.data.kafka import (
        dead_letter_counts,
        dead_letter_records,
        read_kafka,
        read_kafka_stream,
        to_kafka_records,
    )
    from sparkdl.jvm import with_kafka

    out = Path(args.output)
    shutil.rmtree(out, ignore_errors=True)
    with KafkaBroker() as kafka:
        print(f"kafka ready: {kafka.bootstrap}")
        for topic, partitions in (("digits", 3), ("digits-scores", 1), ("digits-dlq", 1)):
            kafka.create_topic(topic, partitions)
        # the connector by its Maven coordinates, from ~/.m2 (`make kafka-jars`) alone
        spark = (with_kafka(SparkSession.builder.master("local-cluster[2,1,1024]"),
                            offline=True)
                 .config("spark.ui.showConsoleProgress", "false").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        try:
            data = load_digits()
            rows = [((x / 16).tolist(), int(y)) for x, y in zip(data.data, data.target)]
            df = spark.createDataFrame(rows, "features array<float>, label long")
            net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                      torch.nn.Linear(64, 10))
            model = TorchEstimator(model=net, optimizerParams={"lr": 1e-2}, batchSize=32,
                                   epochs=5, numWorkers=2).fit(df)
            model.setModelVersionCol("modelVersion")
            print(f"model version: {model.version}")

            records = df.select(F.col("label").cast("string").alias("key"),
                                F.to_json(F.struct("features", "label")).alias("value"))
            malformed = spark.createDataFrame(
                [("bad", "{not json"), ("bad", '{"label": 1}'),
                 ("bad", json.dumps({"features": [0.0] * 10, "label": 2}))],
                "key string, value string")
            records.unionByName(malformed).write.format("kafka").option("topic", "digits") \
                .option("kafka.bootstrap.servers", kafka.bootstrap).save()

            stream = read_kafka_stream(spark, kafka.bootstrap, "digits",
                                       schema="features array<float> NOT NULL, label long",
                                       tensor_length=64, dead_letter_col="_corrupt",
                                       max_offsets_per_trigger=500)
            scores = model.transform(stream.where("_corrupt IS NULL").drop("_corrupt"))
            to_parquet = (scores.drop("features").writeStream.format("parquet")
                          .option("path", str(out / "scores"))
                          .option("checkpointLocation", str(out / "scores.ckpt"))
                          .trigger(availableNow=True).start())
            to_kafka = (to_kafka_records(scores, topic="digits-scores")
                        .unionByName(dead_letter_records(stream, "_corrupt", topic="digits-dlq"))
                        .writeStream.format("kafka")
                        .option("kafka.bootstrap.servers", kafka.bootstrap)
                        .option("checkpointLocation", str(out / "kafka.ckpt"))
                        .trigger(availableNow=True).start())
            to_parquet.awaitTermination()
            to_kafka.awaitTermination()

            for batch in dead_letter_counts(to_parquet):
                print(f"micro-batch {batch['batchId']}: {batch['rows']} records, "
                      f"{batch['dead_letters']} dead letters")
            scored = spark.read.parquet(str(out / "scores"))
            accuracy = scored.select(F.avg((F.col("prediction") == F.col("label"))
                                           .cast("double"))).first()[0]
            print(f"Parquet: {scored.count()} scores (accuracy {accuracy:.3f}), model versions "
                  f"{[r[0] for r in scored.select('modelVersion').distinct().collect()]}")
            out_schema = "prediction double, probability array<double>, modelVersion string"
            sent = read_kafka(spark, kafka.bootstrap, "digits-scores", schema=out_schema)
            print(f"Kafka digits-scores: {sent.count()} records (at least once: a retried "
                  "micro-batch writes again)")
            dlq = spark.read.format("kafka").option("kafka.bootstrap.servers", kafka.bootstrap) \
                .option("subscribe", "digits-dlq").option("includeHeaders", "true").load()
            for row in dlq.collect():
                print("Kafka digits-dlq:", bytes(row.headers[0].value).decode())
        finally:
            spark.stop()


if __name__ == "__main__":
    main()
