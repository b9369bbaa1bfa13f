"""Streaming scoring from a real Kafka topic: sinks, dead letters, restarts and crashes.

The shared session runs with ``spark.task.maxFailures=1``, so a crashed Python
worker fails its task, the job and the streaming query at once (no task retry);
the fault test therefore recovers the way an operator does: it restarts the
query from its checkpoint, and checks that nothing was lost or scored twice.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql import functions as F
from sklearn.datasets import load_digits  # here: importing it sets KMP_* variables

from sparkdl import ConfigError, SchemaError, TorchEstimator, TorchModel
from sparkdl.architecture import weights_to_bytes
from sparkdl.data.kafka import (
    DEAD_LETTER_METRICS,
    dead_letter_counts,
    dead_letter_records,
    read_kafka,
    read_kafka_stream,
    to_kafka_records,
)

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SCHEMA = "features array<float> NOT NULL, label long"
OUT_SCHEMA = ("prediction double, probability array<double>, modelVersion string, "
              "source struct<topic: string, partition: int, offset: long>")


def produce(spark, bootstrap: str, topic: str, rows: list[tuple]) -> None:
    """Write ``(key, value)`` byte pairs to ``topic`` with Spark's Kafka sink, in order."""
    spark.createDataFrame(rows, "key binary, value binary").coalesce(1).write.format("kafka") \
        .option("kafka.bootstrap.servers", bootstrap).option("topic", topic).save()


def digit_records(count: int, start: int = 0) -> list[tuple]:
    data = load_digits()
    return [(f"r{i}".encode(), json.dumps({"features": (data.data[i] / 16).tolist(),
                                           "label": int(data.target[i])}).encode())
            for i in range(start, start + count)]


@pytest.fixture(scope="module")
def model(digits):
    import torch

    train, _ = digits
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    fitted = TorchEstimator(model=net, optimizerParams={"lr": 1e-2}, batchSize=64, epochs=3,
                            numWorkers=2, seed=1, backend="torch").fit(train)
    return fitted.setModelVersionCol("modelVersion")


def sink(query_df, fmt: str, checkpoint: Path, trigger: dict, **options):
    writer = query_df.writeStream.format(fmt).option("checkpointLocation", str(checkpoint))
    for key, value in options.items():
        writer = writer.option(key, value)
    return writer.trigger(**trigger).start()


def drain(*queries, timeout_s: float = 240) -> None:
    for query in queries:
        assert query.awaitTermination(timeout_s), f"{query.name or query.id} did not drain"
        assert query.exception() is None, query.exception()


def scored_by_offset(df) -> dict:
    return {(r.partition, r.offset): r for r in df.collect()}


def assert_same_scores(streamed: dict, batch: dict) -> None:
    assert streamed.keys() == batch.keys()
    for place, row in streamed.items():
        expected = batch[place]
        assert row.prediction == expected.prediction, place
        np.testing.assert_allclose(row.probability.toArray(), expected.probability.toArray(),
                                   rtol=1e-5, atol=1e-7)


# --- malformed records --------------------------------------------------------------


def test_malformed_json_goes_to_dead_letters_and_is_counted(spark, kafka, model, tmp_path):
    create = kafka.create_topic
    create("dl-in", 2)
    create("dl-out", 1)
    create("dl-dlq", 1)
    good = digit_records(150)
    bad = [(b"bad-json", b"{not json"), (b"no-features", b'{"label": 3}'),
           (b"short", json.dumps({"features": [0.5] * 63, "label": 1}).encode()),
           (b"label-type", json.dumps({"features": [0.5] * 64, "label": "x"}).encode())]
    produce(spark, kafka.bootstrap, "dl-in", good[:70] + bad[:2])
    produce(spark, kafka.bootstrap, "dl-in", good[70:] + bad[2:])

    stream = read_kafka_stream(spark, kafka.bootstrap, "dl-in", schema=SCHEMA, tensor_length=64,
                               dead_letter_col="_corrupt", max_offsets_per_trigger=60)
    scores = model.transform(stream.where(F.col("_corrupt").isNull()).drop("_corrupt"))
    once = {"availableNow": True}
    to_parquet = sink(scores.drop("features"), "parquet", tmp_path / "p.ckpt", once,
                      path=str(tmp_path / "scores"))
    to_kafka = sink(to_kafka_records(scores, topic="dl-out")
                    .unionByName(dead_letter_records(stream, "_corrupt", topic="dl-dlq")),
                    "kafka", tmp_path / "k.ckpt", once,
                    **{"kafka.bootstrap.servers": kafka.bootstrap})
    drain(to_parquet, to_kafka)

    # Counted per micro-batch in each query's progress, all of them found.
    for query in (to_parquet, to_kafka):
        counts = dead_letter_counts(query)
        assert len(counts) >= 3, counts  # 154 records, at most 60 per micro-batch
        assert sum(c["dead_letters"] for c in counts) == len(bad)
        assert sum(c["rows"] for c in counts) == len(good) + len(bad)
    assert to_parquet.lastProgress["observedMetrics"][DEAD_LETTER_METRICS] is not None

    # Good records scored once each, by the model named on each row; bad ones kept out.
    streamed = spark.read.parquet(str(tmp_path / "scores"))
    assert streamed.count() == len(good)
    assert {r.key for r in streamed.select("key").collect()} == {k for k, _ in good}
    assert {r.modelVersion for r in streamed.select("modelVersion").distinct().collect()} \
        == {model.version}

    # Dead letters: original key and bytes, the reason and the place in headers.
    raw = spark.read.format("kafka").option("kafka.bootstrap.servers", kafka.bootstrap) \
        .option("subscribe", "dl-dlq").option("includeHeaders", "true").load().collect()
    assert len(raw) == len(bad)
    letters = {bytes(r.key): (bytes(r.value), {h.key: bytes(h.value).decode()
                                               for h in r.headers}) for r in raw}
    assert {k: v for k, (v, _) in letters.items()} == dict(bad)
    reasons = {k: h["sparkdl.errors.reason"] for k, (_, h) in letters.items()}
    assert "is not a JSON object matching schema" in reasons[b"bad-json"]
    assert "lacks field 'features', declared NOT NULL" in reasons[b"no-features"]
    assert "has 63 values in field 'features'; tensor_length=64" in reasons[b"short"]
    assert "is not a JSON object matching schema" in reasons[b"label-type"]
    for key, (_, headers) in letters.items():
        assert headers["sparkdl.errors.topic"] == "dl-in"
        assert f"partition {headers['sparkdl.errors.partition']}, offset " \
               f"{headers['sparkdl.errors.offset']}" in reasons[key]

    out = read_kafka(spark, kafka.bootstrap, "dl-out", schema=OUT_SCHEMA).collect()
    assert {bytes(r.key) for r in out} == {k for k, _ in good}
    assert {r.modelVersion for r in out} == {model.version}


def _ipc(table: dict) -> bytes:
    batch = pa.record_batch(table)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def test_float32_and_arrow_dead_letters_share_the_decoding(spark, kafka):
    kafka.create_topic("dl-f32", 1)
    tensors = [np.arange(i, i + 4, dtype="<f4").tobytes() for i in range(5)]
    produce(spark, kafka.bootstrap, "dl-f32",
            [(b"a", tensors[0]), (b"short", b"\x00" * 12), (b"b", tensors[1]),
             (b"odd", b"\x00" * 7), (b"c", tensors[2])])
    df = read_kafka(spark, kafka.bootstrap, "dl-f32", value_format="float32", tensor_length=4,
                    dead_letter_col="_corrupt")
    rows = {bytes(r.key): r for r in df.collect()}
    assert rows[b"a"].value == [0.0, 1.0, 2.0, 3.0] and rows[b"c"].value == [2.0, 3.0, 4.0, 5.0]
    assert rows[b"a"]._corrupt is None
    assert rows[b"short"].value is None
    assert rows[b"short"]._corrupt.reason == (
        "Kafka record at topic 'dl-f32', partition 0, offset 1 holds 12 bytes; "
        "value_format='float32' needs 16 (4 floats)")
    assert bytes(rows[b"odd"]._corrupt.value) == b"\x00" * 7

    kafka.create_topic("dl-arrow", 1)
    produce(spark, kafka.bootstrap, "dl-arrow", [
        (b"ok", _ipc({"x": pa.array([1.0, 2.0], pa.float32()), "y": pa.array([1, 2])})),
        (b"garbage", b"not arrow"),
        (b"no-y", _ipc({"x": pa.array([3.0], pa.float32())})),
        (b"ok2", _ipc({"x": pa.array([4.0], pa.float32()), "y": pa.array([4], pa.int32())})),
    ])
    df = read_kafka(spark, kafka.bootstrap, "dl-arrow", value_format="arrow",
                    schema="x float, y long", dead_letter_col="_corrupt")
    rows = df.orderBy("offset", "y").collect()
    assert [(bytes(r.key), r.y) for r in rows] == [
        (b"ok", 1), (b"ok", 2), (b"garbage", None), (b"no-y", None), (b"ok2", 4)]
    assert "offset 1 is not an Arrow IPC stream" in rows[2]._corrupt.reason
    assert "offset 2 is not an Arrow IPC stream with columns ['x', 'y']" \
        in rows[3]._corrupt.reason
    assert [r._corrupt is None for r in rows] == [True, True, False, False, True]

    # Without a dead-letter column the read fails and names the record.
    with pytest.raises(Exception, match=r"partition 0, offset 1 is not an Arrow IPC stream"):
        read_kafka(spark, kafka.bootstrap, "dl-arrow", value_format="arrow",
                   schema="x float, y long").collect()


def test_without_dead_letters_a_malformed_record_fails_loudly(spark, kafka, tmp_path):
    kafka.create_topic("strict", 1)
    produce(spark, kafka.bootstrap, "strict", digit_records(3))
    produce(spark, kafka.bootstrap, "strict", [(b"x", b"[1, 2]")])  # offset 3
    with pytest.raises(Exception, match=r"Kafka record at topic 'strict', partition 0, "
                                        r"offset 3 is not a JSON object matching schema"):
        read_kafka(spark, kafka.bootstrap, "strict", schema=SCHEMA).collect()

    stream = read_kafka_stream(spark, kafka.bootstrap, "strict", schema=SCHEMA)
    query = sink(stream, "parquet", tmp_path / "ckpt", {"availableNow": True},
                 path=str(tmp_path / "out"))
    with pytest.raises(Exception, match=r"partition 0, offset 3 is not a JSON object"):
        query.awaitTermination(120)
    assert not query.isActive


def test_bad_arguments_fail_before_reading(spark, kafka):
    with pytest.raises(ConfigError, match="dead_letter_col must be a new column name"):
        read_kafka_stream(spark, kafka.bootstrap, "t", schema=SCHEMA, dead_letter_col="offset")
    with pytest.raises(ConfigError, match="tensor_length must be a positive int"):
        read_kafka_stream(spark, kafka.bootstrap, "t", schema=SCHEMA, tensor_length=0)
    with pytest.raises(ConfigError, match="max_offsets_per_trigger must be a positive int"):
        read_kafka_stream(spark, kafka.bootstrap, "t", schema=SCHEMA,
                          max_offsets_per_trigger=-5)
    with pytest.raises(ConfigError, match=r"schema fields \['offset'\] clash"):
        read_kafka_stream(spark, kafka.bootstrap, "t", schema="offset long")
    plain = spark.createDataFrame([(1.0,)], "score double")
    with pytest.raises(SchemaError, match="None of the score columns"):
        to_kafka_records(plain)
    with pytest.raises(SchemaError, match=r"value column\(s\) \['prob'\] are not in"):
        to_kafka_records(plain, ["prob"])
    with pytest.raises(SchemaError, match=r"dead-letter column\(s\) \['_corrupt', 'key'"):
        dead_letter_records(plain)


# --- faults: stop and restart, a crashed Python worker ------------------------------


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line), from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        table[int(entry)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline.decode())
    return table


def python_workers(spark) -> list[int]:
    """The Python workers forked by ``pyspark.daemon`` under this session's executors.

    local-cluster: driver JVM -> executor JVMs -> ``pyspark.daemon`` -> one forked
    worker per running (or idle, reusable) Python task.
    """
    driver = spark._jvm.java.lang.ProcessHandle.current().pid()
    table = _process_table()
    below, frontier = set(), {driver}
    while frontier:
        frontier = {pid for pid, (parent, _) in table.items() if parent in frontier} - below
        below |= frontier
    return [pid for pid in below
            if "pyspark.daemon" in table[pid][1] and "pyspark.daemon" in
            table.get(table[pid][0], (0, ""))[1]]


def test_restart_and_worker_crash_score_every_record_exactly_once(spark, kafka, model,
                                                                 tmp_path):
    n = 480
    kafka.create_topic("fault-in", 3)
    kafka.create_topic("fault-out", 1)
    inputs = digit_records(n)
    produce(spark, kafka.bootstrap, "fault-in", inputs)
    scores_path = str(tmp_path / "scores")

    def start(trigger: dict):
        stream = read_kafka_stream(spark, kafka.bootstrap, "fault-in", schema=SCHEMA,
                                   max_offsets_per_trigger=40)
        scores = model.transform(stream).drop("features")
        return (sink(scores, "parquet", tmp_path / "p.ckpt", trigger, path=scores_path),
                sink(to_kafka_records(scores, topic="fault-out"), "kafka",
                     tmp_path / "k.ckpt", trigger, **{"kafka.bootstrap.servers": kafka.bootstrap}))

    def committed() -> int:
        return spark.read.parquet(scores_path).count()

    # 1. Stop both queries mid-stream.
    queries = start({"processingTime": "500 milliseconds"})
    deadline = time.monotonic() + 120
    while sum(1 for p in queries[0].recentProgress if p["numInputRows"]) < 2:
        assert time.monotonic() < deadline, "no micro-batch within 120 s"
        time.sleep(0.2)
    for query in queries:
        query.stop()
    after_stop = committed()
    assert 0 < after_stop < n

    # 2. Restart from the checkpoints, then SIGKILL the executors' Python workers until
    # a running task dies with its worker (idle ones are just replaced); with
    # maxFailures=1 that fails the query: loud, not silent.
    queries = start({"processingTime": "500 milliseconds"})
    deadline, killed = time.monotonic() + 120, 0
    while all(q.isActive for q in queries):
        assert time.monotonic() < deadline, "no query failed after killing Python workers"
        for pid in python_workers(spark):
            os.kill(pid, signal.SIGKILL)
            killed += 1
        time.sleep(0.3)
    failed = [q for q in queries if not q.isActive]
    for query in queries:
        if query.isActive:
            query.stop()
    assert killed and failed
    assert any("Python worker exited unexpectedly" in str(q.exception()) or
               "crashed" in str(q.exception()) for q in failed), \
        [str(q.exception())[:500] for q in failed]
    assert committed() < n

    # 3. Restart once more and drain.
    drain(*start({"availableNow": True}))

    streamed = spark.read.parquet(scores_path)
    places = streamed.select("partition", "offset")
    assert streamed.count() == n and places.distinct().count() == n  # no duplicates
    source = read_kafka(spark, kafka.bootstrap, "fault-in", schema=SCHEMA)
    assert places.subtract(source.select("partition", "offset")).count() == 0
    assert source.select("partition", "offset").subtract(places).count() == 0  # no gaps
    assert {r.modelVersion for r in streamed.select("modelVersion").distinct().collect()} \
        == {model.version}
    assert_same_scores(scored_by_offset(streamed),
                       scored_by_offset(model.transform(source)))

    # Kafka sink: at least once, key kept, the source place in the value.
    out = read_kafka(spark, kafka.bootstrap, "fault-out", schema=OUT_SCHEMA).collect()
    by_source = {(r.source.partition, r.source.offset): bytes(r.key) for r in out}
    keys = {(r.partition, r.offset): bytes(r.key) for r in source.collect()}
    assert len(out) >= n and by_source == keys


def test_model_version_survives_save_and_changes_with_the_weights(spark, model, tmp_path):
    import torch

    df = spark.createDataFrame([([0.5] * 64,)], "features array<float>")
    model.save(str(tmp_path / "m"))
    loaded = TorchModel.load(str(tmp_path / "m"))
    assert loaded.version == model.version and loaded.getModelVersionCol() == "modelVersion"
    assert loaded.transform(df).first().modelVersion == model.version

    net = model.getModel()
    with torch.no_grad():
        net[0].bias += 0.01  # one more step of training, say
    retrained = TorchModel(model._architecture, weights_to_bytes(net))
    retrained._resetUid(model.uid)
    retrained._set(**{p.name: v for p, v in model.extractParamMap().items()})
    assert retrained.uid == model.uid and retrained.version != model.version
    assert retrained.transform(df).first().modelVersion == retrained.version
