"""Worker-side decoding of Kafka record values: raw float32 tensors and Arrow IPC streams.

These run inside ``mapInArrow`` for :func:`sparkdl.data.kafka.read_kafka` and
:func:`sparkdl.data.kafka.read_kafka_stream` alike (JSON is parsed in the JVM and
never reaches them). Each is a pure function of a frozen :class:`DecodeSpec`.

A record that cannot be decoded either raises :class:`~sparkdl.errors.SchemaError`
naming its topic, partition and offset, or, when ``DecodeSpec.dead_letter_col`` is
set, becomes a row whose decoded columns are null and whose dead-letter column
holds ``{reason, value}``: why, and the record's original bytes.

Record values come from whoever can write to the topic, so an Arrow IPC value is
untrusted input: it is size-capped before it is parsed (:data:`MAX_RECORD_BYTES`,
:data:`MAX_DECODED_BYTES`) and every batch read from it is fully validated
(``RecordBatch.validate(full=True)``) before anything looks at its values. A value
that fails either check is a malformed record like any other, not a crashed worker.
"""

from __future__ import annotations

import struct
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

#: Largest Arrow IPC record value decoded (64 MiB). Kafka's own default limit
#: (``message.max.bytes``) is about 1 MiB, so a legitimate record is far below this;
#: a larger one is almost surely a mistake or an attack, and every record is held in
#: the worker's memory while it is decoded.
MAX_RECORD_BYTES = 64 << 20
#: Largest decoded size of one Arrow IPC record (256 MiB): the uncompressed size its
#: batches declare plus what casting its rows to the schema allocates. Compressed
#: (LZ4/ZSTD) IPC buffers can expand a thousandfold, so a small record could
#: otherwise ask a worker for gigabytes and be retried, and kill it, on every attempt.
MAX_DECODED_BYTES = 256 << 20


@dataclass(frozen=True)
class DecodeSpec:
    """What a decoding task needs.

    Attributes:
        value_format: ``float32`` or ``arrow``.
        schema: Arrow schema of the decoded columns (``arrow``); ``None`` for float32.
        tensor_length: floats per tensor: the whole value (float32) or every
            top-level list column (arrow); ``None`` to accept any length.
        dead_letter_col: the column bad records go to; ``None`` to raise instead.
        max_record_bytes: an ``arrow`` value longer than this is malformed.
        max_decoded_bytes: an ``arrow`` value whose batches decode (decompress and
            cast) to more than this is malformed; checked before decompressing.
    """

    value_format: str
    schema: pa.Schema | None = None
    tensor_length: int | None = None
    dead_letter_col: str | None = None
    max_record_bytes: int = MAX_RECORD_BYTES
    max_decoded_bytes: int = MAX_DECODED_BYTES


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


class _Malformed(ValueError):
    """An IPC stream whose metadata cannot be walked."""


def _table(meta: memoryview, pos: int) -> tuple[int, memoryview]:
    """A flatbuffer table at ``pos``: ``(pos, vtable)``, bounds-checked."""
    if not 0 <= pos <= len(meta) - 4:
        raise _Malformed("table out of bounds")
    vt = pos - struct.unpack_from("<i", meta, pos)[0]
    if not 0 <= vt <= len(meta) - 4:
        raise _Malformed("vtable out of bounds")
    size = struct.unpack_from("<H", meta, vt)[0]
    if size < 4 or vt + size > len(meta):
        raise _Malformed("vtable out of bounds")
    return pos, meta[vt:vt + size]


def _field(meta: memoryview, table: tuple[int, memoryview], index: int) -> int | None:
    """Where field ``index`` of ``table`` lies, or ``None`` when absent."""
    pos, vtable = table
    at = 4 + 2 * index
    if at + 2 > len(vtable):
        return None
    offset = struct.unpack_from("<H", vtable, at)[0]
    return pos + offset if offset else None


def _ref(meta: memoryview, at: int) -> int:
    """Follow the uoffset stored at ``at``."""
    if not 0 <= at <= len(meta) - 4:
        raise _Malformed("offset out of bounds")
    return at + struct.unpack_from("<I", meta, at)[0]


def _batch_sizes(meta: memoryview, batch: tuple[int, memoryview], body: pa.Buffer
                 ) -> tuple[int, int]:
    """``(rows, decoded bytes)`` a RecordBatch flatbuffer declares, before decompressing."""
    at = _field(meta, batch, 0)
    rows = struct.unpack_from("<q", meta, at)[0] if at is not None else 0
    at = _field(meta, batch, 2)
    if at is None:
        return rows, 0
    vec = _ref(meta, at)
    if not 0 <= vec <= len(meta) - 4:
        raise _Malformed("buffers out of bounds")
    count = struct.unpack_from("<I", meta, vec)[0]
    if vec + 4 + 16 * count > len(meta):
        raise _Malformed("buffers out of bounds")
    compressed = _field(meta, batch, 3) is not None
    data = memoryview(body) if body is not None else memoryview(b"")
    total = 0
    for i in range(count):
        offset, length = struct.unpack_from("<qq", meta, vec + 4 + 16 * i)
        if offset < 0 or length < 0 or offset + length > len(data):
            raise _Malformed(f"buffer {i} lies outside the message body")
        if not compressed or length == 0:
            total += length
        elif length < 8:
            raise _Malformed(f"compressed buffer {i} has no length prefix")
        else:  # Arrow's compressed buffers start with their int64 uncompressed length
            size = struct.unpack_from("<q", data, offset)[0]
            total += length - 8 if size == -1 else size
            if size < -1:
                raise _Malformed(f"compressed buffer {i} declares {size} bytes")
    return max(rows, 0), total


def _declared_sizes(buf: pa.Buffer) -> tuple[int, int]:
    """``(rows, bytes)`` an IPC stream's batches declare, read from metadata alone."""
    rows = total = 0
    for message in pa.ipc.MessageReader.open_stream(buf):
        meta = memoryview(message.metadata)
        root = _table(meta, _ref(meta, 0))
        at = _field(meta, root, 1)
        kind = meta[at] if at is not None and at < len(meta) else 0
        at = _field(meta, root, 2)
        if at is None or kind not in (2, 3):  # 2: DictionaryBatch, 3: RecordBatch
            continue
        header = _table(meta, _ref(meta, at))
        if kind == 2:  # a dictionary batch wraps its RecordBatch in field 1
            at = _field(meta, header, 1)
            if at is None:
                continue
            header = _table(meta, _ref(meta, at))
        n, size = _batch_sizes(meta, header, message.body)
        rows += n if kind == 3 else 0
        total += size
    return rows, total


def _row_bytes(dtype: pa.DataType) -> int:
    """About what one row of ``dtype`` costs when a cast has to allocate it."""
    if pa.types.is_fixed_size_list(dtype):
        return 1 + dtype.list_size * _row_bytes(dtype.value_type)
    if pa.types.is_struct(dtype):
        return 1 + sum(_row_bytes(dtype.field(i).type) for i in range(dtype.num_fields))
    try:
        return 1 + max(dtype.bit_width // 8, 1)
    except ValueError:  # variable width: offsets
        return 1 + 8


def _read_arrow(spec: DecodeSpec, value: pa.Scalar) -> pa.Table | str:
    """One record's rows in ``spec.schema``, or why they cannot be had."""
    if not value.is_valid:
        return "has a null value; value_format='arrow' needs an Arrow IPC stream"
    names = spec.schema.names
    buf = value.as_buffer()
    if buf.size > spec.max_record_bytes:
        return (f"holds {buf.size} bytes, more than the {spec.max_record_bytes} an Arrow "
                "IPC record may hold")
    not_ipc = (f"is not an Arrow IPC stream with columns {names} castable to "
               f"{spec.schema.types}")
    try:
        rows, size = _declared_sizes(buf)
    except (pa.ArrowException, _Malformed, struct.error, ValueError, IndexError) as exc:
        return f"{not_ipc}: {exc}"
    size += rows * sum(_row_bytes(t) for t in spec.schema.types)
    if size > spec.max_decoded_bytes:
        return (f"decodes to about {size} bytes ({rows} rows), more than the "
                f"{spec.max_decoded_bytes} an Arrow IPC record may decode to")
    try:
        reader = pa.ipc.open_stream(buf)
        batches = list(reader)
        schema = reader.schema
    except (pa.ArrowException, ValueError) as exc:
        return f"{not_ipc}: {exc}"
    try:
        for batch in batches:  # corrupt offsets would read out of bounds later
            batch.validate(full=True)
    except (pa.ArrowException, ValueError) as exc:
        return f"is a corrupt Arrow IPC stream (its buffers fail validation): {exc}"
    try:
        table = pa.Table.from_batches(batches, schema).select(names).cast(spec.schema)
    except (pa.ArrowException, KeyError, ValueError, TypeError) as exc:
        return f"{not_ipc}: {exc}"
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
