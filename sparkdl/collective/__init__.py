"""Allreduce backends behind one interface, chosen by name at run time.

Example:
    >>> from sparkdl.collective import available_backends
    >>> "torch" in available_backends()
    True
"""

from __future__ import annotations

import importlib

from sparkdl.collective.base import Collective, PeerInfo
from sparkdl.errors import ConfigError

# name -> (module, class); modules are imported only when the backend is used so
# that optional dependencies (horovod) stay optional.
_REGISTRY: dict[str, tuple[str, str]] = {
    "torch": ("sparkdl.collective.torch_distributed", "TorchDistributedCollective"),
}


def available_backends() -> list[str]:
    """Names accepted by ``backend=``."""
    return sorted(_REGISTRY)


def default_backend() -> str:
    """The backend used when none is named."""
    return "torch"


def check_backend(name: str) -> str:
    """Validate a backend name on the driver, before any job starts.

    Raises:
        ConfigError: for an unknown name.
    """
    if name not in _REGISTRY:
        raise ConfigError(
            f"Unknown backend {name!r}. Valid choices: {available_backends()}. "
            f"Received: backend={name!r}"
        )
    return name


def get_backend(name: str) -> Collective:
    """Instantiate the backend called ``name``.

    Example:
        >>> get_backend("torch").name
        'torch'
    """
    module, cls = _REGISTRY[check_backend(name)]
    return getattr(importlib.import_module(module), cls)()


__all__ = ["Collective", "PeerInfo", "available_backends", "check_backend",
           "default_backend", "get_backend"]
