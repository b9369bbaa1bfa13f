"""Worker-side decoding of Kafka record values: raw float32 tensors and Arrow IPC streams.

These run inside ``mapInArrow`` for :func:`sparkdl.data.kafka.read_kafka` and
:func:`sparkdl.data.kafka.read_kafka_stream` alike (JSON is parsed in the JVM and
never reaches them). Each is a pure function of a frozen :class:`DecodeSpec`.

A record that cannot be decoded either raises :class:`~sparkdl.errors.SchemaError`
naming its topic, partition and offset, or, when ``DecodeSpec.dead_letter_col`` is
set, becomes a row whose decoded columns are null and whose dead-letter column
holds ``{reason, value}``: why, and the record's original bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sparkdl.errors import SchemaError

#: Record metadata kept next to the decoded value.
META_COLUMNS = ("key", "topic", "partition", "offset", "timestamp")
META_DDL = "key binary, topic string, partition int, offset long, timestamp timestamp"
#: Spark type of the dead-letter column (null for records that decoded).
DEAD_LETTER_DDL = "struct<reason: string, value: binary>"
DEAD_LETTER_TYPE = pa.struct([("reason", pa.string()), ("value", pa.binary())])


@dataclass(frozen=True)
class DecodeSpec:
    """What a decoding task needs.

    Attributes:
        value_format: ``float32`` or ``arrow``.
        schema: Arrow schema of the decoded columns (``arrow``); ``None`` for float32.
        tensor_length: floats per tensor: the whole value (float32) or every
            top-level list column (arrow); ``None`` to accept any length.
        dead_letter_col: the column bad records go to; ``None`` to raise instead.
    """

    value_format: str
    schema: pa.Schema | None = None
    tensor_length: int | None = None
    dead_letter_col: str | None = None


def where(batch: pa.RecordBatch, row: int) -> str:
    """``topic 't', partition 0, offset 7``: a record's place, for messages."""
    return (f"topic {batch.column('topic')[row].as_py()!r}, partition "
            f"{batch.column('partition')[row].as_py()}, offset "
            f"{batch.column('offset')[row].as_py()}")


def _fail(reason: str, count: int) -> SchemaError:
    return SchemaError(f"{reason}. {count} record(s) in this batch are malformed; pass "
                       "dead_letter_col='_corrupt' to route malformed records to that column "
                       "instead of failing.")


def _dead_letters(reasons: dict[int, str], values: pa.Array) -> pa.Array:
    """The dead-letter column of a batch: ``{reason, value}`` at the bad rows, else null."""
    n = len(values)
    if not reasons:
        return pa.nulls(n, DEAD_LETTER_TYPE)
    bad = np.zeros(n, dtype=bool)
    bad[list(reasons)] = True
    # Python per row only in the rare batches that hold a bad record.
    reason = pa.array([reasons.get(i) for i in range(n)], pa.string())
    raw = pc.if_else(pa.array(bad), values.cast(pa.binary()), pa.scalar(None, pa.binary()))
    return pa.StructArray.from_arrays([reason, raw], fields=list(DEAD_LETTER_TYPE),
                                      mask=pa.array(~bad))


def decode_float32(spec: DecodeSpec, batches: Iterator[pa.RecordBatch]
                   ) -> Iterator[pa.RecordBatch]:
    """Reinterpret each binary ``value`` as little-endian float32s, a batch at a time.

    Example:
        >>> values = pa.array([np.float32([1, 2]).tobytes(), b"bad"])
        >>> meta = {"key": pa.array([None, None], pa.binary()), "topic": ["t", "t"],
        ...         "partition": pa.array([0, 0], pa.int32()), "offset": [0, 1],
        ...         "timestamp": pa.array([0, 0], pa.timestamp("us"))}
        >>> batch = pa.record_batch({**meta, "value": values})
        >>> spec = DecodeSpec("float32", dead_letter_col="_corrupt")
        >>> out = next(decode_float32(spec, iter([batch])))
        >>> out.column("value").to_pylist()
        [[1.0, 2.0], None]
        >>> print(out.column("_corrupt")[1]["reason"].as_py().replace("; ", ";\\n"))
        Kafka record at topic 't', partition 0, offset 1 holds 3 bytes;
        value_format='float32' needs a multiple of 4
    """
    length = spec.tensor_length
    wanted = f"{4 * length} ({length} floats)" if length else "a multiple of 4"
    for batch in batches:
        values = batch.column("value")
        if pa.types.is_large_binary(values.type):
            values = values.cast(pa.binary())
        offsets = np.frombuffer(values.buffers()[1], np.int32)[
            values.offset:values.offset + len(values) + 1]
        lengths = np.diff(offsets)
        null = values.is_null().to_numpy(zero_copy_only=False)
        bad = null | (lengths % 4 != 0) | ((lengths != 4 * length) if length else False)
        reasons = {
            int(row): f"Kafka record at {where(batch, int(row))} " + (
                "has a null value; value_format='float32' needs the tensor's bytes"
                if null[row] else
                f"holds {lengths[row]} bytes; value_format='float32' needs {wanted}")
            for row in np.flatnonzero(bad)[:None if spec.dead_letter_col else 1]}
        if reasons and not spec.dead_letter_col:
            raise _fail(next(iter(reasons.values())), int(bad.sum()))
        data = np.frombuffer(values.buffers()[2], np.uint8)[offsets[0]:offsets[-1]] \
            if values.buffers()[2] is not None else np.zeros(0, np.uint8)
        if reasons:  # keep only the good rows' bytes; bad rows become empty, then null
            data = data[np.repeat(~bad, lengths)]
            lengths = np.where(bad, 0, lengths)
        floats = pa.array(data.view("<f4").astype(np.float32, copy=False))
        tensor_offsets = np.concatenate([[0], np.cumsum(lengths // 4)]).astype(np.int32)
        tensors = pa.ListArray.from_arrays(pa.array(tensor_offsets), floats,
                                           mask=pa.array(bad) if reasons else None)
        columns = [batch.column(c) for c in META_COLUMNS] + [tensors]
        names = [*META_COLUMNS, "value"]
        if spec.dead_letter_col:
            columns.append(_dead_letters(reasons, values))
            names.append(spec.dead_letter_col)
        yield pa.RecordBatch.from_arrays(columns, names=names)


def _read_arrow(spec: DecodeSpec, value: pa.Scalar) -> pa.Table | str:
    """One record's rows in ``spec.schema``, or why they cannot be had."""
    if not value.is_valid:
        return "has a null value; value_format='arrow' needs an Arrow IPC stream"
    names = spec.schema.names
    try:
        table = pa.ipc.open_stream(value.as_buffer()).read_all()
        table = table.select(names).cast(spec.schema)
    except (pa.ArrowException, KeyError, ValueError, TypeError) as exc:
        return (f"is not an Arrow IPC stream with columns {names} castable to "
                f"{spec.schema.types}: {exc}")
    if spec.tensor_length:
        for name, column in zip(names, table.columns):
            if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
                sizes = pc.list_value_length(column).to_numpy(zero_copy_only=False)
                if (sizes != spec.tensor_length).any():
                    found = sorted(set(sizes.tolist()) - {spec.tensor_length})[:3]
                    return (f"has {found} values in column {name!r}; "
                            f"tensor_length={spec.tensor_length}")
    return table


def decode_arrow(spec: DecodeSpec, batches: Iterator[pa.RecordBatch]
                 ) -> Iterator[pa.RecordBatch]:
    """Expand each value (an Arrow IPC stream) into its rows, record metadata repeated."""
    names = [*META_COLUMNS, *spec.schema.names]
    if spec.dead_letter_col:
        names.append(spec.dead_letter_col)
    for batch in batches:
        values = batch.column("value")
        for row in range(len(batch)):
            table = _read_arrow(spec, values[row])
            take = pa.array([row], pa.int64())
            if isinstance(table, str):
                reason = f"Kafka record at {where(batch, row)} {table}"
                if not spec.dead_letter_col:
                    raise _fail(reason, 1)
                yield pa.RecordBatch.from_arrays(
                    [batch.column(c).take(take) for c in META_COLUMNS]
                    + [pa.nulls(1, f.type) for f in spec.schema]
                    + [_dead_letters({0: reason}, values.take(take))], names=names)
                continue
            if table.num_rows == 0:
                continue
            take = pa.array(np.full(table.num_rows, row, np.int64))
            meta = [batch.column(c).take(take) for c in META_COLUMNS]
            extra = [pa.nulls(table.num_rows, DEAD_LETTER_TYPE)] if spec.dead_letter_col else []
            for chunk in table.combine_chunks().to_batches():
                yield pa.RecordBatch.from_arrays(meta + list(chunk.columns) + extra, names=names)
