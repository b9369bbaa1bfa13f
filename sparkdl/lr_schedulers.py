"""Learning-rate schedulers by name (``lrScheduler``), and when each one steps.

A named scheduler is built on the rank from ``lrSchedulerParams``; the settings a
run already knows (``T_max`` of ``cosine``, ``total_steps`` of ``onecycle``) are
filled in from the number of epochs and optimizer steps. Each scheduler steps
after every epoch or after every optimizer step (``interval``): ``onecycle``
per step, the others per epoch, and ``plateau`` with the epoch's value of its
``monitor`` metric (``val_loss`` where there is a validation set, else
``train_loss``).

Example:
    >>> import torch
    >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    >>> sched = build_scheduler(SchedulerPlan("step", {"step_size": 2}), opt, 10, 5)
    >>> type(sched.scheduler).__name__, sched.interval
    ('StepLR', 'epoch')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sparkdl.errors import ConfigError

_NAMED: dict[str, type] = {
    "step": torch.optim.lr_scheduler.StepLR,
    "cosine": torch.optim.lr_scheduler.CosineAnnealingLR,
    "onecycle": torch.optim.lr_scheduler.OneCycleLR,
    "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau,
}
#: Keys of ``lrSchedulerParams`` that sparkdl reads itself (not the scheduler's).
_OWN_KEYS = ("interval", "monitor")
INTERVALS = ("epoch", "step")


def scheduler_names() -> list[str]:
    """Names accepted by ``lrScheduler``."""
    return sorted(_NAMED)


@dataclass(frozen=True)
class SchedulerPlan:
    """What ``lrScheduler``/``lrSchedulerParams`` ask for, shipped to every rank.

    Attributes:
        scheduler: a name from :func:`scheduler_names` or a callable
            ``(optimizer) -> scheduler``.
        params: the scheduler's keyword arguments, plus sparkdl's own ``interval``
            (``"epoch"`` or ``"step"``) and, for ``plateau``, ``monitor``.
    """

    scheduler: str | Callable
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not callable(self.scheduler) and self.scheduler not in _NAMED:
            raise ConfigError(
                f"Unknown lrScheduler {self.scheduler!r}. Valid choices: {scheduler_names()}, "
                f"or a callable (optimizer) -> torch.optim.lr_scheduler.LRScheduler. "
                f"Received: lrScheduler={self.scheduler!r}")
        interval = self.params.get("interval", self.default_interval)
        if interval not in INTERVALS:
            raise ConfigError(f"lrSchedulerParams interval must be one of {list(INTERVALS)}. "
                              f"Received: interval={interval!r}")
        if self.scheduler == "plateau" and interval != "epoch":
            raise ConfigError("lrScheduler='plateau' steps once per epoch on a metric: drop "
                              "interval='step' from lrSchedulerParams.")

    @property
    def default_interval(self) -> str:
        # A callable's own scheduler decides at build time (see build_scheduler).
        return "step" if self.scheduler == "onecycle" else "epoch"

    @property
    def interval(self) -> str:
        return self.params.get("interval", self.default_interval)

    def monitor(self, validating: bool) -> str:
        """The metric ``plateau`` watches."""
        return self.params.get("monitor", "val_loss" if validating else "train_loss")


@dataclass
class BuiltScheduler:
    """A scheduler and how the loop drives it."""

    scheduler: object
    interval: str
    monitor: str | None = None

    def after_step(self) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def after_epoch(self, record: dict) -> None:
        if self.interval != "epoch":
            return
        if self.monitor is not None:
            value = record.get(self.monitor)
            if value is None:
                raise ConfigError(
                    f"lrScheduler='plateau' monitors {self.monitor!r}, which the history "
                    f"does not have (it has {sorted(k for k in record if k != 'epoch')}). Set "
                    "lrSchedulerParams={'monitor': ...} to one of them.")
            self.scheduler.step(value)
        else:
            self.scheduler.step()


def build_scheduler(plan: SchedulerPlan, optimizer: torch.optim.Optimizer, epochs: int,
                    steps_per_epoch: int, validating: bool = False) -> BuiltScheduler:
    """The scheduler of ``plan`` over ``optimizer``.

    Args:
        plan: the scheduler asked for.
        optimizer: the optimizer it adjusts (the backend's wrapper is fine).
        epochs: epochs of the whole run (for ``cosine``'s default ``T_max``).
        steps_per_epoch: optimizer steps per epoch (``onecycle``'s ``total_steps``).
        validating: whether there is a validation set (``plateau``'s monitor).

    Raises:
        ConfigError: for parameters the scheduler refuses, or a callable that does
            not return a scheduler.
    """
    params = {k: v for k, v in plan.params.items() if k not in _OWN_KEYS}
    monitor = None
    if callable(plan.scheduler):
        scheduler = plan.scheduler(optimizer)
        if not hasattr(scheduler, "step") or not hasattr(scheduler, "state_dict"):
            raise ConfigError("The lrScheduler callable must return a torch scheduler (with "
                              f"step() and state_dict()). Received: {type(scheduler).__name__}")
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            monitor = plan.monitor(validating)
        interval = plan.params.get("interval") or (
            "step" if isinstance(scheduler, (torch.optim.lr_scheduler.OneCycleLR,
                                             torch.optim.lr_scheduler.CyclicLR)) else "epoch")
        return BuiltScheduler(scheduler, interval, monitor)
    per_step = plan.interval == "step"
    if plan.scheduler == "cosine":
        params.setdefault("T_max", epochs * steps_per_epoch if per_step else epochs)
    elif plan.scheduler == "onecycle":
        params.setdefault("max_lr", optimizer.param_groups[0]["lr"])
        if "epochs" not in params and "steps_per_epoch" not in params:
            params.setdefault("total_steps", epochs * steps_per_epoch if per_step else epochs)
    elif plan.scheduler == "step":
        params.setdefault("step_size", 1)
    elif plan.scheduler == "plateau":
        monitor = plan.monitor(validating)
        params.setdefault("mode", "max" if _higher_is_better(monitor) else "min")
    try:
        scheduler = _NAMED[plan.scheduler](optimizer, **params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"lrSchedulerParams={plan.params!r} are not valid for "
                          f"lrScheduler={plan.scheduler!r}: {exc}") from None
    return BuiltScheduler(scheduler, plan.interval, monitor)


def _higher_is_better(metric: str) -> bool:
    return not (metric.endswith("loss") or metric.endswith("mae") or metric.endswith("rmse"))


def check_scheduler(plan: SchedulerPlan | None, optimizer: torch.optim.Optimizer | None = None
                    ) -> None:
    """Build a named scheduler once over a dummy optimizer, so bad parameters fail on
    the driver rather than on every rank.

    Raises:
        ConfigError: for parameters the scheduler refuses.
    """
    if plan is None or callable(plan.scheduler):
        return
    if optimizer is None:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    build_scheduler(plan, optimizer, epochs=2, steps_per_epoch=2)
