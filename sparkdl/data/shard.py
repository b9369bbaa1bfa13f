"""A rank's local copy of its partition: an Arrow IPC file, memory-mapped.

The Spark query behind a training DataFrame runs once. Each rank streams its
record batches to an Arrow IPC file on the executor's local disk, then maps that
file into memory. Features and labels are numpy views into the mapping, so a shard
larger than RAM is paged in by the OS as batches are gathered, and later epochs
re-read the file instead of re-running the query.

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

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sparkdl.data.arrow_tensors import features_to_numpy, labels_to_numpy

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
    """

    feature_cols: tuple[str, ...]
    label_col: str | None
    integer_labels: bool
    feature_shape: tuple[int, ...] | None = None
    validation_col: str | None = None
    order_col: str | None = None


class LocalShard:
    """Memory-mapped rows of one rank, gathered into batches by index."""

    def __init__(self, path: str, layout: ShardLayout):
        self.path = path
        self.layout = layout
        self._source = pa.memory_map(path, "r")
        table = pa.ipc.open_file(self._source).read_all()
        self._features: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        validation: list[np.ndarray] = []
        order: list[np.ndarray] = []
        for batch in table.to_batches():
            if batch.num_rows == 0:
                continue
            self._features.append(
                features_to_numpy(
                    [batch.column(c) for c in layout.feature_cols],
                    layout.feature_shape,
                    layout.feature_cols,
                )
            )
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
        sizes = [len(f) for f in self._features]
        self._starts = np.cumsum([0, *sizes])
        self.rows = int(self._starts[-1])
        is_val = (np.concatenate(validation).astype(bool) if validation
                  else np.zeros(self.rows, dtype=bool))
        base = (np.argsort(np.concatenate(order), kind="stable") if order
                else np.arange(self.rows))
        self.train_index = base[~is_val[base]]
        self.validation_index = base[is_val[base]]

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
        schema = pa.schema([(c, pa.list_(pa.float32())) for c in layout.feature_cols])
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, schema):
            pass
        return cls(path, layout)

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        """Per-row feature shape, or ``None`` for an empty shard."""
        return self._features[0].shape[1:] if self._features else None

    def _gather(self, parts: Sequence[np.ndarray], index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        if len(parts) == 1:
            return parts[0][index]
        chunk = np.searchsorted(self._starts, index, side="right") - 1
        out = np.empty((len(index), *parts[0].shape[1:]), dtype=parts[0].dtype)
        for c in np.unique(chunk):
            hit = chunk == c
            out[hit] = parts[c][index[hit] - self._starts[c]]
        return out

    def features(self, index: Sequence[int]) -> np.ndarray:
        """Feature rows at ``index`` (a fresh array: safe to hand to torch)."""
        return self._gather(self._features, np.asarray(index))

    def labels(self, index: Sequence[int]) -> np.ndarray:
        """Label rows at ``index``."""
        return self._gather(self._labels, np.asarray(index))

    def close(self) -> None:
        """Drop the views and unmap the file."""
        self._features.clear()
        self._labels.clear()
        self._source.close()
