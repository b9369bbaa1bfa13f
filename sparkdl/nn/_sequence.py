"""Sequence layers over ``(sequence, features)``: LSTM, GRU, attention, Transformer,
and SequencePooling.

The sequence axis may be variable (``None``): the built module then also takes each
row's length, ``module(x, lengths)``, and these layers ignore the padding past it
(packed sequences for LSTM/GRU, a key padding mask for attention, a masked mean or
max for SequencePooling). Their outputs at padded positions are zeros.

Example:
    >>> from sparkdl.nn import LSTM
    >>> LSTM(16).output_shape((20, 8)), LSTM(16, return_sequences=True).output_shape((20, 8))
    ((16,), (20, 16))
    >>> LSTM(16, return_sequences=True).output_shape((None, 8))
    (None, 16)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from sparkdl.nn._base import (
    Layer,
    Shape,
    ShapeMismatch,
    check,
    check_positive_ints,
    register,
)

_SEQ = "(sequence, features)"


def _check_sequence(shape: Shape, features: str = "features") -> None:
    if len(shape) != 2:
        raise ShapeMismatch(f"(sequence, {features})", shape)


def padding_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """``(batch, steps)`` bool, True at padding: the positions at or past each length.

    Example:
        >>> padding_mask(torch.tensor([1, 3]), 3)
        tensor([[False,  True,  True],
                [False, False, False]])
    """
    positions = torch.arange(steps, device=lengths.device)
    return positions.unsqueeze(0) >= lengths.unsqueeze(1)


def _zero_padding(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return out.masked_fill(mask.unsqueeze(-1), 0.0)


class _Recurrent(torch.nn.Module):
    """A batch-first ``torch.nn.LSTM``/``GRU`` returning all steps or the last one.

    With ``lengths`` the padded batch is packed, so each row stops at its length: the
    last step is the row's last valid one, and padded steps of the sequence are zeros.
    """

    takes_lengths = True

    def __init__(self, rnn: torch.nn.Module, return_sequences: bool):
        super().__init__()
        self.rnn = rnn
        self.return_sequences = return_sequences

    def forward(self, x, lengths=None):
        if lengths is None:
            out, _ = self.rnn(x)
            return out if self.return_sequences else out[:, -1]
        rnn_utils = torch.nn.utils.rnn
        packed = rnn_utils.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                                enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = rnn_utils.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        if self.return_sequences:
            return out
        rows = torch.arange(out.shape[0], device=out.device)
        return out[rows, lengths.to(out.device) - 1]


@dataclass(frozen=True)
class _RNN(Layer):
    units: int
    return_sequences: bool = False

    gates: ClassVar[int] = 4
    variable_length: ClassVar[bool] = True

    def __post_init__(self):
        kind = type(self).__name__
        check_positive_ints(self, "units")
        check(isinstance(self.return_sequences, bool), kind,
              f"return_sequences must be a bool. Received: {self.return_sequences!r}")

    def output_shape(self, shape: Shape) -> Shape:
        _check_sequence(shape)
        return (shape[0], self.units) if self.return_sequences else (self.units,)

    def count_params(self, shape: Shape) -> int:
        # torch keeps two bias vectors (input-hidden and hidden-hidden) per gate.
        return self.gates * self.units * (shape[1] + self.units + 2)

    def module(self, shape: Shape) -> torch.nn.Module:
        rnn = getattr(torch.nn, type(self).__name__)(shape[1], self.units, batch_first=True)
        return _Recurrent(rnn, self.return_sequences)


@register
class LSTM(_RNN):
    """Long short-term memory; returns the last step unless ``return_sequences``.

    Example:
        >>> LSTM(16).count_params((20, 8))
        1664
    """

    gates: ClassVar[int] = 4


@register
class GRU(_RNN):
    """Gated recurrent unit; returns the last step unless ``return_sequences``.

    Example:
        >>> GRU(16).output_shape((20, 8))
        (16,)
    """

    gates: ClassVar[int] = 3


class _SelfAttention(torch.nn.Module):
    """Batch-first ``torch.nn.MultiheadAttention`` with query = key = value.

    With ``lengths``, padded positions are masked as keys and zeroed in the output.
    """

    takes_lengths = True

    def __init__(self, attention: torch.nn.MultiheadAttention):
        super().__init__()
        self.attention = attention

    def forward(self, x, lengths=None):
        if lengths is None:
            return self.attention(x, x, x, need_weights=False)[0]
        mask = padding_mask(lengths, x.shape[1])
        out = self.attention(x, x, x, key_padding_mask=mask, need_weights=False)[0]
        return _zero_padding(out, mask)


class _Encoder(torch.nn.TransformerEncoderLayer):
    """``torch.nn.TransformerEncoderLayer`` (same parameters) that also takes lengths.

    With ``lengths``, they become ``src_key_padding_mask`` and padded positions of the
    output are zeroed.
    """

    takes_lengths = True

    def forward(self, src, lengths=None):
        if lengths is None:
            return super().forward(src)
        mask = padding_mask(lengths, src.shape[1])
        return _zero_padding(super().forward(src, src_key_padding_mask=mask), mask)


@register
class MultiHeadAttention(Layer):
    """Self-attention over ``(sequence, features)`` with ``features = num_heads * key_dim``.

    Example:
        >>> MultiHeadAttention(num_heads=4, key_dim=8).output_shape((10, 32))
        (10, 32)
    """

    num_heads: int
    key_dim: int
    dropout: float = 0.0
    variable_length = True

    def __post_init__(self):
        check_positive_ints(self, "num_heads", "key_dim")
        _check_rate(self, "MultiHeadAttention")

    def output_shape(self, shape: Shape) -> Shape:
        width = self.num_heads * self.key_dim
        if len(shape) != 2 or shape[1] != width:
            raise ShapeMismatch(f"(sequence, {width}) as num_heads * key_dim = "
                                f"{self.num_heads} * {self.key_dim}", shape)
        return shape

    def count_params(self, shape: Shape) -> int:
        width = shape[1]
        return 4 * width * width + 4 * width

    def module(self, shape: Shape) -> torch.nn.Module:
        return _SelfAttention(torch.nn.MultiheadAttention(
            shape[1], self.num_heads, dropout=self.dropout, batch_first=True))


def _check_rate(layer: Layer, kind: str) -> None:
    if isinstance(layer.dropout, int) and not isinstance(layer.dropout, bool):
        object.__setattr__(layer, "dropout", float(layer.dropout))
    check(isinstance(layer.dropout, float) and 0 <= layer.dropout < 1, kind,
          f"dropout must be in [0, 1). Received: dropout={layer.dropout!r}")


@register
class TransformerEncoder(Layer):
    """One post-norm Transformer encoder block (``torch.nn.TransformerEncoderLayer``).

    Self-attention with ``num_heads`` heads over ``(sequence, d_model)``, then a
    feed-forward network of width ``ff_dim``, each with a residual and LayerNorm.

    Example:
        >>> TransformerEncoder(num_heads=4, ff_dim=64).output_shape((10, 32))
        (10, 32)
    """

    num_heads: int
    ff_dim: int
    dropout: float = 0.1
    activation: str = "relu"
    variable_length = True

    def __post_init__(self):
        check_positive_ints(self, "num_heads", "ff_dim")
        _check_rate(self, "TransformerEncoder")
        check(self.activation in ("relu", "gelu"), "TransformerEncoder",
              f"activation must be 'relu' or 'gelu'. Received: activation={self.activation!r}")

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 2 or shape[1] % self.num_heads:
            raise ShapeMismatch(f"(sequence, d_model) with d_model divisible by "
                                f"num_heads={self.num_heads}", shape)
        return shape

    def count_params(self, shape: Shape) -> int:
        d, ff = shape[1], self.ff_dim
        attention = 4 * d * d + 4 * d
        return attention + (d * ff + ff) + (ff * d + d) + 4 * d

    def module(self, shape: Shape) -> torch.nn.Module:
        return _Encoder(
            shape[1], self.num_heads, dim_feedforward=self.ff_dim, dropout=self.dropout,
            activation=self.activation, batch_first=True)


class _SequencePool(torch.nn.Module):
    """Mean or max over the sequence axis of ``(batch, sequence, features)``."""

    takes_lengths = True

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x, lengths=None):
        if lengths is None:
            return x.mean(dim=1) if self.mode == "mean" else x.amax(dim=1)
        mask = padding_mask(lengths, x.shape[1]).unsqueeze(-1)
        if self.mode == "max":
            return x.masked_fill(mask, float("-inf")).amax(dim=1)
        total = x.masked_fill(mask, 0.0).sum(dim=1)
        return total / lengths.to(x.device, x.dtype).unsqueeze(1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


@register
class SequencePooling(Layer):
    """Mean or max over the sequence axis: ``(sequence, features)`` becomes ``(features,)``.

    The sequence may have a variable length (``None``): called with ``lengths``, the
    built module pools only each row's valid positions, so padding changes nothing.
    (``GlobalAveragePooling`` is for channels-first ``(channels, length)`` signals.)

    Args:
        mode: ``"mean"`` or ``"max"``.

    Example:
        >>> from sparkdl.nn import Embedding, Input, Sequential, SequencePooling, Dense
        >>> net = Sequential([Input((None,), dtype="int64"), Embedding(100, 8),
        ...                   SequencePooling(), Dense(2)])
        >>> net.output_shape
        (2,)
        >>> tokens, lengths = torch.tensor([[5, 6, 0], [7, 8, 9]]), torch.tensor([2, 3])
        >>> net.build()(tokens, lengths).shape
        torch.Size([2, 2])
    """

    mode: str = "mean"
    variable_length = True

    def __post_init__(self):
        check(self.mode in ("mean", "max"), "SequencePooling",
              f"mode must be 'mean' or 'max'. Received: mode={self.mode!r}")

    def output_shape(self, shape: Shape) -> Shape:
        _check_sequence(shape)
        return (shape[1],)

    def module(self, shape: Shape) -> torch.nn.Module:
        return _SequencePool(self.mode)
