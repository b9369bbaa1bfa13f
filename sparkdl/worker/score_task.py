"""Scoring inside ``mapInArrow``: the network is loaded once per Python worker.

Spark reuses Python workers across tasks (``spark.python.worker.reuse``), so the
module cache below outlives a task: the first batch of a worker deserialises the
shared weights (a broadcast, or see :mod:`sparkdl.worker.model_payload`), every
later batch and task on that worker reuses them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

_MODELS: OrderedDict = OrderedDict()
_MAX_CACHED = 4


@dataclass(frozen=True)
class ScoreSpec:
    """What a scoring task needs besides the broadcast network.

    Attributes:
        model_key: identifies the network (uid and weights digest) in the cache.
        feature_cols: the prepared float feature columns to read.
        feature_shape: per-row tensor shape, or ``None``.
        keep_cols: input columns passed through to the output.
        task: ``multiclass``, ``binary`` or ``regression``.
        batch_size: rows per forward pass.
        prediction_col: output column for predictions.
        probability_col: output column for probabilities, or ``""``.
        raw_col: output column for raw outputs, or ``""``.
        scalar_prediction: the prediction is one number per row.
        version_col: output column for ``model_key`` (the model version), or ``""``.
        inputs: with ``inputCols``, one :class:`~sparkdl.data.inputs.InputSpec` per
            argument of ``forward`` (ragged columns padded per forward pass);
            ``None``: ``feature_cols`` stacked into one tensor.
        transform: applied to each image of image inputs (``scoreTransform``).
    """

    model_key: str
    feature_cols: tuple[str, ...]
    feature_shape: tuple[int, ...] | None
    keep_cols: tuple[str, ...]
    task: str
    batch_size: int
    prediction_col: str
    probability_col: str
    raw_col: str
    scalar_prediction: bool
    version_col: str = ""
    inputs: tuple | None = None
    heads: tuple | None = None
    transform: Callable | None = None


def _module(spec: ScoreSpec, payload, device):
    module = _MODELS.get(spec.model_key)
    if module is None:
        from sparkdl.architecture import Architecture, weights_from_bytes

        kind, arch, weights = payload.value
        module = Architecture(kind, arch).build(weights_from_bytes(weights)).to(device).eval()
        _MODELS[spec.model_key] = module
        while len(_MODELS) > _MAX_CACHED:
            _MODELS.popitem(last=False)
    _MODELS.move_to_end(spec.model_key)
    return module


def _list_column(values: np.ndarray) -> pa.Array:
    rows = values.reshape(len(values), -1).astype(np.float64, copy=False)
    offsets = np.arange(0, rows.size + 1, max(rows.shape[1], 1), dtype=np.int32)
    if rows.shape[1] == 0:
        offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(rows.reshape(-1)))


def outputs_to_columns(spec: ScoreSpec, out: np.ndarray) -> dict[str, pa.Array]:
    """Turn raw network outputs ``(n, ...)`` into prediction/probability/raw columns.

    Example:
        >>> s = ScoreSpec("k", ("f",), None, (), "multiclass", 8, "p", "prob", "", True)
        >>> cols = outputs_to_columns(s, np.array([[0.0, 2.0], [3.0, 1.0]], np.float32))
        >>> cols["p"].to_pylist()
        [1.0, 0.0]
    """
    n = len(out)
    flat = out.reshape(n, -1).astype(np.float64)
    cols: dict[str, pa.Array] = {}
    if spec.task == "multiclass":
        shifted = np.exp(flat - flat.max(axis=1, keepdims=True))
        prob = shifted / shifted.sum(axis=1, keepdims=True)
        cols[spec.prediction_col] = pa.array(flat.argmax(axis=1).astype(np.float64))
    elif spec.task == "binary":
        p1 = 1.0 / (1.0 + np.exp(-flat))
        if spec.scalar_prediction:
            prob = np.concatenate([1.0 - p1, p1], axis=1)
            flat = np.concatenate([-flat, flat], axis=1)
            cols[spec.prediction_col] = pa.array((p1[:, 0] > 0.5).astype(np.float64))
        else:
            prob = p1
            cols[spec.prediction_col] = _list_column((p1 > 0.5).astype(np.float64))
    else:
        prob = None
        cols[spec.prediction_col] = (pa.array(flat[:, 0]) if spec.scalar_prediction
                                     else _list_column(flat))
    if spec.raw_col and spec.task != "regression":
        cols[spec.raw_col] = _list_column(flat)
    if spec.probability_col and prob is not None:
        cols[spec.probability_col] = _list_column(prob)
    return cols


def score_batch(spec: ScoreSpec, module, device, batch: pa.RecordBatch) -> dict[str, pa.Array]:
    """The output columns for one non-empty record batch, in its row order."""
    import torch

    from sparkdl.data.arrow_tensors import features_to_numpy
    from sparkdl.data.inputs import InputRows, batch_columns

    if spec.inputs is not None:
        rows = InputRows.of([batch_columns(batch, spec.inputs)], spec.inputs)

        def arguments(start: int, stop: int) -> list[np.ndarray]:
            return rows.arguments(np.arange(start, stop), spec.transform)
    else:
        x = features_to_numpy([batch.column(c) for c in spec.feature_cols],
                              spec.feature_shape, spec.feature_cols)

        def arguments(start: int, stop: int) -> list[np.ndarray]:
            return [x[start:stop]]
    heads = spec.heads or (spec,)
    outs: list[list[np.ndarray]] = [[] for _ in heads]
    with torch.inference_mode():
        for start in range(0, batch.num_rows, spec.batch_size):
            args = [torch.from_numpy(a).to(device)
                    for a in arguments(start, min(start + spec.batch_size, batch.num_rows))]
            result = module(*args)
            for out, tensor in zip(outs, result if spec.heads else (result,)):
                out.append(tensor.float().cpu().numpy())
    columns: dict[str, pa.Array] = {}
    for head, out in zip(heads, outs):
        columns.update(outputs_to_columns(head, np.concatenate(out)))
    return columns


def score_batches(spec: ScoreSpec, payload,
                  batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Score Arrow batches, appending prediction columns to the kept input columns.

    Args:
        spec: the scoring description.
        payload: ``.value`` gives ``(kind, architecture bytes, weights bytes)``: a
            broadcast, or a :mod:`sparkdl.worker.model_payload` object.
        batches: input record batches.

    Yields:
        Record batches: ``keep_cols`` then the output columns.
    """
    from pyspark import TaskContext

    from sparkdl.worker.task_env import limit_threads, task_device

    ctx = TaskContext.get()
    limit_threads(ctx)
    device = task_device(ctx)
    module = _module(spec, payload, device)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        new = score_batch(spec, module, device, batch)
        if spec.version_col:  # the key of the module that ran, not the driver's belief
            new[spec.version_col] = pa.repeat(pa.scalar(spec.model_key, pa.string()),
                                              batch.num_rows)
        arrays = [batch.column(c) for c in spec.keep_cols] + list(new.values())
        yield pa.RecordBatch.from_arrays(arrays, names=[*spec.keep_cols, *new])
