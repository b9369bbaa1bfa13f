"""Layers joining several inputs in a functional graph: Add and Concatenate.

Example:
    >>> from sparkdl.nn import Add, Concatenate
    >>> Add().infer(((8,), (8,))), Concatenate().infer(((8,), (4,)))
    ((8,), (12,))
"""

from __future__ import annotations

import torch

from sparkdl.nn._base import Layer, Shape, ShapeMismatch, check, fmt_shape, register


class _Add(torch.nn.Module):
    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class _Concatenate(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, *xs):
        return torch.cat(xs, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def _shapes(shapes) -> str:
    return "[" + ", ".join(fmt_shape(s) for s in shapes) + "]"


@register
class Add(Layer):
    """Elementwise sum of two or more inputs of the same shape.

    Example:
        >>> Add().infer(((4, 4), (4, 4), (4, 4)))
        (4, 4)
    """

    arity = None
    variable_length = True

    def infer(self, shapes: tuple[Shape, ...]) -> Shape:
        if len(set(shapes)) != 1:
            raise ShapeMismatch(f"{fmt_shape(shapes[0])} for every input", _shapes(shapes))
        return shapes[0]

    def param_count(self, shapes: tuple[Shape, ...]) -> int:
        return 0

    def build(self, shapes: tuple[Shape, ...]) -> torch.nn.Module:
        return _Add()


@register
class Concatenate(Layer):
    """Join two or more inputs along ``axis``.

    ``axis`` counts the batch dimension as 0, as ``torch.cat`` and Keras do, so the
    default -1 is the last axis; axis 0 (the batch) is refused.

    Example:
        >>> Concatenate(axis=1).infer(((2, 5), (3, 5)))
        (5, 5)
    """

    axis: int = -1
    arity = None
    variable_length = True

    def __post_init__(self):
        ok = isinstance(self.axis, int) and not isinstance(self.axis, bool) and self.axis != 0
        check(ok, "Concatenate",
              f"axis must be a non-zero int (0 is the batch). Received: axis={self.axis!r}")

    def _dim(self, rank: int) -> int:
        """The axis as an index into the shape without the batch dimension."""
        return self.axis - 1 if self.axis > 0 else rank + self.axis

    def infer(self, shapes: tuple[Shape, ...]) -> Shape:
        rank = len(shapes[0])
        dim = self._dim(rank)
        same_rank = all(len(s) == rank for s in shapes)
        if not (0 <= dim < rank) or not same_rank or len(
                {s[:dim] + s[dim + 1:] for s in shapes}) != 1:
            raise ShapeMismatch(f"shapes of one rank, equal on every axis but "
                                f"axis={self.axis}", _shapes(shapes))
        if shapes[0][dim] is None:
            raise ShapeMismatch(f"a fixed size on axis={self.axis} (it is the variable "
                                "sequence axis)", _shapes(shapes))
        return (*shapes[0][:dim], sum(s[dim] for s in shapes), *shapes[0][dim + 1:])

    def param_count(self, shapes: tuple[Shape, ...]) -> int:
        return 0

    def build(self, shapes: tuple[Shape, ...]) -> torch.nn.Module:
        return _Concatenate(self._dim(len(shapes[0])) + 1)
