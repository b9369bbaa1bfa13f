"""How a network's code travels and persists, separately from its weights.

A network is given either as a ``torch.nn.Module`` instance or as a zero-argument
factory returning one. Its *architecture* is stored with cloudpickle: for an
instance, a copy moved to the ``meta`` device (structure only, no tensor data);
for a factory, the callable itself. Weights always travel and persist as
safetensors, so loading a model never unpickles tensor data.

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
from collections.abc import Callable
from dataclasses import dataclass

import cloudpickle
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from sparkdl.errors import ConfigError


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
    """A network's structure: a weightless module or a factory, cloudpickled.

    Attributes:
        kind: ``"module"`` or ``"factory"``.
        payload: cloudpickle bytes.
    """

    kind: str
    payload: bytes

    @classmethod
    def of(cls, model: torch.nn.Module | Callable[[], torch.nn.Module]) -> Architecture:
        """Capture the architecture of a module or factory.

        Raises:
            ConfigError: if ``model`` is neither.
        """
        if isinstance(model, torch.nn.Module):
            skeleton = copy.deepcopy(model).to("meta")
            return cls("module", cloudpickle.dumps(skeleton))
        if callable(model):
            return cls("factory", cloudpickle.dumps(model))
        raise ConfigError(
            "model must be a torch.nn.Module or a zero-argument callable returning one. "
            f"Received: model={type(model).__name__}"
        )

    def build(self, state_dict: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
        """Instantiate on CPU, loading ``state_dict`` when given.

        A weightless module without ``state_dict`` gets uninitialised memory, so
        callers building a ``"module"`` architecture always pass weights.
        """
        obj = cloudpickle.loads(self.payload)
        if self.kind == "module":
            module = obj.to_empty(device="cpu")
        else:
            module = obj()
            if not isinstance(module, torch.nn.Module):
                raise ConfigError(
                    "The model factory must return a torch.nn.Module. "
                    f"Received: {type(module).__name__}"
                )
        if state_dict is not None:
            module.load_state_dict(state_dict, strict=True)
        return module
