"""Worker-side Kafka value decoding (float32 tensors, Arrow IPC), without Spark."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest

from sparkdl.data.kafka_decode import DecodeSpec, decode_arrow, decode_float32
from sparkdl.errors import SchemaError


def records(values: list, topic: str = "t") -> pa.RecordBatch:
    n = len(values)
    return pa.record_batch({
        "key": pa.array([f"k{i}".encode() for i in range(n)], pa.binary()),
        "topic": pa.array([topic] * n), "partition": pa.array([2] * n, pa.int32()),
        "offset": pa.array(range(100, 100 + n), pa.int64()),
        "timestamp": pa.array([0] * n, pa.timestamp("us")),
        "value": pa.array(values, pa.binary())})


def ipc(**columns) -> bytes:
    batch = pa.record_batch(columns)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def tensor(*xs: float) -> bytes:
    return np.array(xs, "<f4").tobytes()


def test_float32_fails_on_the_first_bad_record_naming_it():
    batch = records([tensor(1, 2), tensor(1), None, tensor(3, 4)])
    with pytest.raises(SchemaError, match=r"topic 't', partition 2, offset 101 holds 4 bytes; "
                                          r"value_format='float32' needs 8 \(2 floats\)\. "
                                          r"2 record\(s\) in this batch are malformed; pass "
                                          r"dead_letter_col="):
        list(decode_float32(DecodeSpec("float32", tensor_length=2), iter([batch])))


def test_float32_dead_letters_keep_order_bytes_and_reasons():
    values = [tensor(1, 2), b"\x01\x02\x03", None, tensor(3, 4), tensor(5, 6, 7)]
    spec = DecodeSpec("float32", tensor_length=2, dead_letter_col="_bad")
    out = next(decode_float32(spec, iter([records(values)])))
    assert out.schema.names == ["key", "topic", "partition", "offset", "timestamp", "value",
                                "_bad"]
    assert out.column("value").to_pylist() == [[1.0, 2.0], None, None, [3.0, 4.0], None]
    dead = out.column("_bad").to_pylist()
    assert [d is None for d in dead] == [True, False, False, True, False]
    assert dead[1] == {"reason": "Kafka record at topic 't', partition 2, offset 101 holds 3 "
                                 "bytes; value_format='float32' needs 8 (2 floats)",
                       "value": b"\x01\x02\x03"}
    assert dead[2]["reason"].endswith("offset 102 has a null value; value_format='float32' "
                                      "needs the tensor's bytes") and dead[2]["value"] is None
    assert dead[4]["value"] == tensor(5, 6, 7)


def test_float32_without_bad_records_is_zero_copy_shaped():
    spec = DecodeSpec("float32", dead_letter_col="_bad")
    out = next(decode_float32(spec, iter([records([tensor(1), tensor(2, 3)])])))
    assert out.column("value").to_pylist() == [[1.0], [2.0, 3.0]]
    assert out.column("_bad").null_count == 2


ARROW = pa.schema([("x", pa.float32()), ("v", pa.list_(pa.float32()))])


def test_arrow_casts_to_the_schema_and_checks_tensor_length():
    good = ipc(x=pa.array([1, 2], pa.int32()), v=pa.array([[1.0, 2.0], [3.0, 4.0]]))
    short = ipc(x=pa.array([3.0], pa.float32()), v=pa.array([[1.0]], pa.list_(pa.float32())))
    spec = DecodeSpec("arrow", ARROW, tensor_length=2, dead_letter_col="_bad")
    out = pa.Table.from_batches(list(decode_arrow(spec, iter([records([good, short, b"xx"])]))))
    assert out.column("x").to_pylist() == [1.0, 2.0, None, None]
    assert out.schema.field("x").type == pa.float32()
    assert out.column("key").to_pylist() == [b"k0", b"k0", b"k1", b"k2"]
    reasons = [d and d["reason"] for d in out.column("_bad").to_pylist()]
    assert reasons[:2] == [None, None]
    assert reasons[2].endswith("offset 101 has [1] values in column 'v'; tensor_length=2")
    assert "offset 102 is not an Arrow IPC stream with columns ['x', 'v']" in reasons[3]


def test_arrow_fails_without_a_dead_letter_column():
    spec = DecodeSpec("arrow", ARROW)
    with pytest.raises(SchemaError, match=r"offset 100 has a null value; value_format='arrow'"):
        list(decode_arrow(spec, iter([records([None])])))


# Record values are untrusted: a corrupt or oversized IPC stream is a malformed record.

TEXT = pa.schema([("s", pa.string()), ("v", pa.list_(pa.float32()))])


def corrupt_offsets(column: str) -> bytes:
    """A stream whose ``column`` offsets point far outside its data, metadata intact."""
    raw = ipc(s=pa.array(["ab", "c"]), v=pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32())))
    good = np.array([0, 2, 3], "<i4").tobytes()  # both columns' offsets are [0, 2, 3]
    at = raw.find(good) if column == "s" else raw.rfind(good)
    assert at >= 0 and raw.count(good) == 2
    bad = np.array([0, 1 << 30, 3], "<i4").tobytes()
    tampered = raw[:at] + bad + raw[at + len(bad):]
    pa.ipc.open_stream(tampered).read_all()  # Arrow's reader alone does not notice
    return tampered


@pytest.mark.parametrize("column", ["s", "v"])
def test_arrow_out_of_bounds_offsets_become_dead_letters(column):
    good = ipc(s=pa.array(["ok"]), v=pa.array([[1.0]], pa.list_(pa.float32())))
    spec = DecodeSpec("arrow", TEXT, dead_letter_col="_bad")
    batch = records([good, corrupt_offsets(column)])
    out = pa.Table.from_batches(list(decode_arrow(spec, iter([batch]))))
    dead = out.column("_bad").to_pylist()
    assert dead[0] is None and dead[1] is not None  # before reading the corrupt column
    assert out.column("s").to_pylist() == ["ok", None]
    assert dead[1]["reason"].startswith(
        "Kafka record at topic 't', partition 2, offset 101 is a corrupt Arrow IPC stream")
    assert "out of bounds" in dead[1]["reason"]
    assert dead[1]["value"] == corrupt_offsets(column)


def test_arrow_out_of_bounds_offsets_fail_fast_without_a_dead_letter_column():
    spec = DecodeSpec("arrow", TEXT)
    with pytest.raises(SchemaError, match=r"offset 100 is a corrupt Arrow IPC stream .*"
                                          r"out of bounds.*dead_letter_col="):
        list(decode_arrow(spec, iter([records([corrupt_offsets("s")])])))


def test_arrow_record_over_the_size_cap_is_malformed():
    value = ipc(s=pa.array(["x" * 4000]), v=pa.array([[1.0]], pa.list_(pa.float32())))
    spec = DecodeSpec("arrow", TEXT, dead_letter_col="_bad", max_record_bytes=1000)
    out = next(decode_arrow(spec, iter([records([value])])))
    reason = out.column("_bad")[0]["reason"].as_py()
    assert reason.endswith(f"offset 100 holds {len(value)} bytes, more than the 1000 an "
                           "Arrow IPC record may hold")
    with pytest.raises(SchemaError, match="more than the 1000 an Arrow IPC record may hold"):
        list(decode_arrow(DecodeSpec("arrow", TEXT, max_record_bytes=1000),
                          iter([records([value])])))


def compressed(**columns) -> bytes:
    batch = pa.record_batch(columns)
    sink = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def test_arrow_decompression_over_the_decoded_cap_is_malformed_before_decompressing():
    # 4 MB of zeros compresses to a few hundred bytes: a decompression bomb in miniature.
    bomb = compressed(s=pa.array(["\0" * (1 << 22)]),
                      v=pa.array([[0.0]], pa.list_(pa.float32())))
    assert len(bomb) < 2000
    spec = DecodeSpec("arrow", TEXT, dead_letter_col="_bad", max_decoded_bytes=1 << 20)
    out = next(decode_arrow(spec, iter([records([bomb])])))
    reason = out.column("_bad")[0]["reason"].as_py()
    assert "offset 100 decodes to about" in reason
    assert reason.endswith("more than the 1048576 an Arrow IPC record may decode to")
    # under a cap it fits, it decodes
    spec = DecodeSpec("arrow", TEXT, dead_letter_col="_bad", max_decoded_bytes=8 << 20)
    out = next(decode_arrow(spec, iter([records([bomb])])))
    assert out.column("_bad").null_count == 1 and len(out.column("s")[0].as_py()) == 1 << 22


def test_arrow_rows_a_cast_would_allocate_count_toward_the_decoded_cap():
    # a null column is free on the wire but a cast to float32 allocates for every row
    value = ipc(x=pa.nulls(100_000), v=pa.nulls(100_000, pa.list_(pa.float32())))
    spec = DecodeSpec("arrow", ARROW, dead_letter_col="_bad", max_decoded_bytes=100_000)
    out = next(decode_arrow(spec, iter([records([value])])))
    assert "(100000 rows), more than the 100000" in out.column("_bad")[0]["reason"].as_py()


def test_arrow_compressed_and_dictionary_streams_within_the_caps_decode():
    words = pa.array(["a", "b", "a"]).dictionary_encode()
    tensors = pa.array([[1.0], [2.0], [3.0]], pa.list_(pa.float32()))
    spec = DecodeSpec("arrow", TEXT, dead_letter_col="_bad")
    batch = records([compressed(s=words, v=tensors), ipc(s=words, v=tensors)])
    out = pa.Table.from_batches(list(decode_arrow(spec, iter([batch]))))
    assert out.column("s").to_pylist() == ["a", "b", "a"] * 2
    assert out.column("v").to_pylist() == [[1.0], [2.0], [3.0]] * 2
    assert out.column("_bad").null_count == 6
