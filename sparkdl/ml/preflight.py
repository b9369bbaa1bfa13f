"""Checks of a fit that need the data's statistics and the network, run on the driver.

A model that cannot take the features, labels outside the classes a classifier
outputs, or a ``featureShape`` that does not hold the data fail here, in a second,
before any barrier task starts.
"""

from __future__ import annotations

import math
import threading

import torch

from sparkdl.architecture import Architecture, state_dict_of
from sparkdl.checkpoints import parameter_shapes
from sparkdl.errors import ConfigError, SchemaError

_PROBING = threading.Lock()


def feature_shape(stats, feature_cols: list[str], wanted: list[int] | None) -> tuple[int, ...]:
    """The per-row tensor shape: ``wanted`` (``featureShape``) or what the data holds.

    Raises:
        SchemaError: if ``wanted`` holds another number of values than the data.
    """
    found = stats.shapes[feature_cols[0]] if len(feature_cols) == 1 else (len(feature_cols),)
    found = found or (1,)
    if wanted is None:
        return tuple(found)
    if math.prod(wanted) != math.prod(found):
        raise SchemaError(
            f"featureShape={wanted} holds {math.prod(wanted)} values per row but "
            f"feature column(s) {feature_cols} hold {math.prod(found)} (shape "
            f"{list(found)}). Fix featureShape.")
    return tuple(wanted)


def probe_output(model, shape: tuple[int, ...] | None, inputs=None, outputs: int | None = None
                 ) -> tuple[tuple[int, ...], dict[str, list[int]]]:
    """The per-row output shape, and the network's parameter shapes.

    ``inputs`` (:class:`~sparkdl.data.inputs.InputSpec` per ``inputCols`` column)
    probes ``forward(*inputs, *lengths)`` instead of ``forward(features)``.

    One forward pass on zeros, in eval mode. The module's own train/eval flag is
    restored; the fits of a parallel ``CrossValidator`` share one module, so
    probes take turns.

    ``outputs``: the network returns a tuple of this many tensors (``labelCols``);
    the per-row shapes are then a tuple with one shape per output.

    Raises:
        ConfigError: if the network cannot take rows of ``shape`` or does not
            return one batch-first tensor (or ``outputs`` of them).
    """
    net = model if isinstance(model, torch.nn.Module) else Architecture.of(model).build()
    with _PROBING:
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                out = net(*_probe_arguments(inputs)) if inputs is not None \
                    else net(torch.zeros((2, *shape)))
        except Exception as exc:  # noqa: BLE001 - any failure means the shapes disagree
            if inputs is not None:
                raise ConfigError(
                    f"The model cannot take its inputs {_describe_inputs(inputs)}: "
                    f"{type(exc).__name__}: {exc}. Its forward must take one tensor per "
                    "inputCols column, in order, then the lengths (int64, one per row) of "
                    "each padded column (with padding, every array column; "
                    "padding={'cols': [...]} names the sequences).") from None
            raise ConfigError(
                f"The model cannot take features of shape {list(shape)} (per row): "
                f"{type(exc).__name__}: {exc}. Set featureShape (e.g. featureShape=[1, 8, 8] "
                "for images) or change the model's input layer.") from None
        finally:
            net.train(was_training)
    if outputs is not None:
        if not isinstance(out, (tuple, list)) or len(out) != outputs or not all(
                isinstance(o, torch.Tensor) and o.dim() >= 1 and o.shape[0] == 2 for o in out):
            raise ConfigError(
                f"With {outputs} labelCols the model must return a tuple of {outputs} "
                f"tensors, batch first, one per label column. Received: "
                f"{type(out).__name__}" + (f" of {len(out)}" if isinstance(out, (tuple, list))
                                           else ""))
        return tuple(tuple(o.shape[1:]) for o in out), parameter_shapes(state_dict_of(net))
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != 2:
        raise ConfigError("The model must return one tensor with the batch as first "
                          f"dimension. Received: {type(out).__name__}")
    return tuple(out.shape[1:]), parameter_shapes(state_dict_of(net))


def _probe_arguments(inputs) -> list[torch.Tensor]:
    # two rows; padded ones of lengths 3 and 2, as a real batch of ragged rows
    args = [torch.from_numpy(spec.dummy()) for spec in inputs]
    return args + [torch.tensor([3, 2]) for spec in inputs if spec.ragged]


def _describe_inputs(inputs) -> str:
    return ", ".join(
        f"{s.column}: {s.dtype} (batch, {'length, ' if s.ragged else ''}"
        f"{', '.join(map(str, s.shape or ()))})".replace(", )", ")") for s in inputs)


def check_labels(task: str, output_shape: tuple[int, ...], stats, label_col: str) -> None:
    """Labels must fit the network's output: class ids, sizes, or [0, 1] targets.

    Raises:
        ConfigError: a classifier whose output is not ``(batch, classes)``.
        SchemaError: labels that do not fit, with their range and the fix.
    """
    if task == "multiclass":
        if len(output_shape) != 1:
            raise ConfigError(
                f"A classifier must output (batch, classes); this model outputs "
                f"(batch, {', '.join(map(str, output_shape))}).")
        classes = output_shape[0]
        if stats.label_min < 0 or stats.label_max >= classes:
            raise SchemaError(
                f"Label column {label_col!r} has values from {stats.label_min:g} to "
                f"{stats.label_max:g}, but the model outputs {classes} classes (valid "
                f"labels 0..{classes - 1}). Re-index the labels or widen the output layer.")
        return
    out_size = math.prod(output_shape) if output_shape else 1
    label_size = stats.label_size or 1
    if label_size != out_size:
        raise SchemaError(
            f"Label column {label_col!r} has {label_size} value(s) per row but the model "
            f"outputs {out_size} (shape {list(output_shape)}). They must match.")
    if task == "binary" and stats.label_min is not None and (
            stats.label_min < 0 or stats.label_max > 1):
        raise SchemaError(
            f"Label column {label_col!r} has values from {stats.label_min:g} to "
            f"{stats.label_max:g}; bce_with_logits needs targets in [0, 1].")
