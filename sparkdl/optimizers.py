"""Optimizers by name.

Example:
    >>> import torch
    >>> opt = build_optimizer("sgd", {"lr": 0.1}, torch.nn.Linear(2, 1).parameters())
    >>> type(opt).__name__
    'SGD'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from sparkdl.errors import ConfigError

_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}


def optimizer_names() -> list[str]:
    """Names accepted by ``optimizer=``."""
    return sorted(_OPTIMIZERS)


def check_optimizer(optimizer: str | Callable, params: dict) -> None:
    """Validate an optimizer choice on the driver.

    Builds the optimizer once over a dummy parameter so that bad keyword
    arguments fail here rather than on every executor.

    Raises:
        ConfigError: for an unknown name or arguments the optimizer rejects.
    """
    if callable(optimizer):
        return
    if optimizer not in _OPTIMIZERS:
        raise ConfigError(
            f"Unknown optimizer {optimizer!r}. Valid choices: {optimizer_names()}, or a "
            f"callable(params) -> torch.optim.Optimizer. Received: optimizer={optimizer!r}"
        )
    try:
        build_optimizer(optimizer, params, [torch.nn.Parameter(torch.zeros(1))])
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"optimizerParams={params!r} are not valid for {optimizer!r}: {exc}"
        ) from None


def build_optimizer(optimizer: str | Callable, params: dict,
                    parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Create the optimizer over ``parameters``."""
    if callable(optimizer):
        return optimizer(parameters)
    return _OPTIMIZERS[optimizer](parameters, **params)
