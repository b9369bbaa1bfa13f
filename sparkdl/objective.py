"""What training minimises: one loss, or one per output of a multi-output network.

With ``labelCols`` the network returns a tuple, output ``i`` is compared with label
column ``i`` by loss ``i`` (``loss=["cross_entropy", "mse"]``, or one name for all),
and the objective is ``sum(lossWeights[i] * loss_i)``. Each loss is the batch mean,
or with sample weights the weighted mean, so the combination stays exact across
ranks however the rows are spread.

Example:
    >>> import torch
    >>> obj = Objective.of(["cross_entropy", "mse"], ["kind", "size"], [1.0, 0.5])
    >>> [s.task for s in obj.specs]
    ['multiclass', 'regression']
    >>> total, parts = obj.compute((torch.zeros(2, 3), torch.ones(2, 1)),
    ...                            [torch.tensor([0, 1]), torch.tensor([1.0, 3.0])])
    >>> round(float(total), 4), [round(float(p), 4) for p in parts]
    (2.0986, [1.0986, 2.0])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sparkdl.errors import ConfigError
from sparkdl.losses import LossSpec, resolve_loss


@dataclass(frozen=True)
class Objective:
    """The losses of a network's outputs and their weights.

    Attributes:
        losses: one loss (name or callable) per output.
        weights: one weight per output.
        labels: the label columns of a multi-output network, ``None`` for one output.
    """

    losses: tuple[str | Callable, ...]
    weights: tuple[float, ...]
    labels: tuple[str, ...] | None = None

    @classmethod
    def of(cls, loss, labels: Sequence[str] | None = None,
           weights: Sequence[float] | None = None) -> Objective:
        """Validate ``loss``/``labelCols``/``lossWeights`` into an objective.

        Raises:
            ConfigError: for lists of other lengths than ``labelCols``, unknown
                losses or weights that are not finite numbers >= 0.
        """
        count = len(labels) if labels else 1
        losses = list(loss) if isinstance(loss, (list, tuple)) else [loss] * count
        if len(losses) != count:
            raise ConfigError(
                f"loss lists {len(losses)} losses for {count} label column(s) "
                f"{list(labels or [])}: give one loss per labelCols column, or one for all. "
                f"Received: loss={loss!r}")
        for one in losses:
            resolve_loss(one)
        weights = [1.0] * count if weights is None or not len(weights) else list(weights)
        if len(weights) != count or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
                and w >= 0 for w in weights):
            raise ConfigError(f"lossWeights must hold {count} finite number(s) >= 0, one per "
                              f"labelCols column. Received: lossWeights={weights!r}")
        return cls(tuple(losses), tuple(float(w) for w in weights),
                   tuple(labels) if labels else None)

    @property
    def specs(self) -> list[LossSpec]:
        return [resolve_loss(loss) for loss in self.losses]

    @property
    def tasks(self) -> list[str]:
        return [s.task for s in self.specs]

    def outputs(self, output) -> tuple[torch.Tensor, ...]:
        """The network's output as one tensor per label column."""
        if self.labels is None:
            return (output,)
        if not isinstance(output, (tuple, list)) or len(output) != len(self.labels):
            got = f"a {type(output).__name__} of {len(output)}" if isinstance(
                output, (tuple, list)) else f"one {type(output).__name__}"
            raise ConfigError(f"With labelCols={list(self.labels)} the model must return a "
                              f"tuple of {len(self.labels)} tensors, one per label column; it "
                              f"returned {got}.")
        return tuple(output)

    def compute(self, output, targets: Sequence[torch.Tensor],
                sample_weights: np.ndarray | None = None,
                device: torch.device | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The combined mean loss of a batch, and each output's.

        Args:
            output: what the network returned.
            targets: one tensor per output.
            sample_weights: per-row weights (``sampleWeightCol``), or ``None``.
            device: where ``output`` lives.
        """
        parts = [_mean_loss(spec, out, target, sample_weights, device)
                 for spec, out, target in zip(self.specs, self.outputs(output), targets)]
        if self.labels is None:
            return parts[0], parts
        total = sum(w * p for w, p in zip(self.weights, parts))
        return total, parts


def _mean_loss(spec: LossSpec, output: torch.Tensor, target: torch.Tensor,
               weights: np.ndarray | None, device) -> torch.Tensor:
    if weights is None:
        return spec.fn(output, target)
    w = torch.from_numpy(weights).to(device if device is not None else output.device)
    total = float(weights.sum())
    return (spec.per_row(output, target) * w).sum() / (total if total > 0 else 1.0)
