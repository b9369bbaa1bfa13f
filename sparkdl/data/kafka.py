"""Kafka topics as DataFrames: batch reads for ``fit``, streams for ``transform``.

``read_kafka`` reads a topic between two offsets and ``read_kafka_stream`` follows
it as a streaming DataFrame, both with Spark's own Kafka source
(``spark-sql-kafka-0-10``, which :func:`sparkdl.jvm.with_kafka` adds), and both
decode each record's value the same way. Decoding never runs Python per row: JSON
is parsed in the JVM (``from_json``); raw little-endian float32 tensors are
reinterpreted a whole Arrow batch at a time with numpy; Arrow IPC values are read
as the record batches they are (:mod:`sparkdl.data.kafka_decode`). The record's
``key``, ``topic``, ``partition``, ``offset`` and ``timestamp`` are kept as columns.

Malformed records (not JSON matching the schema, a missing ``NOT NULL`` field, a
tensor of the wrong length, a broken Arrow stream, a null value) fail the read
with an error naming their partition and offset, unless ``dead_letter_col`` is
given: then they become rows whose decoded columns are null and whose
``dead_letter_col`` holds ``{reason, value}`` (the original bytes), and a stream
counts them per micro-batch in the query's progress (:func:`dead_letter_counts`).
:func:`to_kafka_records` and :func:`dead_letter_records` turn scores and dead
letters into rows for Spark's Kafka sink.

Example::

    df = read_kafka(spark, "127.0.0.1:9092", "digits", value_format="json",
                    schema="features array<float>, label int")
    TorchEstimator(model=net, numWorkers=2).fit(df)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StructType

from sparkdl.data.kafka_decode import (
    DEAD_LETTER_DDL,
    META_COLUMNS,
    META_DDL,
    DecodeSpec,
    decode_arrow,
    decode_float32,
)
from sparkdl.data.kafka_sink import (
    DEAD_LETTER_METRICS,
    dead_letter_counts,
    dead_letter_records,
    to_kafka_records,
)
from sparkdl.errors import ConfigError

__all__ = ["DEAD_LETTER_METRICS", "META_COLUMNS", "VALUE_FORMATS", "dead_letter_counts",
           "dead_letter_records", "read_kafka", "read_kafka_stream", "to_kafka_records"]

#: Supported ``value_format`` values.
VALUE_FORMATS = ("json", "float32", "arrow")
_SOURCE = "org.apache.spark.sql.kafka010.KafkaSourceProvider"
_CORRUPT = "_sparkdl_corrupt_record"  # from_json's corrupt-record field, never user-visible


@dataclass(frozen=True)
class _Decoding:
    """The value-decoding arguments both readers take, checked before any work starts."""

    value_format: str
    schema: str | StructType | None
    tensor_length: int | None
    dead_letter_col: str | None

    def __post_init__(self) -> None:
        if self.value_format not in VALUE_FORMATS:
            raise ConfigError(f"value_format must be one of {list(VALUE_FORMATS)}. "
                              f"Received: value_format={self.value_format!r}")
        if self.value_format in ("json", "arrow") and self.schema is None:
            raise ConfigError(f"value_format={self.value_format!r} needs schema= (a DDL "
                              "string such as 'features array<float>, label int', or a "
                              "StructType).")
        _check_positive_int("tensor_length", self.tensor_length, "(floats per tensor)")
        if self.dead_letter_col is not None and (
                not isinstance(self.dead_letter_col, str) or not self.dead_letter_col
                or self.dead_letter_col in META_COLUMNS):
            raise ConfigError("dead_letter_col must be a new column name such as '_corrupt' "
                              f"(not one of {list(META_COLUMNS)}), or None to fail on "
                              f"malformed records. Received: dead_letter_col="
                              f"{self.dead_letter_col!r}")

    def fields(self, spark: SparkSession) -> StructType | None:
        fields = _struct(spark, self.schema) if self.schema is not None else None
        names = [f.name for f in fields or []] + ["value"] * (self.value_format == "float32")
        clash = sorted({*META_COLUMNS, self.dead_letter_col} & set(names))
        if clash:
            raise ConfigError(f"schema fields {clash} clash with the columns read_kafka adds "
                              f"({list(META_COLUMNS)}, dead_letter_col); rename them.")
        return fields


def read_kafka(spark: SparkSession, bootstrap: str, topic: str, *, value_format: str = "json",
               schema: str | StructType | None = None, starting_offsets: str = "earliest",
               ending_offsets: str = "latest", tensor_length: int | None = None,
               dead_letter_col: str | None = None, options: dict | None = None) -> DataFrame:
    """Read ``topic`` between two offsets and decode its values.

    Args:
        spark: a session with the Kafka connector on its classpath
            (:func:`sparkdl.jvm.with_kafka`, or ``--packages`` of spark-submit).
        bootstrap: Kafka bootstrap servers, ``host:port[,host:port]``.
        topic: the topic (or comma-separated topics) to read.
        value_format: ``json`` (one JSON object per record, fields per ``schema``),
            ``float32`` (the value is a raw little-endian float32 tensor; column
            ``value`` array<float>), or ``arrow`` (the value is an Arrow IPC stream
            whose record batches have ``schema``; every row becomes a row).
        schema: DDL string or ``StructType`` of the decoded fields (json, arrow).
            A field declared ``NOT NULL`` must be present in every record.
        starting_offsets: Spark's ``startingOffsets`` (``earliest`` or JSON per partition).
        ending_offsets: Spark's ``endingOffsets`` (``latest`` or JSON per partition).
        tensor_length: floats every tensor must hold: the whole value (float32), or
            every top-level array field (json, arrow).
        dead_letter_col: ``None`` (default) fails on a malformed record; a column
            name such as ``"_corrupt"`` keeps malformed records as rows with null
            decoded columns and ``{reason, value}`` in that column (null elsewhere).
        options: more ``kafka.*`` or source options, passed to Spark unchanged.

    Returns:
        A DataFrame with ``key, topic, partition, offset, timestamp``, the decoded
        columns and, if asked, ``dead_letter_col``.

    Raises:
        ConfigError: bad arguments, or the Kafka connector missing from the session.
        SchemaError: when reading (float32, arrow), a record that cannot be decoded
            (which partition and offset, and why); json raises Spark's
            ``USER_RAISED_EXCEPTION`` with the same text.

    Example::

        df = read_kafka(spark, "127.0.0.1:9092", "tensors", value_format="float32",
                        tensor_length=64, dead_letter_col="_corrupt")
        bad = df.where(df._corrupt.isNotNull()).select("_corrupt.reason")
    """
    decoding = _Decoding(value_format, schema, tensor_length, dead_letter_col)
    _require_connector(spark)
    fields = decoding.fields(spark)
    reader = _subscribe(spark.read, bootstrap, topic, starting_offsets,
                        {"endingOffsets": ending_offsets, **(options or {})})
    return _decode(reader.load(), decoding, fields)


def read_kafka_stream(spark: SparkSession, bootstrap: str, topic: str, *,
                      value_format: str = "json", schema: str | StructType | None = None,
                      starting_offsets: str = "earliest", tensor_length: int | None = None,
                      dead_letter_col: str | None = None,
                      max_offsets_per_trigger: int | None = None,
                      options: dict | None = None) -> DataFrame:
    """Follow ``topic`` as a streaming DataFrame, decoded as :func:`read_kafka` does.

    The result goes straight into :meth:`sparkdl.TorchModel.transform` and
    ``writeStream``. With ``dead_letter_col``, malformed records stay in the stream
    as rows (see :func:`read_kafka`); filter them out before scoring, write them
    with :func:`dead_letter_records`, and read their count per micro-batch from
    the query's progress: ``query.lastProgress["observedMetrics"]
    ["sparkdl_dead_letters"]`` holds ``rows`` and ``dead_letters``
    (:func:`dead_letter_counts` lists them for every recent micro-batch).

    Args:
        spark: a session with the Kafka connector on its classpath.
        bootstrap: Kafka bootstrap servers, ``host:port[,host:port]``.
        topic: the topic (or comma-separated topics) to follow.
        value_format: ``json``, ``float32`` or ``arrow``, as for :func:`read_kafka`.
        schema: the decoded fields (json, arrow), as for :func:`read_kafka`.
        starting_offsets: where a new query starts (``earliest``, ``latest`` or JSON
            per partition); a query restarted from its checkpoint resumes there instead.
        tensor_length: floats per tensor, as for :func:`read_kafka`.
        dead_letter_col: ``None`` fails the query on a malformed record (the error
            names its partition and offset); a column name routes them there.
        max_offsets_per_trigger: at most this many records per micro-batch
            (Spark's ``maxOffsetsPerTrigger``); ``None`` takes all that is new.
        options: more ``kafka.*`` or source options, passed to Spark unchanged.

    Returns:
        A streaming DataFrame with the columns :func:`read_kafka` gives.

    Raises:
        ConfigError: bad arguments, or the Kafka connector missing from the session.

    Example::

        stream = read_kafka_stream(spark, "127.0.0.1:9092", "digits",
                                   schema="features array<float>, label long",
                                   dead_letter_col="_corrupt")
        scores = model.transform(stream.where("_corrupt IS NULL").drop("_corrupt"))
        query = (scores.writeStream.format("parquet").option("path", "/tmp/scores")
                 .option("checkpointLocation", "/tmp/scores.ckpt").start())
    """
    decoding = _Decoding(value_format, schema, tensor_length, dead_letter_col)
    _check_positive_int("max_offsets_per_trigger", max_offsets_per_trigger,
                        "(records per micro-batch) or None")
    _require_connector(spark)
    fields = decoding.fields(spark)
    limit = ({"maxOffsetsPerTrigger": str(max_offsets_per_trigger)}
             if max_offsets_per_trigger is not None else {})
    reader = _subscribe(spark.readStream, bootstrap, topic, starting_offsets,
                        {**limit, **(options or {})})
    decoded = _decode(reader.load(), decoding, fields)
    if dead_letter_col is None:
        return decoded
    # Observed metrics ride along with each micro-batch's progress report, so the
    # count needs no extra job and is exact for the batch that was committed.
    return decoded.observe(DEAD_LETTER_METRICS, F.count(F.lit(1)).alias("rows"),
                           F.count(F.col(dead_letter_col)).alias("dead_letters"))


def _decode(raw: DataFrame, decoding: _Decoding, fields: StructType | None) -> DataFrame:
    """The one decoding path of both readers: Kafka's raw rows -> meta + decoded columns."""
    meta = [F.col(c) for c in META_COLUMNS]
    dead = decoding.dead_letter_col
    if decoding.value_format == "json":
        return _decode_json(raw, decoding, fields)
    extra_ddl = f", `{dead}` {DEAD_LETTER_DDL}" if dead else ""
    if decoding.value_format == "float32":
        spec = DecodeSpec("float32", tensor_length=decoding.tensor_length, dead_letter_col=dead)
        return raw.select(*meta, "value").mapInArrow(
            partial(decode_float32, spec), f"{META_DDL}, value array<float>{extra_ddl}")
    from pyspark.sql.pandas.types import to_arrow_schema

    spec = DecodeSpec("arrow", to_arrow_schema(fields), decoding.tensor_length, dead)
    out_ddl = ", ".join([META_DDL] + [f"`{f.name}` {f.dataType.simpleString()}"
                                      for f in fields]) + extra_ddl
    return raw.select(*meta, "value").mapInArrow(partial(decode_arrow, spec), out_ddl)


def _decode_json(raw: DataFrame, decoding: _Decoding, fields: StructType) -> DataFrame:
    # from_json in PERMISSIVE mode fills a corrupt-record field instead of failing,
    # so every check below is a JVM expression: no Python sees a JSON record.
    parse_schema = StructType([f.__class__(f.name, f.dataType, True) for f in fields])
    parse_schema.add(_CORRUPT, "string")
    parsed = F.from_json(F.col("value").cast("string"), parse_schema,
                         {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT})
    rows = raw.select(*META_COLUMNS, "value", parsed.alias("_sparkdl_value"))
    value = F.col("_sparkdl_value")
    problem = (F.when(F.col("value").isNull(),
                      F.lit("has a null value; value_format='json' needs a JSON object"))
               .when(value.isNull() | value[_CORRUPT].isNotNull(),
                     F.lit(f"is not a JSON object matching schema {fields.simpleString()}")))
    for f in fields:
        if not f.nullable:
            problem = problem.when(value[f.name].isNull(),
                                   F.lit(f"lacks field {f.name!r}, declared NOT NULL in schema"))
    if decoding.tensor_length:
        n = decoding.tensor_length
        for f in fields:
            if isinstance(f.dataType, ArrayType):
                size = F.size(value[f.name])
                problem = problem.when(value[f.name].isNotNull() & (size != n), F.format_string(
                    f"has %d values in field {f.name!r}; tensor_length={n}", size))
    where = F.format_string("Kafka record at topic '%s', partition %d, offset %d ",
                            F.col("topic"), F.col("partition"), F.col("offset"))
    # The place is formatted only for bad records: good ones cost one null check.
    reason = F.when(problem.isNotNull(), F.concat(where, problem))
    if decoding.dead_letter_col is None:
        # Fail at the first bad record, with its place: raise_error runs in the JVM.
        checked = rows.where(F.when(problem.isNull(), F.lit(True))
                             .otherwise(F.raise_error(reason).isNull()))
        return checked.select(*META_COLUMNS, *[value[f.name].alias(f.name) for f in fields])
    # Bad records keep no half-decoded fields: all null, the reason beside them.
    decoded = [F.when(problem.isNull(), value[f.name]).alias(f.name) for f in fields]
    dead = F.when(problem.isNotNull(), F.struct(reason.alias("reason"), F.col("value")))
    return rows.select(*META_COLUMNS, *decoded, dead.alias(decoding.dead_letter_col))


def _check_positive_int(name: str, value, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ConfigError(f"{name} must be a positive int {what}. Received: {name}={value!r}")


def _subscribe(reader, bootstrap: str, topic: str, starting_offsets: str, options: dict):
    """A batch or streaming Kafka reader on ``topic`` with Spark's source options."""
    reader = (reader.format("kafka").option("kafka.bootstrap.servers", bootstrap)
              .option("subscribe", topic).option("startingOffsets", starting_offsets))
    for key, value in options.items():
        reader = reader.option(key, value)
    return reader


def _connector_missing(spark: SparkSession) -> bool:
    from sparkdl.session import is_connect

    if is_connect(spark):
        # No JVM to ask: resolving a Kafka relation's schema looks the source up on
        # the server without contacting any broker.
        from pyspark.errors import PySparkException

        try:
            _ = spark.read.format("kafka").option("kafka.bootstrap.servers", "127.0.0.1:1") \
                .option("subscribe", "sparkdl-probe").load().schema
        except PySparkException as exc:
            return exc.getCondition() in ("KAFKA_DATA_SOURCE_NOT_ENABLED", "DATA_SOURCE_NOT_FOUND")
        return False
    jvm = spark._jvm
    try:
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName(_SOURCE, False, loader)
    except Exception:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        return True
    return False


def _require_connector(spark: SparkSession) -> None:
    if _connector_missing(spark):
        raise ConfigError(
            "Spark's Kafka connector is not on this session's classpath. Start the session "
            "with sparkdl.jvm.with_kafka(SparkSession.builder) (spark.jars.packages), or "
            "spark-submit --packages \"$(python -m sparkdl.jvm kafka-packages)\"; in a "
            "source checkout `make kafka-jars` puts the connector in ~/.m2 for "
            "with_kafka(builder, offline=True). A Spark Connect server needs it at launch "
            "(--packages)."
        )


def _struct(spark: SparkSession, schema: str | StructType) -> StructType:
    if isinstance(schema, StructType):
        return schema
    try:
        return spark.createDataFrame([], schema).schema
    except Exception as exc:  # noqa: BLE001 - Spark's parser error, shortened
        raise ConfigError(f"schema is not a valid DDL string: {schema!r} "
                          f"({str(exc).splitlines()[0]})") from None
