"""How a network's code travels and persists, separately from its weights.

A network is given as a ``torch.nn.Module`` instance, a zero-argument factory
returning one, or a declarative ``sparkdl.nn.Network``. A ``Network``'s
*architecture* is its canonical JSON spec: nothing is pickled. Otherwise the
architecture is stored with cloudpickle: for an instance, a copy moved to the
``meta`` device (structure only, no tensor data); for a factory, the callable
itself. Weights always travel and persist as safetensors, so loading a model never
unpickles tensor data.

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
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cloudpickle
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from sparkdl.errors import ConfigError

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


def loads_code(payload: bytes):
    """Inverse of :func:`dumps_code`. Runs code: only for trusted bytes."""
    return cloudpickle.loads(payload)


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


def weights_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """Parse safetensors bytes back into a state dict."""
    return st_load(data)


@dataclass(frozen=True)
class Architecture:
    """A network's structure: a weightless module or a factory, cloudpickled, or a spec.

    Attributes:
        kind: ``"module"``, ``"factory"`` or ``"spec"``.
        payload: cloudpickle bytes, or for ``"spec"`` the network's JSON (UTF-8).
    """

    kind: str
    payload: bytes

    @classmethod
    def of(cls, model: torch.nn.Module | Callable[[], torch.nn.Module] | Network
           ) -> Architecture:
        """Capture the architecture of a module, factory or ``sparkdl.nn.Network``.

        Raises:
            ConfigError: if ``model`` is none of them.
        """
        from sparkdl.nn import Network  # noqa: F811 - imported lazily at run time

        if isinstance(model, Network):
            return cls("spec", model.to_json().encode("utf-8"))
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

            return Network.from_json(self.payload.decode("utf-8"))
        if self.kind == "factory":
            return loads_code(self.payload)
        if initial_weights is None:
            raise ConfigError("A module architecture needs its weights to be rebuilt.")
        return self.build(weights_from_bytes(initial_weights))

    def build(self, state_dict: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
        """Instantiate on CPU, loading ``state_dict`` when given.

        A weightless module without ``state_dict`` gets uninitialised memory, so
        callers building a ``"module"`` architecture always pass weights.
        """
        if self.kind == "spec":
            from sparkdl.nn import Network  # noqa: F811

            module = Network.from_json(self.payload.decode("utf-8")).build()
        elif self.kind == "module":
            module = _with_empty_tensors(loads_code(self.payload), "cpu")
        else:
            module = loads_code(self.payload)()
            if not isinstance(module, torch.nn.Module):
                raise ConfigError(
                    "The model factory must return a torch.nn.Module. "
                    f"Received: {type(module).__name__}"
                )
        if state_dict is not None:
            module.load_state_dict(state_dict, strict=True)
        return module
