"""Mixed precision (``precision``): autocast for the forward pass and the loss.

``"32"`` (the default) computes in float32. ``"bf16-mixed"`` runs the forward pass
and loss under ``torch.autocast`` with bfloat16 on the rank's device (CPU or
GPU); bfloat16 keeps float32's range, so no loss scaling is needed.
``"16-mixed"`` autocasts to float16 on CUDA and scales the loss with a
``GradScaler``: gradients are unscaled after they are summed across ranks (all
ranks see the same sums, so all skip the same overflowing steps), before
clipping and the optimizer step. Weights and optimizer state stay float32.

Example:
    >>> import torch
    >>> p = Precision.of("bf16-mixed", torch.device("cpu"))
    >>> with p.autocast():
    ...     y = torch.nn.Linear(4, 2)(torch.randn(3, 4))
    >>> y.dtype
    torch.bfloat16
"""

from __future__ import annotations

import contextlib

import torch

from sparkdl.errors import ConfigError

PRECISIONS = ("32", "bf16-mixed", "16-mixed")


def check_precision(value: str) -> str:
    """Validate ``precision`` (on the driver).

    Raises:
        ConfigError: for anything but :data:`PRECISIONS`.
    """
    if value not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}. "
                          f"Received: precision={value!r}")
    return value


class Precision:
    """The autocast context and loss scaler of one rank."""

    def __init__(self, name: str, device: torch.device, scaler=None):
        self.name, self.device, self.scaler = name, device, scaler

    @classmethod
    def of(cls, name: str, device: torch.device) -> Precision:
        """The precision ``name`` on ``device``.

        Raises:
            ConfigError: ``"16-mixed"`` on a rank without a GPU.
        """
        check_precision(name)
        if name == "16-mixed":
            if device.type != "cuda":
                raise ConfigError(
                    "precision='16-mixed' needs GPU executors (float16 autocast with loss "
                    f"scaling is a CUDA feature); this rank runs on {device}. Use "
                    "precision='bf16-mixed' on CPUs, or request GPUs with "
                    "spark.executor.resource.gpu.amount and spark.task.resource.gpu.amount.")
            return cls(name, device, torch.amp.GradScaler("cuda"))
        return cls(name, device)

    def autocast(self):
        """The context for the forward pass and the loss."""
        if self.name == "32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.name == "bf16-mixed" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring summed gradients back to their true size (before clipping)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
