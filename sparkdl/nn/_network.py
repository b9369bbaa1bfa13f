"""Networks: a sequential stack or a functional graph of layers, as portable JSON.

The JSON form (format ``sparkdl.network/v1``, JSON Schema in
``sparkdl/schemas/network-v1.schema.json``) is what crosses languages: the Scala DSL
writes the same bytes. Shapes are inferred when the network is made, so a layer
that cannot take its input fails at definition time, naming the layer.

Example:
    >>> from sparkdl.nn import Dense, Network, Sequential
    >>> net = Sequential([Dense(32, activation="relu"), Dense(10)], input_shape=(64,))
    >>> net.output_shape, net.param_count()
    ((10,), 2410)
    >>> Network.from_json(net.to_json()) == net
    True
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

import torch

from sparkdl.errors import ConfigError
from sparkdl.nn._base import (
    NAME_PATTERN,
    Input,
    Layer,
    Node,
    Shape,
    ShapeMismatch,
    fmt_shape,
    is_name,
    is_variable,
)

FORMAT = "sparkdl.network/v1"


def _head(value, kind: str) -> dict | None:
    """Normalise a loss/optimizer given as a name or ``{"name", "params"}``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"name": value}
    if not (isinstance(value, dict) and isinstance(value.get("name"), str)
            and set(value) <= {"name", "params"} and isinstance(value.get("params", {}), dict)):
        raise ConfigError(f"{kind} must be a name or {{'name': str, 'params': dict}}. "
                          f"Received: {kind}={value!r}")
    if kind == "loss":
        from sparkdl.losses import loss_names as names
    else:
        from sparkdl.optimizers import optimizer_names as names
    if value["name"] not in names():
        raise ConfigError(f"Unknown {kind} {value['name']!r}. Valid: {names()}")
    params = dict(value.get("params", {}))
    for key, param in sorted(params.items()):
        # Refused here, not when writing: json.dumps(allow_nan=False) would fail later
        # with a bare ValueError that names neither the head nor the parameter.
        if not _finite(param):
            raise ConfigError(f"{kind} params must be finite numbers: JSON has no NaN or "
                              f"Infinity. Received: {key}={param!r}")
    return {"name": value["name"], "params": params}


def _finite(value) -> bool:
    """Whether every float in a JSON-like value is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _check_lengths(lengths, x: torch.Tensor) -> torch.Tensor:
    """``lengths`` as an int64 tensor on ``x``'s device, checked against the padded batch."""
    lengths = torch.as_tensor(lengths, device=x.device)
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise ConfigError(f"lengths must be integers. Received: dtype={lengths.dtype}")
    lengths = lengths.long()
    if lengths.dim() != 1 or x.dim() < 2 or lengths.shape[0] != x.shape[0]:
        raise ConfigError("lengths must be one int per row, shape (batch,), for a padded batch "
                          f"(batch, sequence, ...). Received: lengths shape "
                          f"{tuple(lengths.shape)}, input shape {tuple(x.shape)}")
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > x.shape[1]):
        raise ConfigError(f"lengths must be in [1, {x.shape[1]}] (the padded length). Received: "
                          f"min={int(lengths.min())}, max={int(lengths.max())}")
    return lengths


def _no_variable_input(kind: str) -> ConfigError:
    return ConfigError(f"This {kind} has no variable-length input, so it takes no lengths. "
                       "Declare the sequence axis as None, e.g. Input((None,), dtype='int64')")


class _Stack(torch.nn.Sequential):
    """``torch.nn.Sequential`` (same submodules and state dict) that also takes lengths.

    ``masked[i]`` says whether layer ``i`` receives the lengths: it takes them and its
    input still has the variable sequence axis.
    """

    def __init__(self, *modules, masked: Sequence[bool] = (), variable: bool = False):
        super().__init__(*modules)
        self.masked = tuple(masked)
        self.variable = variable

    def forward(self, x, lengths=None):
        if lengths is None:
            return super().forward(x)
        if not self.variable:
            raise _no_variable_input("network")
        lengths = _check_lengths(lengths, x)
        for i, module in enumerate(self):
            x = module(x, lengths) if i < len(self.masked) and self.masked[i] else module(x)
        return x


class _Graph(torch.nn.Module):
    """Runs named layer modules in topological order (functional networks).

    ``masked`` names the layers that receive the lengths, ``variable`` the inputs with
    a variable sequence axis (all share one length per row).
    """

    def __init__(self, inputs: Sequence[str], plan, outputs: Sequence[str],
                 masked: Sequence[str] = (), variable: Sequence[str] = ()):
        super().__init__()
        self.input_names = tuple(inputs)
        self.layers = torch.nn.ModuleDict({name: module for name, module, _ in plan})
        self.plan = [(name, tuple(args)) for name, _, args in plan]
        self.output_names = tuple(outputs)
        self.masked = frozenset(masked)
        self.variable = tuple(variable)

    def forward(self, *inputs, lengths=None):
        n = len(self.input_names)
        if lengths is None and len(inputs) == n + 1:
            *inputs, lengths = inputs
        if len(inputs) != n:
            then = ", then optionally lengths" if self.variable else ""
            raise ConfigError(f"This network takes {n} inputs {list(self.input_names)}{then}. "
                              f"Received: {len(inputs)} tensors")
        env = dict(zip(self.input_names, inputs))
        if lengths is not None:
            if not self.variable:
                raise _no_variable_input("network")
            lengths = _check_lengths(lengths, env[self.variable[0]])
        for name, args in self.plan:
            tensors = (env[a] for a in args)
            if lengths is not None and name in self.masked:
                env[name] = self.layers[name](*tensors, lengths)
            else:
                env[name] = self.layers[name](*tensors)
        outs = tuple(env[o] for o in self.output_names)
        return outs[0] if len(outs) == 1 else outs


class Network:
    """A network spec: inputs, layers (a stack) or nodes (a graph), optional loss/optimizer.

    Made from the functional API with ``Network(inputs=..., outputs=...)``, with
    :class:`Sequential`, or from JSON with :meth:`from_json`. Immutable.

    Args:
        inputs: an ``Input`` or a sequence of them (their order is ``forward``'s).
        outputs: a layer output (``Node``) or a sequence of them.
        loss: a loss name (``"cross_entropy"``) or ``{"name", "params"}``.
        optimizer: an optimizer name (``"adam"``) or ``{"name", "params"}``.

    Raises:
        ConfigError: for a layer that cannot take its input (naming the layer, the
            expected and the received shape) or a malformed graph.

    Example:
        >>> from sparkdl.nn import Dense, Input, Network
        >>> x = Input((64,), name="x")
        >>> h = Dense(32, activation="relu")(x)
        >>> net = Network(inputs=x, outputs=Dense(10)(h))
        >>> [n["name"] for n in net.to_dict()["nodes"]], net.output_shape
        (['dense', 'dense_1'], (10,))
    """

    def __init__(self, inputs: Input | Sequence[Input], outputs: Node | Sequence[Node], *,
                 loss=None, optimizer=None):
        ins = (inputs,) if isinstance(inputs, Input) else tuple(inputs)
        outs = (outputs,) if isinstance(outputs, (Node, Input)) else tuple(outputs)
        order: list[Node] = []
        seen: set[int] = set()

        def visit(x):
            if isinstance(x, Input):
                if x not in ins:
                    raise ConfigError(f"The graph uses input {x.name!r}, which is not "
                                      f"among inputs={[i.name for i in ins]}")
                return
            if not isinstance(x, Node):
                raise ConfigError(f"outputs must be layer outputs. Received: {type(x).__name__}")
            if id(x) in seen:
                return
            for parent in x.inputs:
                visit(parent)
            seen.add(id(x))
            order.append(x)

        for out in outs:
            visit(out)
        if not order:
            raise ConfigError(
                "A network needs at least one layer between its inputs and outputs. Received: "
                f"outputs={[o.name for o in outs]}, all inputs. Apply a layer, e.g. "
                "Dense(10)(x), or use Sequential([Input(shape), ...]).")
        taken = {i.name for i in ins} | {n.name for n in order if n.name}
        names: dict[int, str] = {}
        for node in order:
            if node.name is None:
                base, k = _snake(type(node.layer).__name__), 0
                while (name := base if k == 0 else f"{base}_{k}") in taken:
                    k += 1
                taken.add(name)
            names[id(node)] = node.name or name

        def name_of(x) -> str:
            # Inputs are values: an equal Input (same name, shape, dtype) made separately
            # stands for the declared one, so it is found by name, not identity.
            return x.name if isinstance(x, Input) else names[id(x)]

        nodes = [(names[id(n)], n.layer, [name_of(p) for p in n.inputs]) for n in order]
        self._init(ins, None, nodes, [name_of(o) for o in outs], loss, optimizer)

    def _init(self, inputs, layers, nodes, outputs, loss, optimizer) -> None:
        self._inputs = tuple(inputs)
        self._layers = None if layers is None else tuple(layers)
        self._nodes = None if nodes is None else tuple(
            (name, layer, tuple(args)) for name, layer, args in nodes)
        self._outputs = None if outputs is None else tuple(outputs)
        self._loss = _head(loss, "loss")
        self._optimizer = _head(optimizer, "optimizer")
        self._shapes, self._params = self._infer()

    @classmethod
    def _make(cls, inputs, layers=None, nodes=None, outputs=None, loss=None, optimizer=None):
        net = object.__new__(Sequential if layers is not None else Network)
        net._init(inputs, layers, nodes, outputs, loss, optimizer)
        return net

    # -- shape inference --------------------------------------------------------

    def _steps(self):
        """``(label, name, layer, input names)`` for each layer, in order."""
        if self._layers is not None:
            prev = self._inputs[0].name
            for i, layer in enumerate(self._layers):
                yield f"Layer {i} ({type(layer).__name__})", str(i), layer, (prev,)
                prev = str(i)
        else:
            for name, layer, args in self._nodes:
                yield f"Layer {name!r} ({type(layer).__name__})", name, layer, args

    def _infer(self):
        names = [i.name for i in self._inputs]
        if len(set(names)) != len(names):
            raise ConfigError(f"Input names must be unique. Received: {names}")
        if self._layers is not None and len(self._inputs) != 1:
            raise ConfigError(f"A sequential network takes exactly one input. "
                              f"Received: {len(self._inputs)} inputs")
        env: dict[str, tuple[Shape, str]] = {i.name: (i.shape, i.dtype) for i in self._inputs}
        shapes, params = {}, {}
        for label, name, layer, args in self._steps():
            if self._nodes is not None:
                _check_node(label, name, args, env)
            arity = type(layer).arity
            if (arity is None and len(args) < 2) or (arity is not None and len(args) != arity):
                want = "at least 2 inputs" if arity is None else f"{arity} input"
                raise ConfigError(f"{label} takes {want}. Received: {len(args)} {list(args)}")
            in_shapes = tuple(env[a][0] for a in args)
            dtypes = tuple(env[a][1] for a in args)
            bad = [d for d in dtypes if d not in type(layer).input_dtypes]
            if bad:
                raise ConfigError(f"{label} expects {' or '.join(type(layer).input_dtypes)} "
                                  f"input, received {bad[0]}")
            variable = [s for s in in_shapes if is_variable(s)]
            if variable and not type(layer).variable_length:
                raise ConfigError(
                    f"{label} needs fixed sizes, received {fmt_shape(variable[0])} with a "
                    "variable sequence axis (None). Reduce it first, e.g. with LSTM or GRU "
                    "(return_sequences=False) or SequencePooling")
            try:
                out = layer.infer(in_shapes)
            except ShapeMismatch as e:
                received = e.received if isinstance(e.received, str) else fmt_shape(e.received)
                raise ConfigError(f"{label} expected input shape {e.expected}, received "
                                  f"{received}") from None
            env[name] = (out, layer.output_dtype(dtypes))
            shapes[name], params[name] = in_shapes, layer.param_count(in_shapes)
        if self._outputs is not None:
            for out in self._outputs:
                if out not in env:
                    raise ConfigError(f"Unknown output {out!r}. Known: {sorted(env)}")
            self._out_shapes = tuple(env[o][0] for o in self._outputs)
        else:
            self._out_shapes = (env[str(len(self._layers) - 1)][0] if self._layers
                                else self._inputs[0].shape,)
        return shapes, params

    # -- public API -------------------------------------------------------------

    @property
    def inputs(self) -> tuple[Input, ...]:
        """The network's inputs, in ``forward`` order."""
        return self._inputs

    @property
    def output_shape(self) -> Shape | tuple[Shape, ...]:
        """The output shape without the batch dimension (a tuple of them for several)."""
        return self._out_shapes[0] if len(self._out_shapes) == 1 else self._out_shapes

    @property
    def loss(self) -> dict | None:
        """``{"name", "params"}`` of the loss, or None."""
        return None if self._loss is None else dict(self._loss)

    @property
    def optimizer(self) -> dict | None:
        """``{"name", "params"}`` of the optimizer, or None."""
        return None if self._optimizer is None else dict(self._optimizer)

    def param_count(self) -> int:
        """Trainable scalars of the built module, computed from the spec alone."""
        return sum(self._params.values())

    def build(self) -> torch.nn.Module:
        """A fresh ``torch.nn.Module`` (default initialisation) computing this network.

        A sequential network gives a ``torch.nn.Sequential`` (a subclass); a graph gives
        a module whose ``forward`` takes one tensor per input, in order.

        A network with a variable-length input (``Input((None, ...))``) is called on a
        batch padded to its longest row, either as ``module(x)`` (every position is
        taken as valid, as for a fixed length) or as ``module(x, lengths)``, where
        ``lengths`` is an int64 tensor of shape ``(batch,)`` holding each row's true
        length, in ``[1, padded length]`` (a graph takes it after its inputs, or as
        ``lengths=``). The lengths reach every layer that uses them while the sequence
        axis lasts: LSTM/GRU pack the batch (the last step is each row's last valid
        one), attention and TransformerEncoder mask padded keys, SequencePooling pools
        valid positions only; per-position layers (Embedding, Dense, LayerNorm,
        Dropout, ...) pass them along. So a row's output does not depend on how far it
        was padded. Padded positions of sequence outputs are zeros after those layers
        (after a per-position layer they hold whatever it computes there).

        Raises:
            ConfigError: when called with lengths that are not one int per row in
                ``[1, padded length]``, or on a network with no variable-length input.

        Example:
            >>> from sparkdl.nn import LSTM, Dense, Embedding, Input, Sequential
            >>> net = Sequential([Input((None,), dtype="int64"), Embedding(50, 8), LSTM(16),
            ...                   Dense(2)])
            >>> module = net.build()
            >>> tokens = torch.tensor([[3, 4, 0, 0], [5, 6, 7, 8]])
            >>> module(tokens, torch.tensor([2, 4])).shape
            torch.Size([2, 2])
            >>> torch.allclose(module(tokens, torch.tensor([2, 4]))[0],
            ...                module(tokens[:1, :2])[0], atol=1e-6)
            True
        """
        steps = [(name, layer.build(self._shapes[name]), args)
                 for _, name, layer, args in self._steps()]
        masked = [name for name, module, _ in steps
                  if getattr(module, "takes_lengths", False)
                  and any(is_variable(s) for s in self._shapes[name])]
        variable = [i.name for i in self._inputs if is_variable(i.shape)]
        if self._layers is not None:
            return _Stack(*(module for _, module, _ in steps),
                          masked=[name in masked for name, _, _ in steps],
                          variable=bool(variable))
        return _Graph([i.name for i in self._inputs], steps, self._outputs, masked, variable)

    def to_dict(self) -> dict:
        """The JSON object of this spec (``loss``/``optimizer`` only when set)."""
        out = {"format": FORMAT, "inputs": [i.to_dict() for i in self._inputs]}
        if self._layers is not None:
            out["layers"] = [layer.to_dict() for layer in self._layers]
        else:
            out["nodes"] = [{"name": name, "layer": layer.to_dict(), "inputs": list(args)}
                            for name, layer, args in self._nodes]
            out["outputs"] = list(self._outputs)
        if self._loss is not None:
            out["loss"] = self.loss
        if self._optimizer is not None:
            out["optimizer"] = self.optimizer
        return out

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces, so every writer gives the same bytes.

        Raises:
            ConfigError: if the spec holds a value JSON cannot carry (the layer and
                head checks refuse NaN and infinities first, so this is a safety net).
        """
        try:
            return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                              allow_nan=False)
        except ValueError as e:
            raise ConfigError(f"This network cannot be written as JSON: {e}") from None

    @classmethod
    def from_dict(cls, obj: dict) -> Network:
        """Validate ``obj`` against the JSON Schema and rebuild the network.

        Raises:
            ConfigError: naming the JSON path and what is wrong there.
        """
        try:
            return cls._from_valid_dict(obj)
        except ConfigError:
            raise
        except RecursionError:
            raise ConfigError("Invalid network spec: it is nested too deeply") from None
        except (TypeError, KeyError, IndexError, ValueError, OverflowError) as e:
            # The schema lets through a value a layer cannot take (say, a size no
            # integer type holds): still a spec error, never a raw one.
            raise ConfigError(f"Invalid network spec: {type(e).__name__}: {e}") from e

    @classmethod
    def _from_valid_dict(cls, obj) -> Network:
        from sparkdl.nn._schema import validate

        validate(obj)
        inputs = [Input(tuple(i["shape"]), i["name"], i.get("dtype", "float32"))
                  for i in obj["inputs"]]
        if "layers" in obj:
            layers = [_layer(f"layers/{k}", spec) for k, spec in enumerate(obj["layers"])]
            return cls._make(inputs, layers=layers, loss=obj.get("loss"),
                             optimizer=obj.get("optimizer"))
        nodes = [(n["name"], _layer(f"nodes/{k}/layer", n["layer"]), n["inputs"])
                 for k, n in enumerate(obj["nodes"])]
        return cls._make(inputs, nodes=nodes, outputs=obj["outputs"], loss=obj.get("loss"),
                         optimizer=obj.get("optimizer"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Network:
        """Parse, validate and rebuild; ``from_json(net.to_json()).to_json()`` is identical.

        Example:
            >>> text = ('{"format":"sparkdl.network/v1","inputs":[{"name":"input",'
            ...         '"shape":[4]}],"layers":[{"type":"Dense","units":2}]}')
            >>> Network.from_json(text).param_count()
            10
        """
        try:
            obj = json.loads(text)
        except RecursionError:
            raise ConfigError("A network spec must be JSON: it is nested too deeply") from None
        except (ValueError, TypeError) as e:  # TypeError: neither str nor bytes
            raise ConfigError(f"A network spec must be JSON: {e}") from None
        return cls.from_dict(obj)

    def __eq__(self, other) -> bool:
        return isinstance(other, Network) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return f"{type(self).__name__}.from_json({self.to_json()!r})"


def _layer(path: str, spec: dict) -> Layer:
    try:
        return Layer.from_dict(spec)
    except ConfigError as e:
        raise ConfigError(f"Invalid network spec at {path}: {e}") from None


def _check_node(label: str, name: str, args, env) -> None:
    if not is_name(name):
        raise ConfigError(f"{label}: a node name must match {NAME_PATTERN.pattern}")
    if name in env:
        raise ConfigError(f"{label}: the name {name!r} is already taken")
    missing = [a for a in args if a not in env]
    if missing:
        raise ConfigError(f"{label} takes {missing[0]!r}, which is not an input or an "
                          f"earlier node. Known: {sorted(env)}")


def _snake(name: str) -> str:
    """``MultiHeadAttention`` -> ``multi_head_attention``, ``LSTM`` -> ``lstm``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class Sequential(Network):
    """A stack of layers, each fed by the one before.

    Args:
        layers: the layers; the first may be an ``Input``.
        input_shape: the input shape (batch excluded) when no ``Input`` comes first;
            its first entry may be None, a variable sequence length.
        input_dtype: ``"float32"`` or ``"int64"`` (token ids for ``Embedding``).
        loss: a loss name or ``{"name", "params"}``.
        optimizer: an optimizer name or ``{"name", "params"}``.

    Example:
        >>> from sparkdl.nn import Conv2d, Dense, Flatten, Input, MaxPool2d
        >>> net = Sequential([Input((1, 8, 8)), Conv2d(8, 3, activation="relu"),
        ...                   MaxPool2d(2), Flatten(), Dense(10)])
        >>> net.output_shape, net.param_count()
        ((10,), 810)
        >>> net.build()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, layers: Sequence[Layer | Input], input_shape: Sequence[int] | None = None,
                 *, input_dtype: str = "float32", loss=None, optimizer=None):
        layers = list(layers)
        if layers and isinstance(layers[0], Input):
            if input_shape is not None:
                raise ConfigError("Give the input shape once: an Input first or input_shape. "
                                  f"Received both: input_shape={tuple(input_shape)}")
            first = layers.pop(0)
        elif input_shape is None:
            raise ConfigError("A Sequential needs its input shape: start with Input(shape) or "
                              "pass input_shape=(...) (batch dimension excluded)")
        else:
            first = Input(tuple(input_shape), dtype=input_dtype)
        if not layers:
            raise ConfigError("A Sequential needs at least one layer. Received: layers=[]")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ConfigError(f"Layer {i} must be a sparkdl.nn layer. "
                                  f"Received: {type(layer).__name__}")
        self._init((first,), layers, None, None, loss, optimizer)

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The layers, in order."""
        return self._layers
