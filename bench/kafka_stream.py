"""Kafka: records/s into training tensors, and a streaming scoring job's latency and throughput.

Starts its own Kafka broker (``deploy/local/servers.py``, KRaft, on 127.0.0.1) and
a ``local-cluster[2,1,1024]`` session with Spark's Kafka connector.

* ingest: synthetic rows (64 float32 features, a label) in a 2-partition topic,
  as raw float32 tensors and as JSON records. ``read_kafka`` then the conversion
  the training workers run (``features_to_numpy``, Arrow -> one float32 array per
  batch) inside ``mapInArrow``, forced by a count; best of 3 after a warm-up, in
  records/s. The same rows from a local Parquet file go through the same
  conversion for reference (ratio = Kafka float32 / Parquet, information only).
* streaming throughput: a backlog of records (JSON) scored by a 64-256-256-10 MLP
  (``read_kafka_stream`` -> ``TorchModel.transform`` -> ``to_kafka_records`` ->
  Kafka sink) with ``availableNow``: records / seconds from start to stop, and
  records / processing seconds summed over micro-batches.
* streaming latency: the same query left running (default trigger: the next
  micro-batch starts when the last ends) while a producer on the driver sends
  records at a fixed rate; latency = the score record's Kafka timestamp minus the
  input record's (both CreateTime, same clock), p50/p95/p99/max.

No target: numbers for information.

    .venv/bin/python bench/kafka_stream.py [--quick]
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time

import numpy as np
import torch
from _common import cli, local_servers, save, spark_session, synthetic, write_parquet

FEATURES, HIDDEN, CLASSES = 64, 256, 10
SCHEMA = "features array<float>, label long"
OUT_SCHEMA = "prediction double, source struct<topic: string, partition: int, offset: long>"


def make_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES))


def to_tensors(column: str, batches):
    """What a training worker does with a batch: Arrow column -> float32 array."""
    import pyarrow as pa

    from sparkdl.data.arrow_tensors import features_to_numpy

    for batch in batches:
        x = features_to_numpy([batch.column(column)], None, [column])
        yield pa.record_batch({"rows": pa.array([len(x)], pa.int64())})


def tensor_rate(make_df, column: str, rows: int, runs: int) -> dict:
    from functools import partial

    def once() -> float:
        began = time.perf_counter()
        got = make_df().mapInArrow(partial(to_tensors, column), "rows long") \
            .agg({"rows": "sum"}).first()[0]
        assert got == rows, (got, rows)
        return time.perf_counter() - began

    once()  # warm-up: Python workers, Kafka consumers, JIT
    seconds = [once() for _ in range(runs)]
    return {"seconds": seconds, "best_records_per_s": rows / min(seconds)}


def float32_values(batches):
    """Rows of (features, label) -> Kafka values: the features' raw float32 bytes."""
    import pyarrow as pa

    for batch in batches:
        features = batch.column("features")
        flat = features.flatten().to_numpy().astype("<f4")
        data = pa.py_buffer(flat.tobytes())
        offsets = pa.py_buffer((np.arange(len(batch) + 1, dtype=np.int32) * FEATURES * 4)
                               .tobytes())
        values = pa.Array.from_buffers(pa.binary(), len(batch), [None, offsets, data])
        yield pa.record_batch({"value": values})


def produce_backlog(df, bootstrap: str, topic: str) -> None:
    df.write.format("kafka").option("kafka.bootstrap.servers", bootstrap) \
        .option("topic", topic).save()


class RateProducer(threading.Thread):
    """Sends JSON records at ``rate`` per second from the driver JVM (kafka-clients)."""

    def __init__(self, spark, bootstrap: str, topic: str, x: np.ndarray, rate: int,
                 seconds: float, key_prefix: str) -> None:
        super().__init__(daemon=True)
        jvm = spark._jvm
        props = jvm.java.util.Properties()
        serializer = "org.apache.kafka.common.serialization.ByteArraySerializer"
        for key, value in {"bootstrap.servers": bootstrap, "key.serializer": serializer,
                           "value.serializer": serializer, "linger.ms": "0"}.items():
            props.put(key, value)
        self._jvm, self._producer = jvm, jvm.org.apache.kafka.clients.producer.KafkaProducer(
            props)
        self.topic, self.rate, self.seconds, self.prefix = topic, rate, seconds, key_prefix
        self.values = [json.dumps({"features": row.tolist(), "label": 0}).encode()
                       for row in x]
        self.sent = 0

    def run(self) -> None:
        record = self._jvm.org.apache.kafka.clients.producer.ProducerRecord
        began = time.perf_counter()
        total = int(self.rate * self.seconds)
        while self.sent < total:
            due = began + self.sent / self.rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            value = self.values[self.sent % len(self.values)]
            self._producer.send(record(self.topic, f"{self.prefix}{self.sent}".encode(), value))
            self.sent += 1
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()


def stream_query(spark, model, bootstrap: str, topic: str, out_topic: str, checkpoint: str,
                 max_per_trigger: int | None, trigger: dict):
    from sparkdl.data.kafka import read_kafka_stream, to_kafka_records

    stream = read_kafka_stream(spark, bootstrap, topic, schema=SCHEMA,
                               max_offsets_per_trigger=max_per_trigger)
    records = to_kafka_records(model.transform(stream), ["prediction"])
    writer = (records.writeStream.format("kafka").option("kafka.bootstrap.servers", bootstrap)
              .option("topic", out_topic).option("checkpointLocation", checkpoint))
    return (writer.trigger(**trigger) if trigger else writer).start()


def latencies_ms(spark, bootstrap: str, in_topic: str, out_topic: str,
                 key_prefix: str) -> np.ndarray:
    """Per input record whose key starts with ``key_prefix``: first score's timestamp -
    input timestamp (ms)."""
    from pyspark.sql import functions as F

    from sparkdl.data.kafka import read_kafka

    inputs = read_kafka(spark, bootstrap, in_topic, schema=SCHEMA).where(
        F.col("key").cast("string").startswith(key_prefix)).select(
        "partition", "offset", F.col("timestamp").alias("produced"))
    scores = read_kafka(spark, bootstrap, out_topic, schema=OUT_SCHEMA).groupBy(
        F.col("source.partition").alias("partition"), F.col("source.offset").alias("offset")
    ).agg(F.min("timestamp").alias("scored"))
    joined = inputs.join(scores, ["partition", "offset"], "left").select(
        ((F.col("scored").cast("double") - F.col("produced").cast("double")) * 1000)
        .alias("ms")).collect()
    ms = np.array([r.ms for r in joined], dtype=float)
    assert not np.isnan(ms).any(), f"{int(np.isnan(ms).sum())} records were never scored"
    return ms


def main(quick: bool = False) -> dict:
    from pyspark import cloudpickle

    from sparkdl import TorchEstimator
    from sparkdl.data.kafka import read_kafka
    from sparkdl.jvm import kafka_conf

    if __name__ != "__main__":  # bench/ is not importable on the executors
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    rows, backlog, rate, seconds, runs = ((100_000, 40_000, 200, 15, 3) if quick
                                          else (400_000, 200_000, 500, 40, 3))
    x, y = synthetic(rows, FEATURES, CLASSES)
    result: dict = {"quick": quick}
    with tempfile.TemporaryDirectory(prefix="sparkdl-bench-") as tmp, \
            local_servers().KafkaBroker() as kafka, \
            spark_session("local-cluster[2,1,1024]", "bench-kafka-stream",
                          **kafka_conf(offline=True)) as spark:
        bootstrap = kafka.bootstrap
        parquet = spark.read.parquet(write_parquet(f"{tmp}/data", x, y, files=2))
        for topic, partitions in (("f32", 2), ("json", 2), ("backlog", 2), ("live", 2),
                                  ("scores-backlog", 1), ("scores-live", 1)):
            kafka.create_topic(topic, partitions)

        # 1. Ingest into training tensors.
        produce_backlog(parquet.mapInArrow(float32_values, "value binary"), bootstrap, "f32")
        produce_backlog(parquet.selectExpr("to_json(struct(features, label)) AS value"),
                        bootstrap, "json")
        ingest = {
            "kafka_float32": tensor_rate(lambda: read_kafka(
                spark, bootstrap, "f32", value_format="float32", tensor_length=FEATURES),
                "value", rows, runs),
            "kafka_json": tensor_rate(lambda: read_kafka(spark, bootstrap, "json",
                                                         schema=SCHEMA), "features", rows, runs),
            "parquet": tensor_rate(lambda: spark.read.parquet(f"{tmp}/data"), "features",
                                   rows, runs),
        }
        for name, r in ingest.items():
            print(f"[kafka_stream] ingest {name:14s}: {r['best_records_per_s']:>10,.0f} "
                  f"records/s into tensors (seconds {[round(s, 2) for s in r['seconds']]})")

        # 2. Streaming throughput on a backlog.
        model = TorchEstimator(model=make_mlp(), batchSize=256, epochs=1, numWorkers=2) \
            .fit(parquet.limit(20_000))
        model = model.copy({model.probabilityCol: "", model.rawPredictionCol: "",
                            model.batchSize: 1024})
        produce_backlog(parquet.limit(backlog).selectExpr(
            "to_json(struct(features, label)) AS value"), bootstrap, "backlog")
        began = time.perf_counter()
        query = stream_query(spark, model, bootstrap, "backlog", "scores-backlog",
                             f"{tmp}/ckpt-backlog", backlog // 4, {"availableNow": True})
        query.awaitTermination()
        wall = time.perf_counter() - began
        assert query.exception() is None, query.exception()
        batches = [p for p in query.recentProgress if p["numInputRows"]]
        processing_s = sum(p["durationMs"]["triggerExecution"] for p in batches) / 1000
        steady = batches[1:] or batches
        steady_rate = sum(p["numInputRows"] for p in steady) / (
            sum(p["durationMs"]["triggerExecution"] for p in steady) / 1000)
        throughput = {"records": backlog, "micro_batches": len(batches),
                      "wall_seconds": wall, "records_per_s_wall": backlog / wall,
                      "records_per_s_processing": backlog / processing_s,
                      "records_per_s_after_first_batch": steady_rate}
        print(f"[kafka_stream] stream throughput: {backlog} records in {len(batches)} "
              f"micro-batches, {throughput['records_per_s_wall']:,.0f} records/s wall "
              f"(with query start), {steady_rate:,.0f} records/s after the first batch")

        # 3. Latency under a steady input rate.
        query = stream_query(spark, model, bootstrap, "live", "scores-live",
                             f"{tmp}/ckpt-live", None, {})
        warm = RateProducer(spark, bootstrap, "live", x[:200], rate=100, seconds=2,
                            key_prefix="warm-")
        warm.run()  # first micro-batches pay for Python workers and the model load
        query.processAllAvailable()
        warm.close()
        producer = RateProducer(spark, bootstrap, "live", x[:2000], rate=rate,
                                seconds=seconds, key_prefix="live-")
        producer.start()
        producer.join()
        producer.close()
        query.processAllAvailable()
        query.stop()
        ms = latencies_ms(spark, bootstrap, "live", "scores-live", "live-")
        measured = [p for p in query.recentProgress if p["numInputRows"]][-20:]
        latency = {"rate_per_s": rate, "seconds": seconds, "records": int(len(ms)),
                   "p50_ms": float(np.percentile(ms, 50)),
                   "p95_ms": float(np.percentile(ms, 95)),
                   "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
                   "mean_batch_ms": float(np.mean(
                       [p["durationMs"]["triggerExecution"] for p in measured]))}
        print(f"[kafka_stream] stream latency at {rate} records/s for {seconds}s "
              f"({len(ms)} records): p50 {latency['p50_ms']:.0f} ms, p95 "
              f"{latency['p95_ms']:.0f} ms, p99 {latency['p99_ms']:.0f} ms, max "
              f"{latency['max_ms']:.0f} ms (micro-batch {latency['mean_batch_ms']:.0f} ms)")

    ratio = ingest["kafka_float32"]["best_records_per_s"] / ingest["parquet"]["best_records_per_s"]
    print(f"[kafka_stream] ingest ratio Kafka float32 / Parquet = {ratio:.2f}x (information)")
    result.update({
        "config": {"rows": rows, "features": FEATURES, "partitions": 2, "backlog": backlog,
                   "model": f"MLP {FEATURES}-{HIDDEN}-{HIDDEN}-{CLASSES}",
                   "master": "local-cluster[2,1,1024]"},
        "ingest": ingest, "stream_throughput": throughput, "stream_latency": latency,
        "ratio": ratio, "target": None, "target_met": None,
        "ratios": {"ingest records/s float32 / json": ingest["kafka_float32"][
            "best_records_per_s"] / ingest["kafka_json"]["best_records_per_s"]},
    })
    save("kafka_stream", result)
    return result


if __name__ == "__main__":
    cli(main, __doc__, "smaller sizes")
