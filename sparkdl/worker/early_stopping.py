"""Early stopping (``earlyStopping``): end the fit when a metric stops improving.

Every rank decides from the same epoch record (its figures are reduced across
ranks), so all ranks stop after the same epoch without exchanging a word. The
state (best value, its epoch, epochs without improvement and, with
``restoreBest``, the best weights) travels in checkpoints and in the driver's
restart state, so a resumed fit stops where an uninterrupted one would.

Example:
    >>> stop = EarlyStopping.from_param({"monitor": "val_loss", "patience": 2})
    >>> state = EarlyStoppingState()
    >>> [stop.update(state, {"epoch": e, "val_loss": v}) for e, v in
    ...  enumerate([0.5, 0.4, 0.45, 0.41], start=1)]
    [None, None, None, 'val_loss did not improve for 2 epochs (best 0.4 at epoch 2)']
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparkdl.errors import ConfigError

_KEYS = {"monitor", "patience", "mode", "restoreBest", "minDelta"}


@dataclass(frozen=True)
class EarlyStopping:
    """When to stop.

    Attributes:
        monitor: the history key watched (``val_loss``, ``val_accuracy``,
            ``train_loss``, ...).
        patience: epochs without improvement before stopping.
        mode: ``"min"`` or ``"max"``; default: ``max`` for accuracy-like metrics,
            ``min`` for losses and errors.
        restore_best: end with the weights of the best epoch rather than the last.
        min_delta: the least change that counts as an improvement.
    """

    monitor: str = "val_loss"
    patience: int = 3
    mode: str = "min"
    restore_best: bool = False
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.patience, int) or isinstance(self.patience, bool) or \
                self.patience < 0:
            raise ConfigError("earlyStopping patience must be an integer >= 0. "
                              f"Received: patience={self.patience!r}")
        if self.mode not in ("min", "max"):
            raise ConfigError(f"earlyStopping mode must be 'min' or 'max'. "
                              f"Received: mode={self.mode!r}")
        if not isinstance(self.min_delta, (int, float)) or self.min_delta < 0:
            raise ConfigError("earlyStopping minDelta must be a number >= 0. "
                              f"Received: minDelta={self.min_delta!r}")

    @classmethod
    def from_param(cls, value: dict | None) -> EarlyStopping | None:
        """The ``earlyStopping`` Param as a config (``None``/``{}``: no early stopping).

        Raises:
            ConfigError: for unknown keys or bad values.
        """
        if not value:
            return None
        unknown = set(value) - _KEYS
        if unknown:
            raise ConfigError(f"earlyStopping has unknown key(s) {sorted(unknown)}. Valid: "
                              f"{sorted(_KEYS)}. Received: earlyStopping={value!r}")
        monitor = value.get("monitor", "val_loss")
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(f"earlyStopping monitor must be a metric name such as "
                              f"'val_loss'. Received: monitor={monitor!r}")
        lower = monitor.endswith(("loss", "mae", "rmse"))
        return cls(monitor, value.get("patience", 3),
                   value.get("mode", "min" if lower else "max"),
                   bool(value.get("restoreBest", False)), value.get("minDelta", 0.0))

    def check_monitor(self, available: list[str]) -> None:
        """Refuse a monitor the history will not have, before training.

        Raises:
            ConfigError: naming the metrics that will be there.
        """
        if self.monitor not in available:
            hint = (" A val_* metric needs a validation set: set validationFraction or "
                    "validationCol." if self.monitor.startswith("val_") else "")
            raise ConfigError(f"earlyStopping monitors {self.monitor!r}, which the history "
                              f"will not have; it will have {available}.{hint}")

    def update(self, state: EarlyStoppingState, record: dict,
               module: torch.nn.Module | None = None) -> str | None:
        """Take the epoch's ``record``; return why training stops now, or None."""
        value = record.get(self.monitor)
        if value is None:
            raise ConfigError(f"earlyStopping monitors {self.monitor!r}, which epoch "
                              f"{record.get('epoch')} did not report.")
        better = state.best is None or (
            value < state.best - self.min_delta if self.mode == "min"
            else value > state.best + self.min_delta)
        if better:
            state.best, state.best_epoch, state.waited = float(value), record["epoch"], 0
            if self.restore_best and module is not None:
                state.best_weights = {k: v.detach().clone()
                                      for k, v in module.state_dict().items()}
            return None
        state.waited += 1
        if state.waited < self.patience:
            return None
        return (f"{self.monitor} did not improve for {state.waited} epochs (best "
                f"{state.best:g} at epoch {state.best_epoch})")


@dataclass
class EarlyStoppingState:
    """What early stopping remembers between epochs (and across a resume)."""

    best: float | None = None
    best_epoch: int = 0
    waited: int = 0
    stopped: str | None = None
    best_weights: dict | None = None

    def to_dict(self) -> dict:
        """A ``torch.save``-able dict (tensors, numbers and strings only)."""
        out = {"best": self.best, "best_epoch": self.best_epoch, "waited": self.waited,
               "stopped": self.stopped}
        if self.best_weights is not None:
            out["best_weights"] = self.best_weights
        return out

    @classmethod
    def from_dict(cls, value: dict | None) -> EarlyStoppingState:
        value = value or {}
        return cls(value.get("best"), int(value.get("best_epoch", 0)),
                   int(value.get("waited", 0)), value.get("stopped"),
                   value.get("best_weights"))
