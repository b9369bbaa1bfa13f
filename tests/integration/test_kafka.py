"""Training from a real Kafka topic (KRaft broker started by the tests) via read_kafka."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
import torch
from pyspark.sql import functions as F

from sparkdl import ConfigError, SchemaError, TorchEstimator
from sparkdl.data.kafka import read_kafka

pytestmark = [pytest.mark.spark, pytest.mark.slow]

PARTITIONS = 3


def produce(df, bootstrap: str, topic: str) -> None:
    """Write a DataFrame's ``value`` (and optional ``key``) column with Spark's Kafka sink."""
    df.write.format("kafka").option("kafka.bootstrap.servers", bootstrap) \
        .option("topic", topic).save()


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def accuracy(df) -> float:
    return df.select(F.avg((F.col("prediction") == F.col("label")).cast("double"))).first()[0]


def fit(df):
    return TorchEstimator(model=mlp, optimizerParams={"lr": 1e-2}, batchSize=32, epochs=10,
                          numWorkers=2, seed=1, backend="torch").fit(df)


def test_json_records_train_as_well_as_parquet(spark, kafka, digits, tmp_path):
    train, test = digits
    kafka.create_topic("digits-json", PARTITIONS)
    produce(train.select(F.to_json(F.struct("features", "label")).alias("value"),
                         F.col("label").cast("string").alias("key")),
            kafka.bootstrap, "digits-json")
    df = read_kafka(spark, kafka.bootstrap, "digits-json", value_format="json",
                    schema="features array<float>, label long")
    assert df.count() == train.count()
    assert {r.partition for r in df.select("partition").distinct().collect()} == {0, 1, 2}
    assert set(df.columns) >= {"key", "topic", "partition", "offset", "timestamp"}

    train.write.parquet(str(tmp_path / "train.parquet"))
    from_parquet = spark.read.parquet(str(tmp_path / "train.parquet"))
    kafka_acc = accuracy(fit(df.select("features", "label")).transform(test))
    parquet_acc = accuracy(fit(from_parquet).transform(test))
    assert kafka_acc >= 0.93 and parquet_acc >= 0.93
    assert abs(kafka_acc - parquet_acc) <= 0.03, (kafka_acc, parquet_acc)


def test_raw_float32_tensors_and_a_malformed_record(spark, kafka):
    rng = np.random.default_rng(0)
    tensors = rng.normal(size=(20, 8)).astype("<f4")
    rows = [(bytearray(t.tobytes()),) for t in tensors]
    kafka.create_topic("tensors", partitions=1)
    produce(spark.createDataFrame(rows, "value binary"), kafka.bootstrap, "tensors")
    df = read_kafka(spark, kafka.bootstrap, "tensors", value_format="float32", tensor_length=8)
    got = np.array([r.value for r in df.collect()], np.float32)
    # the sink's write tasks interleave, so compare the records in a fixed order
    def in_order(a):
        return a[np.lexsort(a.T[::-1])]

    np.testing.assert_array_equal(in_order(got), in_order(tensors))

    produce(spark.createDataFrame([(bytearray(b"\x00" * 12),)], "value binary"),
            kafka.bootstrap, "tensors")
    bad = read_kafka(spark, kafka.bootstrap, "tensors", value_format="float32", tensor_length=8)
    with pytest.raises(Exception, match=r"partition 0, offset 20 holds 12 bytes; "
                                        r"value_format='float32' needs 32 \(8 floats\)"):
        bad.collect()


def test_arrow_ipc_values_expand_to_rows(spark, kafka):
    def ipc(start: int, n: int) -> bytearray:
        batch = pa.record_batch({"x": pa.array(np.arange(start, start + n, dtype=np.float32)),
                                 "y": pa.array(np.arange(start, start + n))})
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        return bytearray(sink.getvalue())

    kafka.create_topic("arrow", partitions=2)
    produce(spark.createDataFrame([(ipc(0, 3),), (ipc(3, 2),), (ipc(5, 4),)], "value binary"),
            kafka.bootstrap, "arrow")
    df = read_kafka(spark, kafka.bootstrap, "arrow", value_format="arrow",
                    schema="x float, y long")
    rows = df.orderBy("y").collect()
    assert [r.y for r in rows] == list(range(9))
    assert [r.x for r in rows] == [float(i) for i in range(9)]


def test_bad_arguments_fail_before_reading(spark, kafka):
    with pytest.raises(ConfigError, match="value_format must be one of"):
        read_kafka(spark, kafka.bootstrap, "t", value_format="avro")
    with pytest.raises(ConfigError, match="needs schema="):
        read_kafka(spark, kafka.bootstrap, "t", value_format="json")
    with pytest.raises(ConfigError, match="schema is not a valid DDL string"):
        read_kafka(spark, kafka.bootstrap, "t", value_format="json", schema="features arra<")
    assert issubclass(SchemaError, ValueError)
