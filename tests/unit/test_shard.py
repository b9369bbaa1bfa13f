"""LocalShard: write record batches to an IPC file, map it, gather rows."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

from sparkdl.data.shard import SHARD_FILE, LocalShard, ShardLayout
from sparkdl.errors import SchemaError


def make_batches(sizes, width=3, with_validation=False):
    """Batches whose row i has features [i, i+0.5, ...] and label i % 4."""
    batches, start = [], 0
    for n in sizes:
        ids = np.arange(start, start + n)
        feats = (ids[:, None] + np.arange(width) * 0.5).astype(np.float32)
        cols = {
            "f": pa.array(feats.tolist(), pa.list_(pa.float32())),
            "y": pa.array(ids % 4, pa.int64()),
        }
        if with_validation:
            cols["is_val"] = pa.array(ids % 3 == 0)
        batches.append(pa.record_batch(cols))
        start += n
    return batches


def expected_features(ids, width=3):
    ids = np.asarray(ids)
    return (ids[:, None] + np.arange(width) * 0.5).astype(np.float32)


def test_single_batch(tmp_path):
    shard = LocalShard.write(make_batches([6]), str(tmp_path), ShardLayout(("f",), "y", True))
    try:
        assert os.path.exists(tmp_path / SHARD_FILE)
        assert shard.rows == 6
        np.testing.assert_array_equal(shard.features([5, 0, 2]), expected_features([5, 0, 2]))
        assert shard.labels([5, 0, 2]).tolist() == [1, 0, 2]
        assert shard.labels([0]).dtype == np.int64
        np.testing.assert_array_equal(shard.train_index, np.arange(6))
        assert len(shard.validation_index) == 0
    finally:
        shard.close()


def test_gather_across_chunks_in_any_order(tmp_path):
    sizes = [3, 0, 5, 1, 4]  # an empty batch in the middle too
    shard = LocalShard.write(make_batches(sizes), str(tmp_path),
                             ShardLayout(("f",), "y", True))
    try:
        assert shard.rows == 13
        rng = np.random.default_rng(0)
        index = rng.permutation(13)
        np.testing.assert_array_equal(shard.features(index), expected_features(index))
        assert shard.labels(index).tolist() == (index % 4).tolist()
        # repeated rows and a single chunk boundary
        index = np.array([12, 2, 3, 3, 8, 0, 12])
        np.testing.assert_array_equal(shard.features(index), expected_features(index))
        # gathered arrays are fresh (writable, not views of the mapping)
        out = shard.features([1, 4])
        assert out.flags.writeable and out.flags.owndata
    finally:
        shard.close()


def test_float_labels_and_feature_shape(tmp_path):
    batches = [
        pa.record_batch({"f": pa.array([[float(i)] * 4 for i in range(k, k + 2)],
                                       pa.list_(pa.float64())),
                         "y": pa.array([0.5 * i for i in range(k, k + 2)])})
        for k in (0, 2)
    ]
    shard = LocalShard.write(batches, str(tmp_path),
                             ShardLayout(("f",), "y", False, feature_shape=(1, 2, 2)))
    try:
        x = shard.features([3, 0])
        assert x.shape == (2, 1, 2, 2) and x.dtype == np.float32
        assert x[0].ravel().tolist() == [3.0] * 4
        y = shard.labels([3, 0])
        assert y.dtype == np.float32 and y.tolist() == [1.5, 0.0]
    finally:
        shard.close()


def test_several_scalar_feature_columns(tmp_path):
    batch = pa.record_batch({"a": pa.array([1.0, 2.0]), "b": pa.array([3, 4]),
                             "y": pa.array([0.0, 1.0])})
    shard = LocalShard.write([batch], str(tmp_path), ShardLayout(("a", "b"), "y", True))
    try:
        np.testing.assert_array_equal(shard.features([1, 0]), [[2, 4], [1, 3]])
        assert shard.labels([1, 0]).tolist() == [1, 0]
    finally:
        shard.close()


def test_validation_split(tmp_path):
    shard = LocalShard.write(make_batches([4, 5, 3], with_validation=True), str(tmp_path),
                             ShardLayout(("f",), "y", True, validation_col="is_val"))
    try:
        ids = np.arange(12)
        np.testing.assert_array_equal(shard.validation_index, ids[ids % 3 == 0])
        np.testing.assert_array_equal(shard.train_index, ids[ids % 3 != 0])
        np.testing.assert_array_equal(shard.features(shard.validation_index),
                                      expected_features([0, 3, 6, 9]))
    finally:
        shard.close()


def test_scoring_layout_without_labels(tmp_path):
    shard = LocalShard.write(make_batches([2, 2]), str(tmp_path), ShardLayout(("f",), None, False))
    try:
        np.testing.assert_array_equal(shard.features([3]), expected_features([3]))
    finally:
        shard.close()


@pytest.mark.parametrize("batches", [[], "zero_row_batch"])
def test_empty_input(tmp_path, batches):
    if batches == "zero_row_batch":
        batches = make_batches([0])
    layout = ShardLayout(("f",), "y", True, validation_col=None)
    shard = LocalShard.write(batches, str(tmp_path), layout)
    try:
        assert os.path.exists(tmp_path / SHARD_FILE)
        assert shard.rows == 0
        assert len(shard.train_index) == 0 and len(shard.validation_index) == 0
    finally:
        shard.close()


def test_empty_input_with_validation_column(tmp_path):
    shard = LocalShard.write([], str(tmp_path),
                             ShardLayout(("f",), "y", True, validation_col="is_val"))
    try:
        assert shard.rows == 0
        assert len(shard.train_index) == 0 and len(shard.validation_index) == 0
    finally:
        shard.close()


def test_bad_data_fails_when_mapped(tmp_path):
    batch = pa.record_batch({"f": pa.array([[1.0], None], pa.list_(pa.float32())),
                             "y": pa.array([0, 1])})
    with pytest.raises(SchemaError, match="'f' has 1 null"):
        LocalShard.write([batch], str(tmp_path), ShardLayout(("f",), "y", True))


def test_close_releases_the_mapping(tmp_path):
    shard = LocalShard.write(make_batches([3, 3]), str(tmp_path), ShardLayout(("f",), "y", True))
    shard.close()
    assert shard._source.closed
    assert shard._features == [] and shard._labels == []
    # the file can be removed afterwards
    os.remove(tmp_path / SHARD_FILE)


def test_opening_copies_no_feature_data_whatever_the_stored_dtype(tmp_path):
    # float64 arrays and several integer columns both need conversion to float32;
    # it happens per gathered batch, so a shard larger than RAM stays on disk
    rows = 2_000
    wide = pa.array(np.arange(rows * 8, dtype=np.float64).reshape(rows, 8).tolist(),
                    pa.list_(pa.float64()))
    batch = pa.record_batch({"wide": wide, "a": pa.array(np.arange(rows)),
                             "b": pa.array(np.arange(rows, dtype=np.int32) * 2),
                             "y": pa.array(np.arange(rows) % 2)})
    for cols in (("wide",), ("a", "b")):
        directory = tmp_path / cols[0]
        directory.mkdir()
        LocalShard.write([batch], str(directory), ShardLayout(cols, "y", True)).close()
        before = pa.total_allocated_bytes()
        shard = LocalShard(str(directory / SHARD_FILE), ShardLayout(cols, "y", True))
        try:
            assert pa.total_allocated_bytes() == before
            assert all(not view.flags.owndata for view in shard._features[0])
            x = shard.features([rows - 1, 0])
            assert x.dtype == np.float32
            expected = ([list(range(8 * rows - 8, 8 * rows)), list(range(8))] if cols == ("wide",)
                        else [[rows - 1, 2 * rows - 2], [0, 0]])
            np.testing.assert_array_equal(x, expected)
        finally:
            shard.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="Linux reports advice")
def test_the_mapping_is_advised_as_random_access(tmp_path):
    shard = LocalShard.write(make_batches([3]), str(tmp_path), ShardLayout(("f",), "y", True))
    try:
        lines = open("/proc/self/smaps").read().splitlines()
        start = next(i for i, line in enumerate(lines) if line.endswith(str(tmp_path / SHARD_FILE)))
        flags = next(line for line in lines[start:] if line.startswith("VmFlags:")).split()
        assert "rr" in flags  # VM_RAND_READ: no readahead around each touched row
    finally:
        shard.close()


def test_one_index_gathers_across_many_record_batches(tmp_path):
    # 40 record batches of (1, 2, 2) float64 images with float targets: every batch is a
    # plain view of the mapping, so a gather is one vectorised index; it must agree with
    # gathering batch by batch
    rng = np.random.default_rng(3)
    batches, images, targets = [], [], []
    for n in rng.integers(1, 9, size=40):
        x = rng.normal(size=(n, 4))
        t = rng.normal(size=(n, 2)).astype(np.float32)
        images.append(x)
        targets.append(t)
        batches.append(pa.record_batch({"img": pa.array(x.tolist(), pa.list_(pa.float64())),
                                        "t": pa.array(t.tolist(), pa.list_(pa.float32()))}))
    layout = ShardLayout(("img",), "t", False, feature_shape=(1, 2, 2))
    shard = LocalShard.write(batches, str(tmp_path), layout)
    try:
        assert shard._feature_rows is not None and shard._label_rows is not None
        index = rng.permutation(shard.rows)[:50]
        x = shard.features(index)
        assert x.dtype == np.float32 and x.shape == (50, 1, 2, 2)
        np.testing.assert_array_equal(
            x.reshape(50, 4), np.concatenate(images)[index].astype(np.float32))
        np.testing.assert_array_equal(shard.labels(index), np.concatenate(targets)[index])
        np.testing.assert_array_equal(
            x, shard._gather(shard._features, index, shard._take_features))
        assert shard.features([]).shape == (0, 1, 2, 2)
    finally:
        shard.close()


def test_rows_converted_on_load_are_gathered_batch_by_batch(tmp_path):
    vector = pa.struct([("type", pa.int8()), ("size", pa.int32()),
                        ("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float64()))])
    batches = [pa.record_batch({
        "v": pa.array([{"type": 0, "size": 3, "indices": [i % 3], "values": [float(i)]}
                       for i in range(k, k + 3)], vector),
        "y": pa.array([0.0, 1.0, 2.0])}) for k in (0, 3)]
    shard = LocalShard.write(batches, str(tmp_path), ShardLayout(("v",), "y", True))
    try:
        assert shard._feature_rows is None  # sparse vectors are densified per batch
        assert shard._label_rows is None  # double labels became int64 class ids
        np.testing.assert_array_equal(shard.features([4, 0]), [[0, 4, 0], [0, 0, 0]])
        assert shard.labels([4, 0]).tolist() == [1, 0]
    finally:
        shard.close()
