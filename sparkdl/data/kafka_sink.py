"""Scores and dead letters as rows for Spark's Kafka sink, and dead-letter counts.

Both record builders return the same columns, ``key binary, value binary,
headers array<struct<key: string, value: binary>>`` (plus ``topic`` when one is
given), so they can be written by two queries or, unioned, by one. Spark's Kafka
sink is at-least-once: after a failure a micro-batch is written again, so
consumers deduplicate on the source coordinates that every record carries.

Example::

    scores = model.transform(stream.where("_corrupt IS NULL").drop("_corrupt"))
    (to_kafka_records(scores, topic="scores")
     .unionByName(dead_letter_records(stream, "_corrupt", topic="digits-dlq"))
     .writeStream.format("kafka").option("kafka.bootstrap.servers", bootstrap)
     .option("checkpointLocation", "/tmp/kafka.ckpt").start())
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparkdl.errors import SchemaError

#: Name of the observed metrics (``rows``, ``dead_letters``) in a query's progress.
DEAD_LETTER_METRICS = "sparkdl_dead_letters"
#: The score columns ``to_kafka_records`` sends by default, those the DataFrame has.
SCORE_COLUMNS = ("prediction", "probability", "modelVersion")
_SOURCE = ("topic", "partition", "offset")
_HEADERS = "array<struct<key: string, value: binary>>"
#: Header names of a dead-letter record, after Kafka Connect's ``__connect.errors.*``.
DEAD_LETTER_HEADERS = ("sparkdl.errors.reason", "sparkdl.errors.topic",
                       "sparkdl.errors.partition", "sparkdl.errors.offset")


def _require(df: DataFrame, names: Sequence[str], what: str) -> None:
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise SchemaError(f"{what} column(s) {missing} are not in the DataFrame; "
                          f"it has {df.columns}.")


def _json_ready(df: DataFrame, name: str) -> Column:
    # ML vectors would serialise as {"type":..,"values":..}; consumers want a list.
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT

    column = F.col(name)
    return (vector_to_array(column) if isinstance(df.schema[name].dataType, VectorUDT)
            else column).alias(name)


def to_kafka_records(df: DataFrame, columns: Sequence[str] | None = None, *,
                     key_col: str | None = "key", topic: str | None = None) -> DataFrame:
    """Scored rows as Kafka records: the input's key, a JSON object of the scores.

    The JSON value holds ``columns`` and, when the DataFrame still has them, the
    input record's place as ``"source": {"topic", "partition", "offset"}``, which
    identifies a record across the duplicates an at-least-once sink may write.

    Args:
        df: scored rows (batch or streaming), e.g. from ``TorchModel.transform``.
        columns: the columns to put in the JSON value; default: those of
            ``prediction``, ``probability`` and ``modelVersion`` that ``df`` has.
            Vector columns become JSON arrays.
        key_col: the column to send as the record key (cast to binary), or ``None``.
        topic: the topic to write to; ``None`` leaves it to the sink's ``topic`` option.

    Returns:
        ``key, value, headers[, topic]``, ready for ``write``/``writeStream.format("kafka")``.

    Raises:
        SchemaError: if a column named is missing, or none of the defaults is there.

    Example::

        records = to_kafka_records(model.transform(stream), topic="scores")
        records.writeStream.format("kafka").option("kafka.bootstrap.servers", bootstrap) \\
            .option("checkpointLocation", "/tmp/scores-kafka.ckpt").start()
        # value: {"prediction":3.0,"probability":[...],"modelVersion":"TorchModel_..-9f..",
        #         "source":{"topic":"digits","partition":0,"offset":41}}
    """
    if columns is None:
        columns = [c for c in SCORE_COLUMNS if c in df.columns]
        if not columns:
            raise SchemaError(f"None of the score columns {list(SCORE_COLUMNS)} is in the "
                              f"DataFrame (it has {df.columns}); pass columns=[...].")
    columns = list(columns)
    _require(df, columns, "value")
    if key_col is not None:
        _require(df, [key_col], "key_col")
    fields = [_json_ready(df, c) for c in columns]
    if all(c in df.columns for c in _SOURCE):
        fields.append(F.struct(*_SOURCE).alias("source"))
    out = [F.col(key_col).cast("binary").alias("key") if key_col is not None
           else F.lit(None).cast("binary").alias("key"),
           F.to_json(F.struct(*fields)).cast("binary").alias("value"),
           F.lit(None).cast(_HEADERS).alias("headers")]
    if topic is not None:
        out.append(F.lit(topic).alias("topic"))
    return df.select(*out)


def dead_letter_records(df: DataFrame, dead_letter_col: str = "_corrupt", *,
                        topic: str | None = None) -> DataFrame:
    """Malformed records as Kafka records: original key and bytes, the reason in headers.

    Headers (as Kafka Connect's dead-letter queues carry them):
    ``sparkdl.errors.reason``, ``.topic``, ``.partition`` and ``.offset`` of the
    record that could not be decoded, so it can be inspected and replayed.

    Args:
        df: the output of :func:`~sparkdl.data.kafka.read_kafka_stream` or
            :func:`~sparkdl.data.kafka.read_kafka` with ``dead_letter_col`` set.
        dead_letter_col: that column.
        topic: the dead-letter topic; ``None`` leaves it to the sink's ``topic`` option.

    Returns:
        ``key, value, headers[, topic]`` for the malformed rows only.

    Raises:
        SchemaError: if ``df`` lacks ``dead_letter_col`` or the Kafka metadata columns.

    Example::

        dead_letter_records(stream, "_corrupt", topic="digits-dlq").writeStream \\
            .format("kafka").option("kafka.bootstrap.servers", bootstrap) \\
            .option("checkpointLocation", "/tmp/dlq.ckpt").start()
    """
    _require(df, [dead_letter_col, "key", *_SOURCE], "dead-letter")
    dead = F.col(dead_letter_col)
    values = [dead["reason"], F.col("topic"), F.col("partition"), F.col("offset")]
    headers = F.array(*[F.struct(F.lit(name).alias("key"),
                                 v.cast("string").cast("binary").alias("value"))
                        for name, v in zip(DEAD_LETTER_HEADERS, values)])
    out = [F.col("key"), dead["value"].alias("value"), headers.alias("headers")]
    if topic is not None:
        out.append(F.lit(topic).alias("topic"))
    return df.where(dead.isNotNull()).select(*out)


def dead_letter_counts(query) -> list[dict]:
    """Records and dead letters per recent micro-batch of a streaming query.

    Reads the observed metrics that :func:`~sparkdl.data.kafka.read_kafka_stream`
    attaches when ``dead_letter_col`` is set, from ``query.recentProgress`` (the
    last ``spark.sql.streaming.numRecentProgressUpdates`` batches, 100 by default;
    a ``StreamingQueryListener`` sees every one). Batches that read nothing are left out.

    Args:
        query: a ``StreamingQuery`` reading such a stream.

    Returns:
        ``[{"batchId": 0, "rows": 120, "dead_letters": 2}, ...]``, oldest first.

    Example::

        query.processAllAvailable()
        total = sum(b["dead_letters"] for b in dead_letter_counts(query))
    """
    counts = []
    for progress in query.recentProgress:
        metrics = (progress["observedMetrics"] or {}).get(DEAD_LETTER_METRICS)
        if metrics is not None and progress["numInputRows"]:
            counts.append({"batchId": progress["batchId"], "rows": int(metrics["rows"]),
                           "dead_letters": int(metrics["dead_letters"])})
    return counts
