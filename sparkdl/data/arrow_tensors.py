"""Arrow columns -> numpy arrays shaped as tensors, without per-row Python.

Spark hands workers Arrow record batches. The functions here turn their columns
into dense numpy arrays using only buffer-level operations: list offsets are
checked in bulk, flattened values are viewed (zero-copy where the layout and
dtype already match) and reshaped. Sparse ML vectors are scattered in one
vectorised assignment.

Example:
    >>> import pyarrow as pa
    >>> col = pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32()))
    >>> features_to_numpy([col]).tolist()
    [[1.0, 2.0], [3.0, 4.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from sparkdl.errors import SchemaError

#: Field names of Spark ML's VectorUDT storage type (``type`` 0 = sparse, 1 = dense).
VECTOR_FIELDS = ("type", "size", "indices", "values")


def is_vector_struct(arrow_type: pa.DataType) -> bool:
    """Whether ``arrow_type`` is the storage struct of a Spark ML vector."""
    return pa.types.is_struct(arrow_type) and tuple(
        arrow_type.field(i).name for i in range(arrow_type.num_fields)
    ) == VECTOR_FIELDS


def _is_list(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type)
    )


def _check_no_nulls(arr: pa.Array, name: str) -> None:
    if arr.null_count:
        raise SchemaError(
            f"Column {name!r} has {arr.null_count} null value(s) in this batch; "
            "drop or fill them (df.na.drop / df.na.fill) before training or scoring."
        )


def _numeric_view(arr: pa.Array, dtype: np.dtype, name: str) -> np.ndarray:
    _check_no_nulls(arr, name)
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)
            or pa.types.is_boolean(arr.type)):
        raise SchemaError(
            f"Column {name!r} holds {arr.type} values; expected numbers "
            "(float, double, int, long)."
        )
    values = arr.to_numpy(zero_copy_only=False)
    return values.astype(dtype, copy=False)


def list_to_numpy(arr: pa.Array, name: str = "features", dtype=np.float32) -> np.ndarray:
    """Turn a (possibly nested) list column into an ``(n, d1, d2, ...)`` array.

    Every nesting level must have one length across all rows.

    Args:
        arr: a ``list``, ``large_list`` or ``fixed_size_list`` array of numbers,
            nested to any depth.
        name: the column name, for error messages.
        dtype: numpy dtype of the result.

    Returns:
        A numpy array whose first axis is the row.

    Raises:
        SchemaError: on nulls, ragged lengths or non-numeric leaves.

    Example:
        >>> import pyarrow as pa
        >>> a = pa.array([[[1, 2], [3, 4]]], pa.list_(pa.list_(pa.int32())))
        >>> list_to_numpy(a).shape
        (1, 2, 2)
    """
    shape = [len(arr)]
    values = arr
    while _is_list(values.type):
        _check_no_nulls(values, name)
        if pa.types.is_fixed_size_list(values.type):
            width = values.type.list_size
        else:
            offsets = values.offsets.to_numpy()
            lengths = np.diff(offsets)
            width = int(lengths[0]) if len(lengths) else 0
            if len(lengths) and (lengths != width).any():
                found = sorted(set(np.unique(lengths).tolist()))[:5]
                raise SchemaError(
                    f"Column {name!r} has arrays of different lengths {found} at nesting "
                    f"level {len(shape)}; every row must have the same shape. Pad or "
                    "truncate the arrays, or filter with F.size(col) == n."
                )
        shape.append(width)
        values = values.flatten()
    return _numeric_view(values, dtype, name).reshape(shape)


def vector_to_numpy(arr: pa.StructArray, name: str = "features", dtype=np.float32) -> np.ndarray:
    """Turn Spark ML vectors (dense and sparse, mixed) into an ``(n, size)`` array.

    Example:
        >>> import pyarrow as pa
        >>> t = pa.struct([("type", pa.int8()), ("size", pa.int32()),
        ...                ("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float64()))])
        >>> v = pa.array([{"type": 1, "size": None, "indices": None, "values": [1.0, 2.0, 0.0]},
        ...               {"type": 0, "size": 3, "indices": [2], "values": [5.0]}], t)
        >>> vector_to_numpy(v).tolist()
        [[1.0, 2.0, 0.0], [0.0, 0.0, 5.0]]
    """
    _check_no_nulls(arr, name)
    n = len(arr)
    kind = arr.field("type").to_numpy(zero_copy_only=False)
    values_list = arr.field("values")
    offsets = values_list.offsets.to_numpy()
    lengths = np.diff(offsets)
    values = values_list.flatten().to_numpy(zero_copy_only=False)
    dense = kind == 1
    sizes = np.where(dense, lengths, arr.field("size").fill_null(0).to_numpy(zero_copy_only=False))
    if n and (sizes != sizes[0]).any():
        found = sorted(set(np.unique(sizes).tolist()))[:5]
        raise SchemaError(
            f"Column {name!r} has vectors of different sizes {found}; every row must "
            "have the same size."
        )
    size = int(sizes[0]) if n else 0
    if dense.all():
        return values.astype(dtype, copy=False).reshape(n, size)
    rows = np.repeat(np.arange(n), lengths)
    position = np.arange(len(values)) - np.repeat(offsets[:-1] - offsets[0], lengths)
    if not dense.all():
        indices = arr.field("indices").flatten().to_numpy(zero_copy_only=False)
        sparse_elem = ~np.repeat(dense, lengths)
        position = position.copy()
        position[sparse_elem] = indices
    out = np.zeros((n, size), dtype=dtype)
    out[rows, position] = values
    return out


def column_to_numpy(arr: pa.Array, name: str, dtype=np.float32) -> np.ndarray:
    """Convert any supported Arrow column to a numpy array with the row first.

    Scalars give ``(n,)``, lists and vectors ``(n, ...)``.

    Example:
        >>> import pyarrow as pa
        >>> column_to_numpy(pa.array([1, 2, 3]), "x").tolist()
        [1.0, 2.0, 3.0]
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if is_vector_struct(arr.type):
        return vector_to_numpy(arr, name, dtype)
    if _is_list(arr.type):
        return list_to_numpy(arr, name, dtype)
    return _numeric_view(arr, dtype, name)


def _stored_dtype(arrow_type: pa.DataType) -> np.dtype:
    """The numpy dtype of the numbers a column holds, so they can be viewed, not cast."""
    if is_vector_struct(arrow_type):
        return np.dtype(np.float64)
    while _is_list(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        return np.dtype(arrow_type.to_pandas_dtype())
    # booleans are bit-packed (no view possible); anything else fails in _numeric_view
    return np.dtype(np.float32)


def _row_shape(shape: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if shape is None else tuple(int(s) for s in shape)


def feature_views(
    columns: Sequence[pa.Array],
    shape: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Check a batch's feature columns and view their numbers without converting them.

    The arrays keep the dtype Arrow stores, so for dense lists, dense vectors and
    numbers without nulls they are views of the Arrow buffers: a batch that lives in
    a memory-mapped file stays on disk until :func:`take_features` copies the rows
    it needs. One column gives one array of shape ``(n, *shape)``; several numeric
    columns give one ``(n,)`` array each.

    Args:
        columns: the Arrow arrays, all of the same length.
        shape: the per-row tensor shape, or ``None`` to keep what the data has.
        names: column names for error messages.

    Returns:
        One numpy array per column, row first.

    Raises:
        SchemaError: on nulls, ragged rows, non-numeric columns, or a ``shape`` that
            does not hold a row's values.

    Example:
        >>> import pyarrow as pa
        >>> [v.dtype.name for v in feature_views([pa.array([1.0]), pa.array([2], pa.int32())])]
        ['float64', 'int32']
    """
    names = list(names or [f"col{i}" for i in range(len(columns))])
    shape = _row_shape(shape)
    views = [column_to_numpy(col, name, _stored_dtype(col.type))
             for col, name in zip(columns, names)]
    if len(views) == 1:
        if views[0].ndim == 1:
            views[0] = views[0].reshape(-1, 1)
        per_row = int(np.prod(views[0].shape[1:]))
    else:
        for view, name in zip(views, names):
            if view.ndim != 1:
                raise SchemaError(
                    f"Column {name!r} is not a number; when several feature columns are "
                    "given each must be numeric. Use one array/vector column instead."
                )
        per_row = len(views)
    if shape is not None:
        if int(np.prod(shape)) != per_row:
            raise SchemaError(
                f"featureShape={list(shape)} needs {int(np.prod(shape))} values per row "
                f"but columns {names} hold {per_row}."
            )
        if len(views) == 1:
            views[0] = views[0].reshape((len(views[0]), *shape))
    return views


def take_features(views: Sequence[np.ndarray], rows, shape: Sequence[int] | None = None
                  ) -> np.ndarray:
    """Copy ``rows`` of :func:`feature_views` into one float32 array ``(len(rows), *shape)``.

    Only the selected rows are read and converted, so gathering a batch from a
    memory-mapped shard touches that batch's pages and nothing else.

    Args:
        views: what :func:`feature_views` returned for one batch.
        rows: an index array or a slice into the batch.
        shape: the same per-row shape given to :func:`feature_views`.

    Example:
        >>> import pyarrow as pa
        >>> views = feature_views([pa.array([1, 2, 3]), pa.array([4.0, 5.0, 6.0])])
        >>> take_features(views, [2, 0]).tolist()
        [[3.0, 6.0], [1.0, 4.0]]
    """
    if len(views) == 1:
        return views[0][rows].astype(np.float32, copy=False)
    # cast each column on its own: stacking int64 with float32 would go through float64
    out = np.stack([v[rows].astype(np.float32, copy=False) for v in views], axis=1)
    shape = _row_shape(shape)
    return out if shape is None else out.reshape((len(out), *shape))


def features_to_numpy(
    columns: Sequence[pa.Array],
    shape: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """Build the feature array of a batch from one or several Arrow columns.

    One column may be a vector, a (nested) list or a number; several columns must
    each be a number (as after ``VectorAssembler`` is skipped) and are stacked
    side by side. ``shape`` reshapes each row, e.g. ``(1, 8, 8)`` for images.

    Args:
        columns: the Arrow arrays, all of the same length.
        shape: the per-row tensor shape, or ``None`` to keep what the data has.
        names: column names for error messages.

    Returns:
        A float32 array of shape ``(n, *shape)``; a view of the Arrow buffer when one
        dense float32 column is given.

    Raises:
        SchemaError: if a row cannot take ``shape`` or a column is unusable.

    Example:
        >>> import pyarrow as pa
        >>> features_to_numpy([pa.array([1.0, 2.0]), pa.array([3, 4])]).tolist()
        [[1.0, 3.0], [2.0, 4.0]]
    """
    return take_features(feature_views(columns, shape, names), slice(None), shape)


def labels_to_numpy(arr: pa.Array, name: str, integer: bool) -> np.ndarray:
    """Convert a label column: class ids as int64, targets as float32.

    Example:
        >>> import pyarrow as pa
        >>> labels_to_numpy(pa.array([0.0, 2.0]), "label", integer=True).tolist()
        [0, 2]
    """
    return column_to_numpy(arr, name, np.int64 if integer else np.float32)
