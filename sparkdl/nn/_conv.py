"""Convolution and pooling layers, channels first: ``(C, L)`` and ``(C, H, W)``.

Example:
    >>> from sparkdl.nn import Conv2d, MaxPool2d
    >>> Conv2d(8, 3, padding="same").output_shape((1, 8, 8))
    (8, 8, 8)
    >>> MaxPool2d(2).output_shape((8, 8, 8))
    (8, 4, 4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from sparkdl.nn._base import (
    Layer,
    Shape,
    ShapeMismatch,
    check,
    check_activation,
    check_positive_ints,
    is_int,
    register,
    with_activation,
)

_LAYOUT = {1: "(channels, length)", 2: "(channels, height, width)"}


def _spatial(layer: str, field: str, value, dims: int, minimum: int) -> tuple[int, ...]:
    """``value`` as a tuple of ``dims`` ints >= ``minimum`` (an int is repeated)."""
    values = (value,) * dims if not isinstance(value, tuple) else value
    check(len(values) == dims and all(is_int(v, minimum) for v in values), layer,
          f"{field} must be an int >= {minimum}"
          f"{' or a pair of them' if dims == 2 else ''}. Received: {field}={value!r}")
    return values


def _tuple_or_int(value):
    return tuple(value) if isinstance(value, list) else value


def _out_size(layer: Layer, shape: Shape, kernel, stride, padding, dims: int) -> Shape:
    if len(shape) != dims + 1:
        raise ShapeMismatch(_LAYOUT[dims], shape)
    out = []
    for size, k, s, p in zip(shape[1:], kernel, stride, padding):
        n = (size + 2 * p - k) // s + 1
        if n < 1:
            raise ShapeMismatch(f"{_LAYOUT[dims]} with spatial sizes >= {k - 2 * p}", shape)
        out.append(n)
    return tuple(out)


@dataclass(frozen=True)
class _Conv(Layer):
    filters: int
    kernel_size: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: int | tuple[int, ...] | str = 0
    activation: str | None = None
    use_bias: bool = True

    dims: ClassVar[int] = 1

    def __post_init__(self):
        kind = type(self).__name__
        for field in ("kernel_size", "stride", "padding"):
            object.__setattr__(self, field, _tuple_or_int(getattr(self, field)))
        check_positive_ints(self, "filters")
        _spatial(kind, "kernel_size", self.kernel_size, self.dims, 1)
        stride = _spatial(kind, "stride", self.stride, self.dims, 1)
        if self.padding == "same":
            check(all(s == 1 for s in stride), kind,
                  f'padding="same" needs stride=1. Received: stride={self.stride!r}')
        else:
            check(not isinstance(self.padding, str), kind,
                  f'padding must be an int, a pair or "same". Received: padding={self.padding!r}')
            _spatial(kind, "padding", self.padding, self.dims, 0)
        check_activation(kind, self.activation)
        check(isinstance(self.use_bias, bool), kind,
              f"use_bias must be a bool. Received: use_bias={self.use_bias!r}")

    def output_shape(self, shape: Shape) -> Shape:
        kind = type(self).__name__
        kernel = _spatial(kind, "kernel_size", self.kernel_size, self.dims, 1)
        if self.padding == "same":
            if len(shape) != self.dims + 1:
                raise ShapeMismatch(_LAYOUT[self.dims], shape)
            return (self.filters, *shape[1:])
        stride = _spatial(kind, "stride", self.stride, self.dims, 1)
        padding = _spatial(kind, "padding", self.padding, self.dims, 0)
        return (self.filters, *_out_size(self, shape, kernel, stride, padding, self.dims))

    def count_params(self, shape: Shape) -> int:
        kernel = _spatial("", "kernel_size", self.kernel_size, self.dims, 1)
        weights = shape[0] * math.prod(kernel) * self.filters
        return weights + (self.filters if self.use_bias else 0)

    def module(self, shape: Shape) -> torch.nn.Module:
        cls = torch.nn.Conv2d if self.dims == 2 else torch.nn.Conv1d
        conv = cls(shape[0], self.filters, self.kernel_size, stride=self.stride,
                   padding=self.padding, bias=self.use_bias)
        return with_activation(conv, self.activation)


@register
class Conv1d(_Conv):
    """1-d convolution over ``(channels, length)``; ``padding`` an int or ``"same"``.

    Example:
        >>> Conv1d(4, 3).output_shape((2, 10))
        (4, 8)
    """

    dims: ClassVar[int] = 1


@register
class Conv2d(_Conv):
    """2-d convolution over ``(channels, height, width)``.

    ``kernel_size``, ``stride`` and ``padding`` are ints or pairs; ``padding`` may be
    ``"same"`` (stride 1 only).

    Example:
        >>> Conv2d(8, 3, activation="relu").output_shape((1, 8, 8))
        (8, 6, 6)
    """

    dims: ClassVar[int] = 2


@dataclass(frozen=True)
class _Pool(Layer):
    pool_size: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None = None
    padding: int | tuple[int, ...] = 0

    dims: ClassVar[int] = 1
    torch_cls: ClassVar[dict] = {}

    def _params(self):
        kind = type(self).__name__
        kernel = _spatial(kind, "pool_size", self.pool_size, self.dims, 1)
        stride = kernel if self.stride is None else _spatial(kind, "stride", self.stride,
                                                             self.dims, 1)
        padding = _spatial(kind, "padding", self.padding, self.dims, 0)
        return kernel, stride, padding

    def __post_init__(self):
        for field in ("pool_size", "stride", "padding"):
            object.__setattr__(self, field, _tuple_or_int(getattr(self, field)))
        kernel, _, padding = self._params()
        check(all(2 * p <= k for k, p in zip(kernel, padding)), type(self).__name__,
              f"padding must be at most half of pool_size. Received: padding={self.padding!r}, "
              f"pool_size={self.pool_size!r}")

    def output_shape(self, shape: Shape) -> Shape:
        kernel, stride, padding = self._params()
        return (shape[0], *_out_size(self, shape, kernel, stride, padding, self.dims))

    def module(self, shape: Shape) -> torch.nn.Module:
        kernel, stride, padding = self._params()
        cls = getattr(torch.nn, type(self).__name__)
        return cls(kernel, stride=stride, padding=padding)


@register
class MaxPool1d(_Pool):
    """Max pooling over ``(channels, length)``; ``stride`` defaults to ``pool_size``.

    Example:
        >>> MaxPool1d(2).output_shape((4, 9))
        (4, 4)
    """

    dims: ClassVar[int] = 1


@register
class MaxPool2d(_Pool):
    """Max pooling over ``(channels, height, width)``; ``stride`` defaults to ``pool_size``.

    Example:
        >>> MaxPool2d(2).output_shape((8, 6, 6))
        (8, 3, 3)
    """

    dims: ClassVar[int] = 2


@register
class AvgPool1d(_Pool):
    """Average pooling over ``(channels, length)``.

    Example:
        >>> AvgPool1d(3, stride=1).output_shape((4, 9))
        (4, 7)
    """

    dims: ClassVar[int] = 1


@register
class AvgPool2d(_Pool):
    """Average pooling over ``(channels, height, width)``.

    Example:
        >>> AvgPool2d(2).output_shape((8, 6, 6))
        (8, 3, 3)
    """

    dims: ClassVar[int] = 2


@register
class GlobalAveragePooling(Layer):
    """Average over every position: ``(C, L)`` or ``(C, H, W)`` becomes ``(C,)``.

    Channels first, so fixed sizes only; for ``(sequence, features)``, variable
    lengths included, use ``SequencePooling``.

    Example:
        >>> GlobalAveragePooling().output_shape((8, 4, 4))
        (8,)
    """

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) not in (2, 3):
            raise ShapeMismatch(f"{_LAYOUT[1]} or {_LAYOUT[2]}", shape)
        return (shape[0],)

    def module(self, shape: Shape) -> torch.nn.Module:
        pool = torch.nn.AdaptiveAvgPool2d(1) if len(shape) == 3 else torch.nn.AdaptiveAvgPool1d(1)
        return torch.nn.Sequential(pool, torch.nn.Flatten())
