"""Declarative networks: one spec in Python or Scala, compiled to PyTorch modules.

A network is a list of layers (:class:`Sequential`) or a graph of them
(:class:`Network` with the functional API). Its JSON form, ``sparkdl.network/v1``,
is canonical and language-neutral; ``build()`` compiles it to standard ``torch.nn``
modules, with every shape inferred (batch dimension excluded) when the network is
made. ``TorchEstimator(model=net)`` trains it with no pickled code.

Example:
    >>> import torch
    >>> from sparkdl.nn import Dense, Dropout, Input, Network, Sequential
    >>> net = Sequential([Input((64,)), Dense(32, activation="relu"), Dropout(0.1), Dense(10)])
    >>> net.build()(torch.randn(4, 64)).shape
    torch.Size([4, 10])
    >>> x = Input((64,), name="x")
    >>> out = Dense(10)(Dense(32, activation="relu")(x))
    >>> Network(inputs=x, outputs=out).param_count() == net.param_count()
    True
"""

from sparkdl.nn._base import LAYERS, Input, Layer, Node
from sparkdl.nn._conv import (
    AvgPool1d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    GlobalAveragePooling,
    MaxPool1d,
    MaxPool2d,
)
from sparkdl.nn._core import (
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    LayerNorm,
    Linear,
    Reshape,
)
from sparkdl.nn._merge import Add, Concatenate
from sparkdl.nn._network import FORMAT, Network, Sequential
from sparkdl.nn._sequence import (
    GRU,
    LSTM,
    MultiHeadAttention,
    SequencePooling,
    TransformerEncoder,
)

__all__ = [
    "FORMAT",
    "GRU",
    "LAYERS",
    "LSTM",
    "Activation",
    "Add",
    "AvgPool1d",
    "AvgPool2d",
    "BatchNorm",
    "Concatenate",
    "Conv1d",
    "Conv2d",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GlobalAveragePooling",
    "Input",
    "Layer",
    "LayerNorm",
    "Linear",
    "MaxPool1d",
    "MaxPool2d",
    "MultiHeadAttention",
    "Network",
    "Node",
    "Reshape",
    "SequencePooling",
    "Sequential",
    "TransformerEncoder",
]
