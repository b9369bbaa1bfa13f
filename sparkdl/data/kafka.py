"""Kafka topics as DataFrames ready for ``fit``: JSON records, raw tensors, Arrow IPC.

``read_kafka`` reads a topic with Spark's own Kafka source (``spark-sql-kafka-0-10``,
which :func:`sparkdl.jvm.kafka_jars` locates) between two offsets and decodes each
record's value. Decoding never runs Python per row: JSON is parsed in the JVM
(``from_json``); raw little-endian float32 tensors are reinterpreted a whole Arrow
batch at a time with numpy; Arrow IPC values are read as the record batches they
are. The record's ``key``, ``topic``, ``partition``, ``offset`` and ``timestamp``
are kept as columns.

Example::

    df = read_kafka(spark, "127.0.0.1:9092", "digits", value_format="json",
                    schema="features array<float>, label int")
    TorchEstimator(model=net, numWorkers=2).fit(df)
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from sparkdl.errors import ConfigError, SchemaError

#: Supported ``value_format`` values.
VALUE_FORMATS = ("json", "float32", "arrow")
#: Record metadata kept next to the decoded value.
META_COLUMNS = ("key", "topic", "partition", "offset", "timestamp")
_META_DDL = "key binary, topic string, partition int, offset long, timestamp timestamp"
_SOURCE = "org.apache.spark.sql.kafka010.KafkaSourceProvider"


def read_kafka(spark: SparkSession, bootstrap: str, topic: str, *, value_format: str = "json",
               schema: str | StructType | None = None, starting_offsets: str = "earliest",
               ending_offsets: str = "latest", tensor_length: int | None = None,
               options: dict | None = None) -> DataFrame:
    """Read ``topic`` between two offsets and decode its values.

    Args:
        spark: a session with the Kafka connector on its classpath
            (``spark.jars`` = :func:`sparkdl.jvm.kafka_jars`).
        bootstrap: Kafka bootstrap servers, ``host:port[,host:port]``.
        topic: the topic (or comma-separated topics) to read.
        value_format: ``json`` (one JSON object per record, fields per ``schema``),
            ``float32`` (the value is a raw little-endian float32 tensor; column
            ``value`` array<float>), or ``arrow`` (the value is an Arrow IPC stream
            whose record batches have ``schema``; every row becomes a row).
        schema: DDL string or ``StructType`` of the decoded fields (json, arrow).
        starting_offsets: Spark's ``startingOffsets`` (``earliest`` or JSON per partition).
        ending_offsets: Spark's ``endingOffsets`` (``latest`` or JSON per partition).
        tensor_length: for ``float32``, the number of floats every record must hold.
        options: more ``kafka.*`` or source options, passed to Spark unchanged.

    Returns:
        A DataFrame with ``key, topic, partition, offset, timestamp`` and the
        decoded columns.

    Raises:
        ConfigError: bad arguments, or the Kafka connector missing from the session.
        SchemaError: when reading, a record that cannot be decoded (which
            partition and offset, and why).
    """
    if value_format not in VALUE_FORMATS:
        raise ConfigError(f"value_format must be one of {list(VALUE_FORMATS)}. "
                          f"Received: value_format={value_format!r}")
    if value_format in ("json", "arrow") and schema is None:
        raise ConfigError(f"value_format={value_format!r} needs schema= (a DDL string such as "
                          "'features array<float>, label int', or a StructType).")
    if tensor_length is not None and (value_format != "float32" or tensor_length < 1):
        raise ConfigError("tensor_length applies to value_format='float32' and must be >= 1. "
                          f"Received: tensor_length={tensor_length!r}")
    _require_connector(spark)
    fields = _struct(spark, schema) if schema is not None else None
    reader = (spark.read.format("kafka").option("kafka.bootstrap.servers", bootstrap)
              .option("subscribe", topic).option("startingOffsets", starting_offsets)
              .option("endingOffsets", ending_offsets))
    for key, value in (options or {}).items():
        reader = reader.option(key, value)
    raw = reader.load()
    meta = [F.col(c) for c in META_COLUMNS]
    if value_format == "json":
        parsed = F.from_json(F.col("value").cast("string"), fields)
        return raw.select(*meta, parsed.alias("_sparkdl_value")).select(
            *meta, *[F.col(f"_sparkdl_value.{f.name}").alias(f.name) for f in fields])
    if value_format == "float32":
        return raw.select(*meta, "value").mapInArrow(
            partial(decode_float32, tensor_length=tensor_length),
            f"{_META_DDL}, value array<float>")
    out_ddl = ", ".join([_META_DDL] + [f"`{f.name}` {f.dataType.simpleString()}"
                                       for f in fields])
    return raw.select(*meta, "value").mapInArrow(
        partial(decode_arrow, names=[f.name for f in fields]), out_ddl)


def _require_connector(spark: SparkSession) -> None:
    jvm = spark._jvm
    try:
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName(_SOURCE, False, loader)
    except Exception as exc:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        raise ConfigError(
            "Spark's Kafka connector is not on this session's classpath. Start the session "
            "with spark.jars set to sparkdl.jvm.kafka_jars() (built by `make kafka-jars`), "
            "e.g. SparkSession.builder.config('spark.jars', ','.join(kafka_jars()))."
        ) from exc


def _struct(spark: SparkSession, schema: str | StructType) -> StructType:
    if isinstance(schema, StructType):
        return schema
    try:
        return spark.createDataFrame([], schema).schema
    except Exception as exc:  # noqa: BLE001 - Spark's parser error, shortened
        raise ConfigError(f"schema is not a valid DDL string: {schema!r} "
                          f"({str(exc).splitlines()[0]})") from None


def _where(batch: pa.RecordBatch, row: int) -> str:
    return (f"topic {batch.column('topic')[row].as_py()!r}, partition "
            f"{batch.column('partition')[row].as_py()}, offset "
            f"{batch.column('offset')[row].as_py()}")


def decode_float32(batches: Iterator[pa.RecordBatch], tensor_length: int | None = None
                   ) -> Iterator[pa.RecordBatch]:
    """Reinterpret each binary ``value`` as little-endian float32s, a batch at a time.

    Example:
        >>> values = pa.array([np.float32([1, 2]).tobytes(), np.float32([3]).tobytes()])
        >>> meta = {"key": pa.array([None, None], pa.binary()), "topic": ["t", "t"],
        ...         "partition": pa.array([0, 0], pa.int32()), "offset": [0, 1],
        ...         "timestamp": pa.array([0, 0], pa.timestamp("us"))}
        >>> batch = pa.record_batch({**meta, "value": values})
        >>> next(decode_float32(iter([batch]))).column("value").to_pylist()
        [[1.0, 2.0], [3.0]]
    """
    for batch in batches:
        values = batch.column("value")
        if values.null_count:
            row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise SchemaError(f"Kafka record at {_where(batch, row)} has a null value; "
                              "value_format='float32' needs the tensor's bytes.")
        if pa.types.is_large_binary(values.type):
            values = values.cast(pa.binary())
        offsets = np.frombuffer(values.buffers()[1], np.int32)[
            values.offset:values.offset + len(values) + 1]
        lengths = np.diff(offsets)
        bad = np.flatnonzero((lengths % 4 != 0) | (
            (lengths != 4 * tensor_length) if tensor_length else False))
        if len(bad):
            row = int(bad[0])
            wanted = (f"{4 * tensor_length} ({tensor_length} floats)" if tensor_length
                      else "a multiple of 4")
            raise SchemaError(f"Kafka record at {_where(batch, row)} holds {lengths[row]} bytes; "
                              f"value_format='float32' needs {wanted}. {len(bad)} record(s) "
                              "in this batch are malformed.")
        data = np.frombuffer(values.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
        floats = pa.array(data.view("<f4").astype(np.float32, copy=False))
        tensors = pa.ListArray.from_arrays(pa.array((offsets - offsets[0]) // 4, pa.int32()),
                                           floats)
        yield pa.RecordBatch.from_arrays(
            [batch.column(c) for c in META_COLUMNS] + [tensors],
            names=[*META_COLUMNS, "value"])


def decode_arrow(batches: Iterator[pa.RecordBatch], names: list[str]
                 ) -> Iterator[pa.RecordBatch]:
    """Expand each value (an Arrow IPC stream) into its rows, record metadata repeated."""
    for batch in batches:
        values = batch.column("value")
        for row in range(len(batch)):
            try:
                table = pa.ipc.open_stream(values[row].as_buffer()).read_all()
                table = table.select(names)
            except (pa.ArrowInvalid, KeyError, AttributeError) as exc:
                raise SchemaError(f"Kafka record at {_where(batch, row)} is not an Arrow IPC "
                                  f"stream with columns {names}: {exc}") from None
            if table.num_rows == 0:
                continue
            take = pa.array(np.full(table.num_rows, row, np.int64))
            meta = [batch.column(c).take(take) for c in META_COLUMNS]
            for chunk in table.combine_chunks().to_batches():
                yield pa.RecordBatch.from_arrays(meta + list(chunk.columns),
                                                 names=[*META_COLUMNS, *names])
