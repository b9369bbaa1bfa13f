"""Allreduce backends behind one interface, chosen by name at run time.

Example:
    >>> from sparkdl.collective import available_backends
    >>> "torch" in available_backends()
    True
"""

from __future__ import annotations

import importlib
import importlib.util

from sparkdl.collective.base import Collective, PeerInfo
from sparkdl.errors import ConfigError

# name -> (module, class); modules are imported only when the backend is used so
# that optional dependencies (horovod) stay optional.
_REGISTRY: dict[str, tuple[str, str]] = {
    "torch": ("sparkdl.collective.torch_distributed", "TorchDistributedCollective"),
    "horovod": ("sparkdl.collective.horovod_backend", "HorovodCollective"),
}


def horovod_available() -> bool:
    """Whether Horovod's PyTorch binding is installed (without importing it)."""
    try:
        return importlib.util.find_spec("horovod") is not None and \
            importlib.util.find_spec("horovod.torch") is not None
    except (ImportError, ValueError):  # a broken or blocked package counts as missing
        return False


def available_backends() -> list[str]:
    """Names accepted by ``backend=``."""
    return sorted(_REGISTRY)


def default_backend() -> str:
    """The backend used when none is named: ``horovod`` where installed, else ``torch``."""
    return "horovod" if horovod_available() else "torch"


def check_backend(name: str, options: dict | None = None) -> str:
    """Validate a backend name and its options on the driver, before any job starts.

    Raises:
        ConfigError: for an unknown name, a backend that is not installed, or
            options it does not take.
    """
    if name not in _REGISTRY:
        raise ConfigError(
            f"Unknown backend {name!r}. Valid choices: {available_backends()}. "
            f"Received: backend={name!r}"
        )
    if name == "horovod":
        from sparkdl.collective.horovod_backend import INSTALL_HINT, check_options

        if not horovod_available():
            raise ConfigError(INSTALL_HINT)
        check_options(options or {})
    elif options:
        raise ConfigError(f"backend={name!r} takes no backendOptions. Received: {options!r}")
    return name


def get_backend(name: str, options: dict | None = None) -> Collective:
    """Instantiate the backend called ``name``.

    Example:
        >>> get_backend("torch").name
        'torch'
    """
    module, cls = _REGISTRY[check_backend(name, options)]
    backend_cls = getattr(importlib.import_module(module), cls)
    return backend_cls(options) if options else backend_cls()


__all__ = ["Collective", "PeerInfo", "available_backends", "check_backend",
           "default_backend", "get_backend", "horovod_available"]
