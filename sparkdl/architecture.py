"""How a network's code travels and persists, separately from its weights.

A network is given as a ``torch.nn.Module`` instance, a zero-argument factory
returning one, or a declarative ``sparkdl.nn.Network``. A ``Network``'s
*architecture* is its canonical JSON spec: nothing is pickled. A TorchScript
module (``torch.jit.script``/``trace``, or a file ``torch.jit.load`` reads) is
its TorchScript archive (kind ``"torchscript"``): TorchScript code and constants
that ``torch.jit.load`` reads with its restricted unpickler, which imports no
Python code. Otherwise the architecture is stored with cloudpickle: for an
instance, a copy moved to the ``meta`` device (structure only, no tensor data);
for a factory, the callable itself. Weights always travel and persist as
safetensors, so loading a model never unpickles tensor data.

Code defined outside installed packages (a script, a notebook, a test module)
is pickled by value, so executors need not import the driver's files.

cloudpickle runs code when loaded: only load architectures you trust, as with any
pickled Python object.

Example:
    >>> import torch
    >>> arch = Architecture.of(torch.nn.Linear(3, 2))
    >>> net = arch.build(state_dict_of(torch.nn.Linear(3, 2)))
    >>> net.weight.shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import copy
import io
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cloudpickle
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from sparkdl.errors import ConfigError, CorruptModelError

if TYPE_CHECKING:
    from sparkdl.nn import Network


def _local_modules(model) -> set:
    """Modules defining ``model``'s code that executors may not be able to import.

    A network written in a script, a notebook or a test file lives in a module
    that exists only on the driver. Code from installed packages (under
    site-packages) is left to be imported by name, as executors have it too.
    """
    if isinstance(model, torch.nn.Module):
        names = {type(m).__module__ for m in model.modules()}
    else:
        names = {getattr(model, "__module__", None)}
    found = set()
    for name in names:
        module = sys.modules.get(name or "")
        path = getattr(module, "__file__", None) or ""
        if module is None or name == "__main__" or not path:
            continue
        if "site-packages" in path or "dist-packages" in path or name.split(".")[0] in (
                "torch", "sparkdl"):
            continue
        found.add(module)
    return found


def dumps_code(obj, *defined_by) -> bytes:
    """cloudpickle ``obj``, by value for the code of ``defined_by`` (default: ``obj``
    itself) whose modules exist only on the driver (see the module docstring).

    Example:
        >>> loads_code(dumps_code(len))([1, 2])
        2
    """
    local = set().union(*(_local_modules(o) for o in (defined_by or (obj,))))
    for module in local:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(obj)
    finally:
        for module in local:
            cloudpickle.unregister_pickle_by_value(module)


def loads_code(payload: bytes, source: str = "the pickled code"):
    """Inverse of :func:`dumps_code`. Runs code: only for trusted bytes.

    Args:
        payload: what :func:`dumps_code` returned.
        source: what ``payload`` is (a file path), for error messages.

    Raises:
        CorruptModelError: naming ``source``, if the bytes do not unpickle: they are
            damaged, or refer to code this Python cannot import.

    Example:
        >>> loads_code(dumps_code(len)[:-3], source="loss.pkl")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sparkdl.errors.CorruptModelError: loss.pkl does not unpickle (28 bytes): ...truncated
    """
    try:
        return cloudpickle.loads(payload)
    except Exception as e:
        hint = ""
        if isinstance(e, (ImportError, AttributeError)):
            hint = (". It names code this Python cannot import: install the package that "
                    "defines it wherever the model is loaded (driver and executors), or save "
                    "the network as a sparkdl.nn network, which pickles no code")
        raise CorruptModelError(f"{source} does not unpickle ({len(payload)} bytes): "
                                f"{_reason(e)}{hint}") from e


def _reason(error: BaseException) -> str:
    """``Type: message`` on one line, without a parser's boilerplate prefix."""
    text = str(error).replace("Error while deserializing: ", "").strip().splitlines()
    first = text[0] if text else ""
    if type(error).__name__ == "SafetensorError":
        return first
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


@contextmanager
def _quiet_jit() -> Iterator[None]:
    """Silence torch's deprecation warnings for ``torch.jit`` (one per call, on every
    executor): sparkdl reads TorchScript that users already have."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        yield


def torchscript_bytes(module: torch.jit.ScriptModule) -> bytes:
    """The TorchScript archive of ``module`` (what ``torch.jit.save`` writes).

    Example:
        >>> scripted = torch.jit.script(torch.nn.Linear(3, 2))
        >>> load_torchscript(torchscript_bytes(scripted)).weight.shape
        torch.Size([2, 3])
    """
    buffer = io.BytesIO()
    with _quiet_jit():
        torch.jit.save(module, buffer)
    return buffer.getvalue()


def load_torchscript(data: bytes, source: str = "the TorchScript archive",
                     map_location: str = "cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` from bytes, onto ``map_location``.

    Raises:
        CorruptModelError: naming ``source``, if ``data`` is not a TorchScript archive.

    Example:
        >>> load_torchscript(b"junk", "m.pt")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sparkdl.errors.CorruptModelError: m.pt is not a TorchScript archive (4 bytes): ...
    """
    try:
        with _quiet_jit():
            return torch.jit.load(io.BytesIO(bytes(data)), map_location=map_location)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, ValueError, ...
        raise CorruptModelError(f"{source} is not a TorchScript archive ({len(data)} bytes): "
                                f"{_reason(e)}") from e


def _with_empty_tensors(module: torch.nn.Module, device: str) -> torch.nn.Module:
    """A deep copy whose tensors are uninitialised twins on ``device``.

    No data is copied, and a parameter shared by several layers stays shared
    (``.to("meta")`` and ``.to_empty()`` would give each layer its own).
    """
    memo = {id(p): torch.nn.Parameter(torch.empty_like(p, device=device),
                                      requires_grad=p.requires_grad)
            for p in module.parameters()}
    memo.update({id(b): torch.empty_like(b, device=device) for b in module.buffers()})
    return copy.deepcopy(module, memo)


def state_dict_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU state dict with no shared storage (safetensors refuses aliases)."""
    return {k: v.detach().to("cpu", copy=True).contiguous()
            for k, v in module.state_dict().items()}


def weights_to_bytes(module: torch.nn.Module) -> bytes:
    """Serialise a module's state dict as safetensors bytes."""
    return st_save(state_dict_of(module))


def weights_from_bytes(data: bytes, source: str = "the weights") -> dict[str, torch.Tensor]:
    """Parse safetensors bytes back into a state dict.

    Args:
        data: safetensors bytes (what :func:`weights_to_bytes` returns).
        source: what ``data`` is (a file path), for error messages.

    Raises:
        CorruptModelError: naming ``source``, if ``data`` is not a safetensors file
            (truncated, damaged header, offsets outside the data).

    Example:
        >>> weights_from_bytes(weights_to_bytes(torch.nn.Linear(3, 2)))["weight"].shape
        torch.Size([2, 3])
    """
    try:
        return st_load(bytes(data))
    except Exception as e:
        raise CorruptModelError(f"{source} is not a valid safetensors file ({len(data)} bytes): "
                                f"{_reason(e)}") from e


def check_weights(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]],
                  source: str = "the weights") -> None:
    """Check that ``state`` has exactly the tensor names and shapes of ``expected``.

    Args:
        state: a parsed state dict (:func:`weights_from_bytes`).
        expected: name -> shape, from :meth:`Architecture.expected_shapes`.
        source: the file ``state`` was read from, for the message.

    Raises:
        CorruptModelError: listing the missing, unexpected and misshapen tensors.

    Example:
        >>> check_weights({"w": torch.zeros(2)}, {"w": (3,)}, "w.safetensors")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sparkdl.errors.CorruptModelError: w.safetensors does not fit the network: w has shape [2]...
    """
    problems = []  # in the network's order
    for name, shape in expected.items():
        if name not in state:
            problems.append(f"missing {name}{list(shape)}")
        elif tuple(state[name].shape) != tuple(shape):
            problems.append(f"{name} has shape {list(state[name].shape)}, the network needs "
                            f"{list(shape)}")
    problems += [f"unexpected {name}" for name in sorted(state) if name not in expected]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more"
                                           if len(problems) > 8 else "")
        raise CorruptModelError(f"{source} does not fit the network: {shown}")


@dataclass(frozen=True)
class Architecture:
    """A network's structure: a weightless module or a factory, cloudpickled, a spec,
    or a TorchScript archive.

    A ``"torchscript"`` archive holds its weights too; the model's safetensors
    weights are its state dict again, loaded over it (see :meth:`build`), so every
    kind keeps its weights in one format and the model version digests them.

    Attributes:
        kind: ``"module"``, ``"factory"``, ``"spec"`` or ``"torchscript"``.
        payload: cloudpickle bytes, for ``"spec"`` the network's JSON (UTF-8), for
            ``"torchscript"`` the archive ``torch.jit.save`` writes.
    """

    kind: str
    payload: bytes

    KINDS = ("spec", "module", "factory", "torchscript")
    #: Kinds whose payload is data, not a program (what ``trusted=False`` loads). A
    #: TorchScript archive is a program too (its operators can read files), so it is
    #: loaded only from trusted paths.
    CODE_FREE_KINDS = ("spec",)

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ConfigError(f"Architecture kind must be one of {list(self.KINDS)}. "
                              f"Received: kind={self.kind!r}")
        if not isinstance(self.payload, (bytes, bytearray)):
            raise ConfigError("Architecture payload must be bytes. "
                              f"Received: payload={type(self.payload).__name__}")

    @classmethod
    def of(cls, model: torch.nn.Module | Callable[[], torch.nn.Module] | Network
           ) -> Architecture:
        """Capture the architecture of a module, factory or ``sparkdl.nn.Network``.

        A TorchScript module (``torch.jit.ScriptModule``) is captured as its archive.

        Raises:
            ConfigError: if ``model`` is none of them.
        """
        from sparkdl.nn import Network  # noqa: F811 - imported lazily at run time

        if isinstance(model, Network):
            return cls("spec", model.to_json().encode("utf-8"))
        if isinstance(model, torch.jit.ScriptModule):
            return cls("torchscript", torchscript_bytes(model))
        if isinstance(model, torch.nn.Module):
            skeleton = _with_empty_tensors(model, "meta")
            return cls("module", dumps_code(skeleton, model))
        if callable(model):
            return cls("factory", dumps_code(model))
        raise ConfigError(
            "model must be a torch.nn.Module, a zero-argument callable returning one or a "
            "sparkdl.nn.Network. "
            f"Received: model={type(model).__name__}"
        )

    def model(self, initial_weights: bytes | None = None):
        """What the user gave :meth:`of`: a ``Network``, a factory, or a module with
        ``initial_weights`` (safetensors bytes) loaded."""
        if self.kind == "spec":
            from sparkdl.nn import Network  # noqa: F811

            return Network.from_json(self.payload)
        if self.kind == "factory":
            return loads_code(self.payload)
        if self.kind == "torchscript":
            return self.build(None if initial_weights is None
                              else weights_from_bytes(initial_weights))
        if initial_weights is None:
            raise ConfigError("A module architecture needs its weights to be rebuilt.")
        return self.build(weights_from_bytes(initial_weights))

    def build(self, state_dict: dict[str, torch.Tensor] | None = None,
              source: str = "the architecture", weights_source: str = "the weights"
              ) -> torch.nn.Module:
        """Instantiate on CPU, loading ``state_dict`` when given.

        A weightless module without ``state_dict`` gets uninitialised memory, so
        callers building a ``"module"`` architecture always pass weights. A
        ``"torchscript"`` archive is loaded with its own weights, then
        ``state_dict`` over them.

        Args:
            state_dict: the weights to load (strictly: same names and shapes).
            source: where the payload came from (a file), for error messages.
            weights_source: where ``state_dict`` came from, for error messages.

        Raises:
            CorruptModelError: if the payload does not unpickle to a module (or a
                factory of one), is not a TorchScript archive, or ``state_dict`` does
                not fit it.
        """
        if self.kind == "spec":
            from sparkdl.nn import Network  # noqa: F811

            module = Network.from_json(self.payload).build()
        elif self.kind == "torchscript":
            module = load_torchscript(self.payload, source)
        elif self.kind == "module":
            skeleton = loads_code(self.payload, source)
            if not isinstance(skeleton, torch.nn.Module):
                raise CorruptModelError(f"{source} must hold a torch.nn.Module. "
                                        f"Received: {type(skeleton).__name__}")
            module = _with_empty_tensors(skeleton, "cpu")
        else:
            factory = loads_code(self.payload, source)
            if not callable(factory):
                raise CorruptModelError(f"{source} must hold a model factory (a callable). "
                                        f"Received: {type(factory).__name__}")
            module = factory()
            if not isinstance(module, torch.nn.Module):
                raise ConfigError(
                    "The model factory must return a torch.nn.Module. "
                    f"Received: {type(module).__name__}"
                )
        if state_dict is not None:
            try:
                module.load_state_dict(state_dict, strict=True)
            except RuntimeError as e:  # missing/unexpected keys, size mismatches
                raise CorruptModelError(
                    f"{weights_source} does not fit {source} ({self.kind}): "
                    f"{' '.join(str(e).split())}") from e
        return module

    def expected_shapes(self, source: str = "the TorchScript archive"
                        ) -> dict[str, tuple[int, ...]] | None:
        """The state dict's tensor names and shapes, for a ``"spec"`` or
        ``"torchscript"`` architecture.

        Computed on the ``meta`` device: nothing is allocated, so a spec asking for
        huge layers is caught before memory is. None for pickled kinds, whose
        structure is only known by running their code.

        Args:
            source: where a ``"torchscript"`` payload came from, for messages.

        Raises:
            ConfigError: if the spec is invalid or cannot be built.
            CorruptModelError: naming ``source``, if the TorchScript archive does not load.

        Example:
            >>> from sparkdl.nn import Dense, Input, Sequential
            >>> Architecture.of(Sequential([Input((3,)), Dense(2)])).expected_shapes()
            {'0.weight': (2, 3), '0.bias': (2,)}
        """
        if self.kind == "torchscript":
            try:
                module = load_torchscript(self.payload, source, map_location="meta")
            except CorruptModelError:  # an archive whose code needs real tensors to load
                module = load_torchscript(self.payload, source)
            return {name: tuple(t.shape) for name, t in module.state_dict().items()}
        if self.kind != "spec":
            return None
        from sparkdl.nn import Network  # noqa: F811

        network = Network.from_json(self.payload)
        try:
            with torch.device("meta"):
                module = network.build()
        except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as e:
            raise ConfigError(f"The network spec cannot be built: {_reason(e)}") from e
        return {name: tuple(t.shape) for name, t in module.state_dict().items()}
