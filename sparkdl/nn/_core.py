"""Core layers: Dense, Activation, Dropout, Flatten, Reshape, norms, Embedding.

Shapes exclude the batch dimension and follow PyTorch's layout: channels first for
images and signals, ``(sequence, features)`` for sequences.

Example:
    >>> from sparkdl.nn import Dense, Flatten
    >>> Flatten().output_shape((8, 3, 3)), Dense(10).count_params((72,))
    ((72,), 730)
"""

from __future__ import annotations

import math

import torch

from sparkdl.nn._base import (
    Layer,
    Shape,
    ShapeMismatch,
    activation_module,
    as_float,
    check,
    check_activation,
    check_fixed_features,
    check_positive_ints,
    fmt_shape,
    is_int,
    register,
    with_activation,
)


@register
class Dense(Layer):
    """A fully connected layer on the last axis; ``in_features`` comes from the input.

    Args:
        units: output features.
        activation: one of ``relu, gelu, tanh, sigmoid, softmax, leaky_relu`` or None.
        use_bias: whether to add a bias.

    Example:
        >>> Dense(10, activation="relu").output_shape((5, 64))
        (5, 10)
    """

    units: int
    activation: str | None = None
    use_bias: bool = True
    variable_length = True

    def __post_init__(self):
        check_positive_ints(self, "units")
        check_activation("Dense", self.activation)
        check(isinstance(self.use_bias, bool), "Dense",
              f"use_bias must be a bool. Received: use_bias={self.use_bias!r}")

    def output_shape(self, shape: Shape) -> Shape:
        check_fixed_features(shape)
        return (*shape[:-1], self.units)

    def count_params(self, shape: Shape) -> int:
        return shape[-1] * self.units + (self.units if self.use_bias else 0)

    def module(self, shape: Shape) -> torch.nn.Module:
        return with_activation(torch.nn.Linear(shape[-1], self.units, bias=self.use_bias),
                               self.activation)


Linear = Dense


@register
class Activation(Layer):
    """An elementwise activation (softmax over the last axis).

    Example:
        >>> Activation("softmax").output_shape((10,))
        (10,)
    """

    name: str
    variable_length = True

    def __post_init__(self):
        check_activation("Activation", self.name, allow_none=False)

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def module(self, shape: Shape) -> torch.nn.Module:
        return activation_module(self.name)


@register
class Dropout(Layer):
    """Zero each element with probability ``rate`` while training.

    Example:
        >>> Dropout(0.5).output_shape((32,))
        (32,)
    """

    rate: float
    variable_length = True

    def __post_init__(self):
        as_float(self, "rate")
        check(isinstance(self.rate, float) and 0 <= self.rate < 1, "Dropout",
              f"rate must be in [0, 1). Received: rate={self.rate!r}")

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def module(self, shape: Shape) -> torch.nn.Module:
        return torch.nn.Dropout(self.rate)


@register
class Flatten(Layer):
    """Flatten everything but the batch dimension.

    Example:
        >>> Flatten().output_shape((8, 3, 3))
        (72,)
    """

    input_dtypes = ("float32", "int64")

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def module(self, shape: Shape) -> torch.nn.Module:
        return torch.nn.Flatten()

    def output_dtype(self, dtypes):
        return dtypes[0]


class _Reshape(torch.nn.Module):
    def __init__(self, shape: Shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


@register
class Reshape(Layer):
    """Reshape to ``shape`` (batch dimension excluded; one entry may be -1).

    Example:
        >>> Reshape((1, 8, 8)).output_shape((64,))
        (1, 8, 8)
    """

    shape: tuple[int, ...]
    input_dtypes = ("float32", "int64")

    def __post_init__(self):
        shape = tuple(self.shape) if isinstance(self.shape, (list, tuple)) else (self.shape,)
        object.__setattr__(self, "shape", shape)
        # is_int, not ==: -1.0 == -1, and a float must be refused like any other int param.
        ok = (len(shape) >= 1 and all(is_int(d, minimum=-1) and d != 0 for d in shape)
              and shape.count(-1) <= 1)
        check(ok, "Reshape", "shape must be positive ints with at most one -1. "
              f"Received: shape={shape}")

    def output_shape(self, shape: Shape) -> Shape:
        size, known = math.prod(shape), math.prod(d for d in self.shape if d != -1)
        if -1 in self.shape:
            if size % known:
                raise ShapeMismatch(f"a size divisible by {known} to fill "
                                    f"{fmt_shape(self.shape)}", shape)
            return tuple(size // known if d == -1 else d for d in self.shape)
        if size != known:
            raise ShapeMismatch(f"{known} elements to fill {fmt_shape(self.shape)}", shape)
        return self.shape

    def module(self, shape: Shape) -> torch.nn.Module:
        return _Reshape(self.output_shape(shape))

    def output_dtype(self, dtypes):
        return dtypes[0]


@register
class BatchNorm(Layer):
    """Batch normalisation over channels: 1d for ``(features,)`` or ``(C, L)``, 2d for
    ``(C, H, W)``.

    Example:
        >>> BatchNorm().count_params((8, 6, 6))
        16
    """

    momentum: float = 0.1
    epsilon: float = 1e-5

    def __post_init__(self):
        as_float(self, "momentum", "epsilon")
        check(isinstance(self.momentum, float) and 0 <= self.momentum <= 1, "BatchNorm",
              f"momentum must be a float in [0, 1]. Received: momentum={self.momentum!r}")
        check(isinstance(self.epsilon, float) and 0 < self.epsilon < math.inf, "BatchNorm",
              f"epsilon must be a positive, finite float. Received: epsilon={self.epsilon!r}")

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) not in (1, 2, 3):
            raise ShapeMismatch("(features,), (channels, length) or "
                                "(channels, height, width)", shape)
        return shape

    def count_params(self, shape: Shape) -> int:
        return 2 * shape[0]

    def module(self, shape: Shape) -> torch.nn.Module:
        cls = torch.nn.BatchNorm2d if len(shape) == 3 else torch.nn.BatchNorm1d
        return cls(shape[0], eps=self.epsilon, momentum=self.momentum)


@register
class LayerNorm(Layer):
    """Layer normalisation over the last axis, with a learned scale and shift.

    Example:
        >>> LayerNorm().count_params((10, 32))
        64
    """

    epsilon: float = 1e-5
    variable_length = True

    def __post_init__(self):
        as_float(self, "epsilon")
        check(isinstance(self.epsilon, float) and 0 < self.epsilon < math.inf, "LayerNorm",
              f"epsilon must be a positive, finite float. Received: epsilon={self.epsilon!r}")

    def output_shape(self, shape: Shape) -> Shape:
        check_fixed_features(shape)
        return shape

    def count_params(self, shape: Shape) -> int:
        return 2 * shape[-1]

    def module(self, shape: Shape) -> torch.nn.Module:
        return torch.nn.LayerNorm(shape[-1], eps=self.epsilon)


class _TokenEmbedding(torch.nn.Embedding):
    """``torch.nn.Embedding`` that accepts token ids sent as floats (Spark arrays)."""

    def forward(self, input):  # noqa: A002 - torch's argument name
        return super().forward(input.long())


@register
class Embedding(Layer):
    """Look up a vector of ``output_dim`` for each token id in ``[0, input_dim)``.

    Its input is ``int64`` token ids; float ids are cast, as Spark sends arrays of
    doubles. A variable sequence length (``None``) passes through, so an
    ``Input((None,), dtype="int64")`` of padded token ids gives ``(None, output_dim)``.

    Example:
        >>> Embedding(1000, 16).output_shape((20,))
        (20, 16)
        >>> Embedding(1000, 16).output_shape((None,))
        (None, 16)
    """

    input_dim: int
    output_dim: int
    input_dtypes = ("int64",)
    variable_length = True

    def __post_init__(self):
        check_positive_ints(self, "input_dim", "output_dim")

    def output_shape(self, shape: Shape) -> Shape:
        return (*shape, self.output_dim)

    def count_params(self, shape: Shape) -> int:
        return self.input_dim * self.output_dim

    def module(self, shape: Shape) -> torch.nn.Module:
        return _TokenEmbedding(self.input_dim, self.output_dim)
