"""A rank's local copy of its partition: an Arrow IPC file, memory-mapped.

The Spark query behind a training DataFrame runs once. Each rank streams its
record batches to an Arrow IPC file on the executor's local disk, then maps that
file into memory. Features and labels are numpy views into the mapping, so a shard
larger than RAM is paged in by the OS as batches are gathered, and later epochs
re-read the file instead of re-running the query.

Nothing proportional to the shard's bytes is held in process memory: the write
streams one record batch at a time, the views keep the dtype the file stores
(conversion to float32 happens per gathered batch), and the mapping is advised
as randomly accessed, so a shuffled epoch over a shard bigger than the memory
the rank may use reads each needed page once instead of a readahead window
around it. Per-row bookkeeping (order, validation flags, indices) is a few bytes
per row. A batch of rows spread over the file's record batches is gathered with
one vectorised index into the mapping (not one copy per record batch), so a step
costs the same whether the partition arrived in 5 or 500 Arrow batches.

Example:
    >>> import pyarrow as pa, tempfile
    >>> b = pa.record_batch({"f": pa.array([[1.0], [2.0]], pa.list_(pa.float32())),
    ...                      "y": pa.array([0, 1])})
    >>> with tempfile.TemporaryDirectory() as d:
    ...     shard = LocalShard.write([b], d, ShardLayout(("f",), "y", True))
    ...     print(shard.rows, shard.features([1, 0]).tolist())
    ...     shard.close()
    2 [[2.0], [1.0]]
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sparkdl.data.arrow_tensors import feature_views, labels_to_numpy, take_features
from sparkdl.data.inputs import InputRows, InputSpec, batch_columns

SHARD_FILE = "shard.arrow"


@dataclass(frozen=True)
class ShardLayout:
    """Which columns of the shard hold what.

    Attributes:
        feature_cols: feature column names (one array/vector column, or several numbers).
        label_col: the label column, or ``None`` when scoring.
        integer_labels: labels are class ids (int64) rather than float targets.
        feature_shape: per-row tensor shape, or ``None`` for what the data has.
        validation_col: a boolean column marking validation rows, or ``None``.
        order_col: an integer column giving each row a stable position. Spark's
            shuffle delivers a partition's rows in fetch order, which varies from
            run to run; visiting rows by this key makes runs repeatable.
        inputs: one entry per argument of ``forward`` (``inputCols``, ragged columns
            padded); ``None``: ``feature_cols`` stacked into one float32 tensor.
        weight_col: a float column of per-row loss weights, or ``None``.
        label_cols: a multi-output network's label columns (instead of
            ``label_col``), and ``integer_label_cols`` which of them hold class ids.
        train_transform: applied to each image of image inputs in training batches.
        eval_transform: applied to each image of image inputs in validation batches.
    """

    feature_cols: tuple[str, ...]
    label_col: str | None
    integer_labels: bool
    feature_shape: tuple[int, ...] | None = None
    validation_col: str | None = None
    order_col: str | None = None
    inputs: tuple[InputSpec, ...] | None = None
    weight_col: str | None = None
    label_cols: tuple[str, ...] | None = None
    integer_label_cols: tuple[bool, ...] = ()
    train_transform: Callable | None = None
    eval_transform: Callable | None = None


class LocalShard:
    """Memory-mapped rows of one rank, gathered into batches by index."""

    def __init__(self, path: str, layout: ShardLayout):
        self.path = path
        self.layout = layout
        self._source = pa.memory_map(path, "r")
        mapping = _whole_mapping(self._source)
        _advise_random(mapping)
        table = pa.ipc.open_file(self._source).read_all()
        # one entry per non-empty batch: the feature columns as views of the mapping
        self._features: list[list[np.ndarray]] = []
        self._labels: list[np.ndarray] = []
        validation: list[np.ndarray] = []
        order: list[np.ndarray] = []
        weights: list[np.ndarray] = []
        targets: list[list[np.ndarray]] = [[] for _ in layout.label_cols or ()]
        sizes: list[int] = []
        input_columns: list[list[pa.Array]] = []
        for batch in table.to_batches():
            if batch.num_rows == 0:
                continue
            sizes.append(batch.num_rows)
            if layout.inputs is not None:
                input_columns.append(batch_columns(batch, layout.inputs))
            else:
                self._features.append(feature_views(
                    [batch.column(c) for c in layout.feature_cols],
                    layout.feature_shape, layout.feature_cols))
            for i, col in enumerate(layout.label_cols or ()):
                targets[i].append(labels_to_numpy(batch.column(col), col,
                                                  layout.integer_label_cols[i]))
            if layout.weight_col is not None:
                weights.append(labels_to_numpy(batch.column(layout.weight_col),
                                               layout.weight_col, False))
            if layout.label_col is not None:
                self._labels.append(
                    labels_to_numpy(batch.column(layout.label_col), layout.label_col,
                                    layout.integer_labels)
                )
            if layout.validation_col is not None:
                validation.append(
                    batch.column(layout.validation_col).to_numpy(zero_copy_only=False)
                )
            if layout.order_col is not None:
                order.append(batch.column(layout.order_col).to_numpy(zero_copy_only=False))
        self._inputs = InputRows.of(input_columns, layout.inputs) \
            if layout.inputs is not None else None
        self._weights = np.concatenate(weights) if weights else None
        self._targets = [np.concatenate(t) for t in targets] if sizes else []
        self._starts = np.cumsum([0, *sizes])
        self.rows = int(self._starts[-1])
        is_val = (np.concatenate(validation).astype(bool) if validation
                  else np.zeros(self.rows, dtype=bool))
        base = (np.argsort(np.concatenate(order), kind="stable") if order
                else np.arange(self.rows))
        self.train_index = base[~is_val[base]]
        self.validation_index = base[is_val[base]]
        # one index into the mapping per step where every batch's rows lie in it alike
        self._feature_rows = (_MappedRows.of(mapping, [f[0] for f in self._features],
                                             self._starts)
                              if len(layout.feature_cols) == 1 and self._features else None)
        self._label_rows = _MappedRows.of(mapping, self._labels, self._starts)

    @classmethod
    def write(cls, batches: Iterable[pa.RecordBatch], directory: str,
              layout: ShardLayout) -> LocalShard:
        """Stream ``batches`` to an IPC file in ``directory`` and map it."""
        path = os.path.join(directory, SHARD_FILE)
        writer = None
        with pa.OSFile(path, "wb") as sink:
            for batch in batches:
                if writer is None:
                    writer = pa.ipc.new_file(sink, batch.schema)
                writer.write_batch(batch)
            if writer is None:
                # An empty partition still needs a readable (empty) file.
                return cls._empty(path, layout)
            writer.close()
        return cls(path, layout)

    @classmethod
    def _empty(cls, path: str, layout: ShardLayout) -> LocalShard:
        names = [i.column for i in layout.inputs] if layout.inputs is not None \
            else layout.feature_cols
        schema = pa.schema([(c, pa.list_(pa.float32())) for c in names])
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, schema):
            pass
        return cls(path, layout)

    def _take_features(self, views: list[np.ndarray], rows) -> np.ndarray:
        return take_features(views, rows, self.layout.feature_shape)

    def _gather(self, parts: Sequence, index: np.ndarray,
                take: Callable[[object, np.ndarray], np.ndarray]) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        if len(parts) == 1:
            return take(parts[0], index)
        chunk = np.searchsorted(self._starts, index, side="right") - 1
        out = None
        for c in np.unique(chunk):
            hit = chunk == c
            block = take(parts[c], index[hit] - self._starts[c])
            if out is None:
                out = np.empty((len(index), *block.shape[1:]), dtype=block.dtype)
            out[hit] = block
        return out if out is not None else take(parts[0], index)

    def features(self, index: Sequence[int]) -> np.ndarray:
        """Feature rows at ``index`` as float32 (a fresh array: safe to hand to torch)."""
        if self._feature_rows is not None:
            return self._feature_rows.take(index).astype(np.float32, copy=False)
        return self._gather(self._features, np.asarray(index), self._take_features)

    def arguments(self, index: Sequence[int], training: bool = True) -> list[np.ndarray]:
        """What the network's ``forward`` takes for rows ``index``: the features, or
        with ``inputs`` one array per input followed by each ragged input's lengths.
        Images go through the layout's training (or, ``training=False``, validation)
        transform."""
        if self._inputs is not None:
            layout = self.layout
            return self._inputs.arguments(
                index, layout.train_transform if training else layout.eval_transform)
        return [self.features(index)]

    def input_lengths(self, index: Sequence[int]) -> np.ndarray | None:
        """The first ragged input's lengths at ``index`` (bucketing sorts by it)."""
        if self._inputs is None:
            return None
        lengths = self._inputs.lengths(index)
        return lengths[0] if lengths else None

    def sample_weights(self, index: Sequence[int]) -> np.ndarray | None:
        """Per-row loss weights at ``index``, or ``None`` without ``weight_col``."""
        if self.layout.weight_col is None:
            return None
        index = np.asarray(index, dtype=np.int64)
        if self._weights is None:  # an empty shard
            return np.zeros(len(index), dtype=np.float32)
        return self._weights[index]

    def targets(self, index: Sequence[int]) -> list[np.ndarray]:
        """The label rows at ``index``: one array per label column."""
        if self.layout.label_cols is None:
            return [self.labels(index)]
        index = np.asarray(index, dtype=np.int64)
        return [t[index] for t in self._targets]

    def labels(self, index: Sequence[int]) -> np.ndarray:
        """Label rows at ``index``."""
        if self._label_rows is not None:
            return self._label_rows.take(index)
        return self._gather(self._labels, np.asarray(index), lambda part, rows: part[rows])

    def close(self) -> None:
        """Drop the views and unmap the file."""
        self._features.clear()
        self._labels.clear()
        self._feature_rows = self._label_rows = None
        self._source.close()


class _MappedRows:
    """Rows of per-record-batch arrays that all lie in one mapping, gathered at once.

    Each batch's array holds rows of the same dtype and shape, back to back, at
    some offset in the file. Over the whole mapping, viewed as that dtype, an
    overlapping strided view makes "row k" the ``row_size`` values starting at
    value ``k``; a shard row ``r`` of batch ``c`` is then row
    ``first[c] + (r - starts[c]) * row_size`` of it, and a batch of rows from many
    record batches is one fancy index.
    """

    def __init__(self, rows: np.ndarray, first: np.ndarray, starts: np.ndarray,
                 row_shape: tuple[int, ...]):
        self.rows, self.first, self.starts, self.row_shape = rows, first, starts, row_shape
        self.row_size = rows.shape[1]

    @classmethod
    def of(cls, mapping: np.ndarray, parts: Sequence[np.ndarray],
           starts: np.ndarray) -> _MappedRows | None:
        """The gatherer for ``parts``, or ``None`` if one of them is not a plain view."""
        if not parts or not mapping.size:
            return None
        dtype, row_shape = parts[0].dtype, parts[0].shape[1:]
        size = dtype.itemsize
        first = []
        for part in parts:
            offset = part.__array_interface__["data"][0] - mapping.ctypes.data
            if (part.dtype != dtype or part.shape[1:] != row_shape
                    or not part.flags.c_contiguous or offset < 0 or offset % size
                    or offset + part.nbytes > mapping.nbytes):
                return None  # converted on load (e.g. sparse vectors): gather per batch
            first.append(offset // size)
        values = mapping[:mapping.size - mapping.size % size].view(dtype)
        row_size = int(np.prod(row_shape, dtype=np.int64))
        rows = np.lib.stride_tricks.as_strided(
            values, shape=(len(values) - row_size + 1, row_size), strides=(size, size),
            writeable=False)
        return cls(rows, np.asarray(first, dtype=np.int64), starts, row_shape)

    def take(self, index: Sequence[int]) -> np.ndarray:
        """Rows at shard positions ``index``, a fresh array."""
        index = np.asarray(index, dtype=np.int64)
        batch = np.searchsorted(self.starts, index, side="right") - 1
        at = self.first[batch] + (index - self.starts[batch]) * self.row_size
        if self.row_shape == ():
            return self.rows[at, 0]
        out = self.rows[at]
        return out if self.row_shape == (self.row_size,) else \
            out.reshape((len(index), *self.row_shape))


def _whole_mapping(source: pa.MemoryMappedFile) -> np.ndarray:
    """The whole memory-mapped file as a read-only byte array (no copy)."""
    source.seek(0)
    buffer = source.read_buffer(source.size())  # zero-copy: a slice of the mapping
    source.seek(0)
    return np.frombuffer(buffer, dtype=np.uint8)


def _advise_random(mapping: np.ndarray) -> None:
    """Advise the kernel that ``mapping`` is read in random order.

    A page fault on a mapped file normally reads a readahead window (128 KiB or
    more) around the touched page. A shuffled epoch touches rows all over the
    file, so when the shard is larger than the memory the rank may use, each
    window evicts pages still needed and the epoch reads the file many times over.
    Measured with ``tests/integration/test_spill.py``'s setup (512 MB of 4 KiB
    rows, 192 MiB for the run): one epoch took 22 s with this advice and had not
    finished after 10 minutes without it. Pages already in the page cache are
    mapped as before, so shards that fit in memory do not pay for it.
    """
    advice = getattr(mmap, "MADV_RANDOM", None)
    if not mapping.size or advice is None:
        return
    address = mapping.ctypes.data
    start = address - address % mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(mapping.size + address - start), advice)
