"""The tensors a network is called with: one per input column, ragged ones padded.

With ``inputCols`` (or ``padding``) each column is its own argument of
``forward``, in order, with its own shape and dtype: integer columns (token ids)
arrive as int64, everything else as float32. A ragged column (rows of different
lengths, allowed when ``padding`` is set) is padded per batch to that batch's
longest row, cut at ``maxLength``; its lengths (int64, ``(batch,)``) follow all
inputs, so a network with one ragged input is called as ``forward(x, lengths)``
and ``pack_padded_sequence``, masks and ``sparkdl.nn`` sequence layers work.

Columns stay as Arrow stores them (views of the buffers, memory-mapped in a
rank's shard) until a batch's rows are gathered; padding is one vectorised fill
per record batch, not a Python loop over rows.

Example:
    >>> import pyarrow as pa
    >>> col = pa.array([[5, 6, 7], [8]], pa.list_(pa.int64()))
    >>> spec = InputSpec("tokens", "int64", (), ragged=True)
    >>> rows = InputRows.of([[col]], [spec])
    >>> padded, lengths = rows.take([1, 0])
    >>> padded[0].tolist(), lengths[0].tolist()
    ([[8, 0, 0], [5, 6, 7]], [1, 3])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sparkdl.data.arrow_tensors import column_to_numpy
from sparkdl.errors import ConfigError, SchemaError

DTYPES = {"float32": np.float32, "int64": np.int64}
_PADDING_KEYS = {"value", "maxLength", "bucketing", "cols"}


@dataclass(frozen=True)
class Padding:
    """How ragged columns are padded (the ``padding`` Param).

    Attributes:
        value: the number padded positions hold.
        max_length: rows longer than this keep their first ``max_length`` elements;
            ``None``: no limit.
        bucketing: within each pool of batches of a rank's epoch order, group rows
            of similar length into the same batch (less padding; the order stays a
            function of the seed and epoch).
        cols: the array input columns that are sequences (padded, with lengths);
            ``None``: every array input column.
    """

    value: float = 0.0
    max_length: int | None = None
    bucketing: bool = False
    cols: tuple[str, ...] | None = None

    def pads(self, column: str) -> bool:
        """Whether ``column`` (an array input) is a padded sequence."""
        return self.cols is None or column in self.cols

    @classmethod
    def from_param(cls, value: dict | None) -> Padding | None:
        """The ``padding`` Param as a config; ``None``/``{}``: ragged columns refused.

        Raises:
            ConfigError: for unknown keys or bad values.

        Example:
            >>> Padding.from_param({"value": 0, "maxLength": 256})
            Padding(value=0.0, max_length=256, bucketing=False, cols=None)
        """
        if not value:
            return None
        unknown = set(value) - _PADDING_KEYS
        if unknown:
            raise ConfigError(f"padding has unknown key(s) {sorted(unknown)}. Valid: "
                              f"{sorted(_PADDING_KEYS)}. Received: padding={value!r}")
        pad = value.get("value", 0)
        if isinstance(pad, bool) or not isinstance(pad, (int, float)):
            raise ConfigError(f"padding value must be a number. Received: value={pad!r}")
        length = value.get("maxLength")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int)
                                   or length < 1):
            raise ConfigError("padding maxLength must be a positive integer (or absent for "
                              f"no limit). Received: maxLength={length!r}")
        cols = value.get("cols")
        if cols is not None and (isinstance(cols, str) or not all(
                isinstance(c, str) for c in cols)):
            raise ConfigError(f"padding cols must be a list of column names. "
                              f"Received: cols={cols!r}")
        return cls(float(pad), length, bool(value.get("bucketing", False)),
                   tuple(cols) if cols is not None else None)


@dataclass(frozen=True)
class InputSpec:
    """One argument of ``forward``.

    Attributes:
        column: the Arrow column holding it.
        dtype: ``"float32"`` or ``"int64"``.
        shape: per-row shape; for a ragged column, the shape of each element of a
            row (``()`` for token ids, ``(features,)`` for vectors per step);
            ``None``: what the data has (scoring).
        ragged: rows have different lengths and are padded per batch.
        padding: how; set for ragged columns.
        image: ``"binary"`` (encoded files) or ``"struct"`` (Spark's ``image``
            source) for an image column, decoded on the worker into float32
            ``(batch, C, H, W)`` (see :mod:`sparkdl.data.images`); ``shape`` is then
            the per-image shape after the transform.
        origin: for a binary image column, the column naming each row's file
            (binaryFile's ``path``), for errors; ``None``: not known.
    """

    column: str
    dtype: str
    shape: tuple[int, ...] | None = None
    ragged: bool = False
    padding: Padding | None = None
    image: str | None = None
    origin: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        """The user's column name, for messages (``column`` may be a fit's temporary
        name for it)."""
        return self.name or self.column

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"input dtype must be one of {sorted(DTYPES)}. "
                              f"Received: {self.dtype!r}")

    def dummy(self, rows: int = 2, length: int = 3) -> np.ndarray:
        """Zeros shaped like ``rows`` rows (ragged: padded to ``length``), for probing."""
        lead = (rows, length) if self.ragged else (rows,)
        return np.zeros((*lead, *(self.shape or ())), dtype=DTYPES[self.dtype])


class _Ragged:
    """A ragged column of one record batch: offsets into a flat array of elements."""

    def __init__(self, arr: pa.Array, spec: InputSpec):
        if arr.null_count:
            raise SchemaError(f"Column {spec.label!r} has {arr.null_count} null value(s) "
                              "in this batch; drop or fill them before training or scoring.")
        offsets = arr.offsets.to_numpy().astype(np.int64)
        self.starts = offsets[:-1]
        self.lengths = np.diff(offsets)
        flat = arr.flatten()  # honours the array's own offset (a sliced batch)
        base = int(offsets[0])
        self.starts = self.starts - base
        values = column_to_numpy(flat, spec.label, DTYPES[spec.dtype]) if len(flat) else \
            np.zeros((0, *(spec.shape or ())), dtype=DTYPES[spec.dtype])
        if spec.shape is not None and values.shape[1:] != spec.shape:
            raise SchemaError(f"Column {spec.label!r} has elements of shape "
                              f"{list(values.shape[1:])}, expected {list(spec.shape)}.")
        self.values = values

    def fill(self, out: np.ndarray, rows: np.ndarray, lengths: np.ndarray) -> None:
        width = out.shape[1]
        steps = np.arange(width)
        valid = steps[None, :] < lengths[:, None]
        positions = self.starts[rows][:, None] + steps[None, :]
        out[valid] = self.values[positions[valid]]


class InputRows:
    """Every input of a set of record batches, gathered and padded by row index."""

    def __init__(self, parts: list[list[object]], specs: Sequence[InputSpec],
                 starts: np.ndarray):
        self.parts, self.specs, self.starts = parts, tuple(specs), starts
        self._lengths = [(np.concatenate([p[i].lengths for p in parts]) if parts
                          else np.zeros(0, dtype=np.int64)) if s.ragged else None
                         for i, s in enumerate(self.specs)]

    @classmethod
    def of(cls, batches: Sequence[Sequence[pa.Array]], specs: Sequence[InputSpec]
           ) -> InputRows:
        """Wrap the input columns of each batch (one list of arrays per batch, in the
        order of ``specs``)."""
        parts = [[_Ragged(col, spec) if spec.ragged else _image_column(col, spec)
                  if spec.image else _dense(col, spec)
                  for col, spec in zip(columns, specs)] for columns in batches]
        sizes = [len(p[0].lengths) if specs[0].ragged else len(p[0]) for p in parts]
        return cls(parts, specs, np.cumsum([0, *sizes]))

    @property
    def rows(self) -> int:
        return int(self.starts[-1])

    def lengths(self, index: Sequence[int]) -> list[np.ndarray]:
        """Per ragged input, the lengths of rows ``index`` after ``maxLength``."""
        out = []
        for spec, lengths in zip(self.specs, self._lengths):
            if spec.ragged:
                found = lengths[np.asarray(index, dtype=np.int64)]
                limit = spec.padding.max_length if spec.padding else None
                out.append(np.minimum(found, limit) if limit else found)
        return out

    def take(self, index: Sequence[int], transform=None
             ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Rows ``index``: one array per input (ragged ones padded, images decoded and
        ``transform``-ed), and the lengths of each ragged input (int64)."""
        index = np.asarray(index, dtype=np.int64)
        chunk = np.searchsorted(self.starts, index, side="right") - 1
        chunks = np.unique(chunk)
        lengths = iter(self.lengths(index))
        arrays, all_lengths = [], []
        for i, spec in enumerate(self.specs):
            dtype = DTYPES[spec.dtype]
            if spec.ragged:
                found = next(lengths)
                if len(found) and not found.min():
                    raise SchemaError(
                        f"Column {spec.label!r} has {int((found == 0).sum())} empty array(s) "
                        "in this batch: a padded sequence needs at least one element per row. "
                        f"Drop them first (df.filter(F.size({spec.label!r}) > 0)).")
                width = int(found.max()) if len(found) else 0
                inner = spec.shape if spec.shape is not None else \
                    self.parts[chunks[0]][i].values.shape[1:]
                pad = spec.padding.value if spec.padding else 0
                out = np.full((len(index), max(width, 1), *inner), pad, dtype=dtype)
                for c in chunks:
                    hit = chunk == c
                    rows = index[hit] - self.starts[c]
                    if len(chunks) == 1:
                        self.parts[c][i].fill(out, rows, found)
                    else:
                        block = np.full((len(rows), *out.shape[1:]), pad, out.dtype)
                        self.parts[c][i].fill(block, rows, found[hit])
                        out[hit] = block
                arrays.append(out)
                all_lengths.append(found.astype(np.int64))
            elif spec.image:
                from sparkdl.data.images import prepare_images

                images = [self.parts[c][i].decode(int(row - self.starts[c]))
                          for c, row in zip(chunk, index)]
                arrays.append(prepare_images(images, transform, spec.label, spec.shape))
            else:
                out = None
                for c in chunks:
                    hit = chunk == c
                    block = self.parts[c][i][index[hit] - self.starts[c]]
                    if len(chunks) == 1:
                        out = block.astype(dtype, copy=True)
                        break
                    if out is None:
                        out = np.empty((len(index), *block.shape[1:]), dtype=dtype)
                    out[hit] = block
                arrays.append(out if out is not None
                              else np.zeros((0, *(spec.shape or ())), dtype=dtype))
        return arrays, all_lengths

    def arguments(self, index: Sequence[int], transform=None) -> list[np.ndarray]:
        """What ``forward`` is called with: the inputs, then each ragged input's lengths.

        ``transform``: applied to each image of image columns (training's or scoring's).
        """
        arrays, lengths = self.take(index, transform)
        return arrays + lengths


def batch_columns(batch: pa.RecordBatch, specs: Sequence[InputSpec]) -> list:
    """The columns of ``batch`` that :meth:`InputRows.of` takes for ``specs``: an image
    column with an ``origin`` comes with it, as ``(images, origins)``."""
    return [(batch.column(s.column), batch.column(s.origin)) if s.image and s.origin
            else batch.column(s.column) for s in specs]


def _image_column(col, spec: InputSpec):
    from sparkdl.data.images import ImageColumn

    images, origins = col if isinstance(col, tuple) else (col, None)
    return ImageColumn(images, spec.label, origins)


def _dense(arr: pa.Array, spec: InputSpec) -> np.ndarray:
    values = column_to_numpy(arr, spec.label, DTYPES[spec.dtype])
    if values.ndim == 1:  # a number per row: (rows, 1), as one numeric featuresCol gives
        values = values.reshape(-1, 1)
    if spec.shape is not None and values.shape[1:] != spec.shape:
        if int(np.prod(values.shape[1:])) != int(np.prod(spec.shape)):
            raise SchemaError(f"Column {spec.label!r} holds rows of shape "
                              f"{list(values.shape[1:])}, expected {list(spec.shape)}.")
        values = values.reshape((len(values), *spec.shape))
    return values
