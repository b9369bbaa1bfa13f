"""Arrow -> numpy conversion of every column type Spark hands to a worker."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sparkdl.data.arrow_tensors import (
    column_to_numpy,
    feature_views,
    features_to_numpy,
    is_vector_struct,
    labels_to_numpy,
    list_to_numpy,
    take_features,
    vector_to_numpy,
)
from sparkdl.errors import SchemaError

VECTOR = pa.struct([
    ("type", pa.int8()),
    ("size", pa.int32()),
    ("indices", pa.list_(pa.int32())),
    ("values", pa.list_(pa.float64())),
])


def dense(values):
    return {"type": 1, "size": None, "indices": None, "values": list(values)}


def sparse(size, indices, values):
    return {"type": 0, "size": size, "indices": list(indices), "values": list(values)}


ROWS = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]


@pytest.mark.parametrize("arrow_type", [
    pa.list_(pa.float32()),
    pa.list_(pa.float64()),
    pa.large_list(pa.float32()),
    pa.large_list(pa.float64()),
    pa.list_(pa.float32(), 3),  # fixed_size_list
    pa.list_(pa.int32()),
    pa.list_(pa.int64()),
])
def test_list_types(arrow_type):
    arr = pa.array(ROWS, arrow_type)
    out = features_to_numpy([arr])
    assert out.dtype == np.float32
    assert out.shape == (3, 3)
    np.testing.assert_array_equal(out, np.array(ROWS, np.float32))


@pytest.mark.parametrize("arrow_type", [
    pa.list_(pa.float32()),
    pa.large_list(pa.float64()),
    pa.list_(pa.float32(), 3),
])
def test_sliced_lists_start_at_nonzero_offset(arrow_type):
    arr = pa.array(ROWS, arrow_type).slice(1, 2)
    out = list_to_numpy(arr)
    np.testing.assert_array_equal(out, np.array(ROWS[1:], np.float32))


def test_nested_images():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 1, 8, 8)).astype(np.float32)
    arr = pa.array(images.tolist(), pa.list_(pa.list_(pa.list_(pa.float32()))))
    out = features_to_numpy([arr])
    assert out.shape == (4, 1, 8, 8)
    np.testing.assert_array_equal(out, images)
    # sliced nested column
    out = list_to_numpy(arr.slice(2, 2))
    np.testing.assert_array_equal(out, images[2:])


def test_nested_fixed_size_and_large_mix():
    images = np.arange(2 * 2 * 3, dtype=np.float64).reshape(2, 2, 3)
    arr = pa.array(images.tolist(), pa.large_list(pa.list_(pa.float64(), 3)))
    out = list_to_numpy(arr)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out, images.astype(np.float32))


def test_zero_copy_for_float32_list_without_nulls():
    arr = pa.array(ROWS, pa.list_(pa.float32()))
    out = list_to_numpy(arr)
    buf = arr.values.buffers()[1]
    assert out.ctypes.data == buf.address + arr.values.offset * 4
    assert not out.flags.owndata


def test_zero_copy_for_sliced_float32_list():
    arr = pa.array(ROWS, pa.list_(pa.float32())).slice(1, 2)
    out = list_to_numpy(arr)
    first = int(arr.offsets.to_numpy()[0])
    assert first == 3
    buf = arr.values.buffers()[1]
    assert out.ctypes.data == buf.address + (arr.values.offset + first) * 4
    np.testing.assert_array_equal(out, np.array(ROWS[1:], np.float32))


def test_is_vector_struct():
    assert is_vector_struct(VECTOR)
    assert not is_vector_struct(pa.struct([("values", pa.list_(pa.float64()))]))
    assert not is_vector_struct(pa.list_(pa.float64()))


def test_vector_dense():
    arr = pa.array([dense([1, 2, 3]), dense([4, 5, 6])], VECTOR)
    out = features_to_numpy([arr])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1, 2, 3], [4, 5, 6]])


def test_vector_sparse():
    arr = pa.array([sparse(4, [0, 3], [1.5, 2.5]), sparse(4, [], []),
                    sparse(4, [2], [7.0])], VECTOR)
    out = vector_to_numpy(arr)
    np.testing.assert_array_equal(out, [[1.5, 0, 0, 2.5], [0, 0, 0, 0], [0, 0, 7.0, 0]])


def test_vector_mixed_dense_and_sparse():
    arr = pa.array([sparse(3, [1], [9.0]), dense([1, 2, 3]), sparse(3, [0, 2], [4.0, 5.0]),
                    dense([0, 0, 1])], VECTOR)
    out = column_to_numpy(arr, "features")
    np.testing.assert_array_equal(
        out, [[0, 9, 0], [1, 2, 3], [4, 0, 5], [0, 0, 1]])


def test_vector_mixed_sliced():
    arr = pa.array([dense([1, 1, 1]), sparse(3, [2], [9.0]), dense([1, 2, 3]),
                    sparse(3, [0, 1], [4.0, 5.0])], VECTOR).slice(1, 3)
    out = vector_to_numpy(arr)
    np.testing.assert_array_equal(out, [[0, 0, 9], [1, 2, 3], [4, 5, 0]])


def test_vector_sizes_differ():
    arr = pa.array([dense([1, 2, 3]), sparse(5, [4], [1.0])], VECTOR)
    with pytest.raises(SchemaError, match=r"different sizes \[3, 5\]"):
        vector_to_numpy(arr, "vec")


def test_vector_nulls():
    arr = pa.array([dense([1, 2]), None], VECTOR)
    with pytest.raises(SchemaError, match=r"'vec' has 1 null"):
        vector_to_numpy(arr, "vec")


def test_scalar_columns_stacked():
    a = pa.array([1.0, 2.0, 3.0], pa.float64())
    b = pa.array([10, 20, 30], pa.int32())
    c = pa.array([0.5, 0.25, 0.125], pa.float32())
    out = features_to_numpy([a, b, c], names=["a", "b", "c"])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1, 10, 0.5], [2, 20, 0.25], [3, 30, 0.125]])


def test_single_scalar_column_becomes_2d():
    out = features_to_numpy([pa.array([1.0, 2.0])])
    assert out.shape == (2, 1)


def test_several_columns_must_be_scalars():
    a = pa.array([1.0, 2.0])
    b = pa.array([[1.0], [2.0]], pa.list_(pa.float32()))
    with pytest.raises(SchemaError, match="'b' is not a number"):
        features_to_numpy([a, b], names=["a", "b"])


def test_chunked_array_is_combined():
    chunked = pa.chunked_array([pa.array([[1.0, 2.0]], pa.list_(pa.float32())),
                                pa.array([[3.0, 4.0]], pa.list_(pa.float32()))])
    np.testing.assert_array_equal(column_to_numpy(chunked, "x"), [[1, 2], [3, 4]])


def test_feature_shape_reshape():
    flat = np.arange(3 * 64, dtype=np.float32).reshape(3, 64)
    arr = pa.array(flat.tolist(), pa.list_(pa.float32()))
    out = features_to_numpy([arr], shape=(1, 8, 8))
    assert out.shape == (3, 1, 8, 8)
    np.testing.assert_array_equal(out.reshape(3, 64), flat)
    np.testing.assert_array_equal(out[1, 0, 2], flat[1, 16:24])


def test_feature_shape_from_scalar_columns():
    cols = [pa.array([float(i), float(i + 10)]) for i in range(4)]
    out = features_to_numpy(cols, shape=[2, 2])
    assert out.shape == (2, 2, 2)
    np.testing.assert_array_equal(out[0], [[0, 1], [2, 3]])


def test_feature_shape_mismatch():
    arr = pa.array([[1.0] * 6, [2.0] * 6], pa.list_(pa.float32()))
    with pytest.raises(SchemaError, match=r"featureShape=\[4, 2\] needs 8 values per row") as e:
        features_to_numpy([arr], shape=(4, 2), names=["pixels"])
    assert "6" in str(e.value) and "pixels" in str(e.value)


def test_labels_int_class_ids():
    out = labels_to_numpy(pa.array([0.0, 2.0, 1.0]), "label", integer=True)
    assert out.dtype == np.int64
    assert out.tolist() == [0, 2, 1]
    out = labels_to_numpy(pa.array([3, 1], pa.int32()), "label", integer=True)
    assert out.dtype == np.int64 and out.tolist() == [3, 1]


def test_labels_float_targets():
    out = labels_to_numpy(pa.array([0.5, -1.25], pa.float64()), "y", integer=False)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [0.5, -1.25])
    out = labels_to_numpy(pa.array([[1.0, 0.0], [0.0, 1.0]], pa.list_(pa.float64())), "y",
                          integer=False)
    assert out.shape == (2, 2) and out.dtype == np.float32


def test_labels_null():
    with pytest.raises(SchemaError, match=r"'label' has 2 null"):
        labels_to_numpy(pa.array([1.0, None, None]), "label", integer=True)


def test_null_rows_in_list_column():
    arr = pa.array([[1.0, 2.0], None, [3.0, 4.0]], pa.list_(pa.float32()))
    with pytest.raises(SchemaError) as e:
        features_to_numpy([arr], names=["pix"])
    assert "'pix'" in str(e.value) and "1 null" in str(e.value)


def test_null_leaves_in_list_column():
    arr = pa.array([[1.0, None], [None, 4.0]], pa.list_(pa.float32()))
    with pytest.raises(SchemaError, match=r"'pix' has 2 null"):
        features_to_numpy([arr], names=["pix"])


def test_null_in_scalar_column():
    with pytest.raises(SchemaError, match=r"'x2' has 1 null"):
        features_to_numpy([pa.array([1.0, 2.0]), pa.array([None, 2.0])], names=["x1", "x2"])


def test_ragged_lists():
    arr = pa.array([[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]], pa.list_(pa.float32()))
    with pytest.raises(SchemaError, match=r"different lengths \[1, 2, 3\]") as e:
        features_to_numpy([arr], names=["feat"])
    assert "'feat'" in str(e.value)


def test_ragged_inner_level():
    arr = pa.array([[[1.0, 2.0], [3.0, 4.0]], [[1.0], [2.0, 3.0, 4.0]]],
                   pa.list_(pa.list_(pa.float32())))
    with pytest.raises(SchemaError, match="different lengths"):
        list_to_numpy(arr, "img")


def test_ragged_outside_slice_is_ignored():
    arr = pa.array([[1.0], [2.0, 3.0], [4.0, 5.0]], pa.list_(pa.float32())).slice(1)
    np.testing.assert_array_equal(list_to_numpy(arr), [[2, 3], [4, 5]])


@pytest.mark.parametrize("arr", [
    pa.array([["a", "b"], ["c", "d"]], pa.list_(pa.string())),
    pa.array(["a", "b"]),
])
def test_non_numeric_leaves(arr):
    with pytest.raises(SchemaError, match=r"'txt' holds string values"):
        features_to_numpy([arr], names=["txt"])


def test_empty_column():
    out = features_to_numpy([pa.array([], pa.list_(pa.float32()))])
    assert out.shape[0] == 0


def test_feature_views_keep_the_stored_dtype_without_copying():
    values = pa.array(np.arange(12, dtype=np.float64))
    arr = pa.ListArray.from_arrays(pa.array([0, 4, 8, 12], pa.int32()), values)
    (view,) = feature_views([arr], shape=(2, 2), names=["img"])
    assert view.dtype == np.float64 and view.shape == (3, 2, 2)
    assert view.__array_interface__["data"][0] == values.buffers()[1].address
    out = take_features([view], [2, 0], shape=(2, 2))
    assert out.dtype == np.float32 and out.shape == (2, 2, 2)
    np.testing.assert_array_equal(out[0], [[8, 9], [10, 11]])


def test_take_features_casts_each_column_exactly():
    big = 2**24 + 1  # not a float32: int64 -> float32 directly rounds like the JVM cast
    views = feature_views([pa.array([big, 3]), pa.array([0.5, 1.5], pa.float32())],
                          names=["n", "f"])
    assert [v.dtype for v in views] == [np.dtype(np.int64), np.dtype(np.float32)]
    out = take_features(views, slice(None))
    assert out.dtype == np.float32
    assert out[0, 0] == np.float32(big) and out[1].tolist() == [3.0, 1.5]


def test_feature_views_check_like_features_to_numpy():
    with pytest.raises(SchemaError, match=r"featureShape=\[3\] needs 3 values per row"):
        feature_views([pa.array([1.0]), pa.array([2.0])], shape=[3], names=["a", "b"])
    with pytest.raises(SchemaError, match="'b' is not a number"):
        feature_views([pa.array([1.0]), pa.array([[2.0]])], names=["a", "b"])
