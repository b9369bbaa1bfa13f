"""Loss functions by name, and what kind of task each implies.

Example:
    >>> resolve_loss("mse").task
    'regression'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sparkdl.errors import ConfigError

#: Task kinds: multiclass (argmax over logits), binary/multilabel (sigmoid), regression.
TASKS = ("multiclass", "binary", "regression")


@dataclass(frozen=True)
class LossSpec:
    """A loss function and the task it implies.

    Attributes:
        fn: ``fn(output, target) -> scalar`` averaged over the batch.
        task: one of :data:`TASKS`; decides label dtype and scoring columns.
        name: the registry name, or ``"custom"``.
        per_row: ``per_row(output, target) -> (batch,)`` losses (for sample
            weights); ``None`` for a custom loss.
    """

    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    task: str
    name: str
    per_row: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


def _match(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # A model with one output unit returns (n, 1) for (n,) targets: align them.
    if target.shape != output.shape and target.numel() == output.numel():
        return target.reshape(output.shape)
    return target


def _wide(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # At least float32 on both sides: under bf16/16-mixed autocast the output is 16-bit,
    # and casting the targets down would round them (123.4 -> 123.0 in bfloat16).
    dtype = torch.promote_types(output.dtype, torch.float32)
    return output.to(dtype), _match(output, target).to(dtype)


def _mse(output, target):
    return F.mse_loss(*_wide(output, target))


def _bce(output, target):
    return F.binary_cross_entropy_with_logits(*_wide(output, target))


def _row_mean(loss: torch.Tensor) -> torch.Tensor:
    return loss.reshape(len(loss), -1).mean(dim=1)


def _ce_rows(output, target):
    return F.cross_entropy(output, target, reduction="none")


def _nll_rows(output, target):
    return F.nll_loss(output, target, reduction="none")


def _bce_rows(output, target):
    return _row_mean(F.binary_cross_entropy_with_logits(*_wide(output, target),
                                                        reduction="none"))


def _mse_rows(output, target):
    return _row_mean(F.mse_loss(*_wide(output, target), reduction="none"))


_LOSSES: dict[str, LossSpec] = {
    "cross_entropy": LossSpec(F.cross_entropy, "multiclass", "cross_entropy", _ce_rows),
    "nll": LossSpec(F.nll_loss, "multiclass", "nll", _nll_rows),
    "bce_with_logits": LossSpec(_bce, "binary", "bce_with_logits", _bce_rows),
    "mse": LossSpec(_mse, "regression", "mse", _mse_rows),
}


def loss_names() -> list[str]:
    """Names accepted by ``loss=``."""
    return sorted(_LOSSES)


def resolve_loss(loss: str | Callable) -> LossSpec:
    """Look up a loss by name, or wrap a callable ``(output, target) -> loss``.

    A callable is treated as a regression loss (float targets).

    Raises:
        ConfigError: for an unknown name.

    Example:
        >>> resolve_loss("cross_entropy").task
        'multiclass'
    """
    if callable(loss):
        return LossSpec(loss, "regression", "custom")
    if loss not in _LOSSES:
        raise ConfigError(
            f"Unknown loss {loss!r}. Valid choices: {loss_names()}, or a callable "
            f"(output, target) -> scalar tensor. Received: loss={loss!r}"
        )
    return _LOSSES[loss]
