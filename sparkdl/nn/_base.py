"""The layer base class, the layer registry, ``Input`` and symbolic graph nodes.

A layer is a frozen dataclass that knows three things about itself: its JSON form
(``{"type": "Dense", "units": 10, ...}``, every attribute written), the shape it
produces from the shapes it receives (batch dimension excluded), and the standard
``torch.nn`` module it compiles to.

Example:
    >>> from sparkdl.nn import Dense
    >>> Dense(10).to_dict()
    {'type': 'Dense', 'units': 10, 'activation': None, 'use_bias': True}
    >>> Dense(10).infer(((4, 64),))
    (4, 10)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sparkdl.errors import ConfigError

Shape = tuple[int | None, ...]
"""A shape without the batch dimension; ``None`` first marks a variable sequence length."""

DTYPES = ("float32", "int64")
ACTIVATIONS = ("gelu", "leaky_relu", "relu", "sigmoid", "softmax", "tanh")
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_name(value: Any) -> bool:
    """Whether ``value`` is a valid input or node name.

    ``fullmatch``, not ``match``: ``$`` alone would also accept one trailing newline.

    Example:
        >>> is_name("dense_1"), is_name("n\\n"), is_name("1x")
        (True, False, False)
    """
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None


LAYERS: dict[str, type[Layer]] = {}


class ShapeMismatch(Exception):
    """Raised by a layer's shape inference; the network turns it into a ConfigError.

    Attributes:
        expected: what the layer accepts, in words (``"(channels, height, width)"``).
        received: the shape or dtype it was given.
    """

    def __init__(self, expected: str, received: Any):
        super().__init__(expected, received)
        self.expected = expected
        self.received = received


def fmt_shape(shape: Sequence[int]) -> str:
    """``(1, 8, 8)`` for a shape, ``(64,)`` for rank one."""
    return str(tuple(shape))


def is_int(value: Any, minimum: int = 1) -> bool:
    """Whether ``value`` is an int (not a bool) at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def as_float(layer: Layer, *fields: str) -> None:
    """Store int values of ``fields`` as floats, so ``0`` and ``0.0`` serialise alike."""
    for field in fields:
        value = getattr(layer, field)
        if isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(layer, field, float(value))


def check(cond: bool, layer: str, message: str) -> None:
    """Raise ``ConfigError("<layer>: <message>")`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{layer}: {message}")


def check_positive_ints(layer: Layer, *fields: str) -> None:
    """:func:`check` that each of ``fields`` of ``layer`` is an integer >= 1."""
    for field in fields:
        value = getattr(layer, field)
        check(is_int(value), type(layer).__name__,
              f"{field} must be a positive integer. Received: {field}={value!r}")


def activation_module(name: str | None) -> torch.nn.Module | None:
    """The torch module for an activation name, or None for no activation."""
    if name is None:
        return None
    return {
        "relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "tanh": torch.nn.Tanh,
        "sigmoid": torch.nn.Sigmoid, "leaky_relu": torch.nn.LeakyReLU,
        "softmax": lambda: torch.nn.Softmax(dim=-1),
    }[name]()


def check_activation(layer: str, name: str | None, allow_none: bool = True) -> None:
    """Reject an unknown activation name, listing the valid ones."""
    if name is None and allow_none:
        return
    check(name in ACTIVATIONS, layer,
          f"activation must be one of {list(ACTIVATIONS)}"
          f"{' or None' if allow_none else ''}. Received: activation={name!r}")


def with_activation(module: torch.nn.Module, activation: str | None) -> torch.nn.Module:
    """``module`` followed by ``activation`` (a ``torch.nn.Sequential``), or alone."""
    act = activation_module(activation)
    return module if act is None else torch.nn.Sequential(module, act)


def _to_json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_json_value(v) for v in value]
    return value


def _from_json_value(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_from_json_value(v) for v in value)
    return value


def register(cls: type) -> type:
    """Make ``cls`` a frozen dataclass and add it to the layer registry by class name."""
    cls = dataclass(frozen=True)(cls)
    LAYERS[cls.__name__] = cls
    return cls


class Layer:
    """Base of every layer: JSON form, shape inference, parameter count, torch module.

    Subclasses taking one input implement ``output_shape``, ``count_params`` and
    ``module`` for that input's shape; layers taking several inputs (``arity``
    None) override ``infer``, ``param_count`` and ``build`` directly.
    """

    arity: ClassVar[int | None] = 1
    input_dtypes: ClassVar[tuple[str, ...]] = ("float32",)
    variable_length: ClassVar[bool] = False
    """Whether it takes a variable sequence axis (``None`` first in its input shape).

    The network refuses such an input for the other layers, naming the layer."""

    # -- JSON -----------------------------------------------------------------

    def to_dict(self) -> dict:
        """The canonical JSON object: ``type`` plus every attribute, defaults included."""
        out = {"type": type(self).__name__}
        for field in dataclasses.fields(self):
            out[field.name] = _to_json_value(getattr(self, field.name))
        return out

    @staticmethod
    def from_dict(obj: dict) -> Layer:
        """Rebuild a layer from its JSON object (lists become tuples).

        Raises:
            ConfigError: for an unknown ``type`` or attribute.
        """
        kind = obj.get("type")
        if kind not in LAYERS:
            raise ConfigError(f"Unknown layer type {kind!r}. Valid types: {sorted(LAYERS)}")
        cls = LAYERS[kind]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - names - {"type"})
        if unknown:
            raise ConfigError(f"{kind}: unknown attributes {unknown}. Valid: {sorted(names)}")
        return cls(**{k: _from_json_value(v) for k, v in obj.items() if k != "type"})

    # -- shapes, parameters, modules ------------------------------------------

    def infer(self, shapes: tuple[Shape, ...]) -> Shape:
        """The output shape for these input shapes (batch dimension excluded).

        Raises:
            ShapeMismatch: when the inputs do not fit this layer.
        """
        return self.output_shape(shapes[0])

    def param_count(self, shapes: tuple[Shape, ...]) -> int:
        """Number of trainable scalars the compiled module holds for these inputs."""
        return self.count_params(shapes[0])

    def build(self, shapes: tuple[Shape, ...]) -> torch.nn.Module:
        """The torch module computing this layer for these input shapes."""
        return self.module(shapes[0])

    def output_shape(self, shape: Shape) -> Shape:
        """Output shape for a one-input layer (override)."""
        raise NotImplementedError

    def count_params(self, shape: Shape) -> int:
        """Parameter count for a one-input layer (default: none)."""
        return 0

    def module(self, shape: Shape) -> torch.nn.Module:
        """Torch module for a one-input layer (override)."""
        raise NotImplementedError

    def output_dtype(self, dtypes: tuple[str, ...]) -> str:
        """The dtype produced (float32 unless a layer passes its input's through)."""
        return "float32"

    # -- functional API ---------------------------------------------------------

    def __call__(self, *inputs: Input | Node, name: str | None = None) -> Node:
        """Apply this layer to symbolic inputs, giving a graph node.

        Example:
            >>> from sparkdl.nn import Dense, Input
            >>> h = Dense(4, activation="relu")(Input((3,), name="x"), name="h")
            >>> h.name, type(h.layer).__name__
            ('h', 'Dense')
        """
        for x in inputs:
            if not isinstance(x, (Input, Node)):
                raise ConfigError(f"{type(self).__name__} must be called on Input or layer "
                                  f"outputs. Received: {type(x).__name__}")
        if name is not None and not is_name(name):
            raise ConfigError(f"A node name must match {NAME_PATTERN.pattern}. "
                              f"Received: name={name!r}")
        return Node(self, tuple(inputs), name)


@dataclass(frozen=True)
class Input:
    """A network input: its shape without the batch dimension, name and dtype.

    The first axis may be ``None``: a variable sequence length. Such a network is
    called as ``module(x)`` on a batch padded to its longest row, or as
    ``module(x, lengths)`` with each row's true length (an int64 tensor of shape
    ``(batch,)``); the sequence layers then ignore the padding (see
    :meth:`Network.build`).

    Args:
        shape: positive ints; the first may be ``None`` (variable length).
        name: the input's name in the spec.
        dtype: ``"float32"``, or ``"int64"`` for token ids fed to ``Embedding``.

    Example:
        >>> Input((1, 8, 8)).to_dict()
        {'name': 'input', 'shape': [1, 8, 8], 'dtype': 'float32'}
        >>> Input((None,), name="tokens", dtype="int64").to_dict()
        {'name': 'tokens', 'shape': [None], 'dtype': 'int64'}
    """

    shape: tuple[int | None, ...]
    name: str = "input"
    dtype: str = "float32"

    def __post_init__(self):
        shape = tuple(self.shape) if isinstance(self.shape, (list, tuple)) else (self.shape,)
        object.__setattr__(self, "shape", shape)
        check(len(shape) >= 1 and all(d is None or is_int(d) for d in shape), "Input",
              f"shape must be a non-empty sequence of positive ints. Received: shape={shape}")
        check(None not in shape[1:], "Input",
              "only the first axis may be None (a variable sequence length). "
              f"Received: shape={shape}")
        check(is_name(self.name), "Input",
              f"name must match {NAME_PATTERN.pattern}. Received: name={self.name!r}")
        check(self.dtype in DTYPES, "Input",
              f"dtype must be one of {list(DTYPES)}. Received: dtype={self.dtype!r}")

    def to_dict(self) -> dict:
        """The canonical JSON object (``None`` is written as JSON ``null``)."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def is_variable(shape: Shape) -> bool:
    """Whether ``shape`` has a variable sequence axis (``None`` first).

    Example:
        >>> is_variable((None, 16)), is_variable((20, 16))
        (True, False)
    """
    return len(shape) >= 1 and shape[0] is None


def check_fixed_features(shape: Shape) -> None:
    """Raise ShapeMismatch unless the last axis of ``shape`` has a fixed size."""
    if not shape or shape[-1] is None:
        raise ShapeMismatch("(..., features) with a fixed number of features, e.g. (None, 1) "
                            "for one feature per step", shape)


@dataclass(frozen=True, eq=False)
class Node:
    """A symbolic tensor: the output of ``layer`` applied to ``inputs`` (functional API).

    Attributes:
        layer: the layer applied.
        inputs: the ``Input`` objects or nodes it was applied to.
        name: the node's name in the spec; None for one chosen when the network is made.
    """

    layer: Layer
    inputs: tuple[Input | Node, ...]
    name: str | None = None
