"""What a training run reports back: per-epoch metrics, backend and workers.

Example:
    >>> h = TrainingHistory(epochs=[{"epoch": 1, "train_loss": 0.5}], backend="torch")
    >>> h.metric("train_loss")
    [0.5]
    >>> TrainingHistory.from_dict(h.to_dict()) == h
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class TrainingHistory:
    """The record of one ``fit``.

    Attributes:
        epochs: one dict per epoch: ``epoch``, ``train_loss``, ``train_accuracy``
            (classifiers), ``val_loss``/``val_accuracy`` when validating,
            row counts and ``seconds``.
        backend: the allreduce backend that ran.
        num_workers: ranks that trained.
        workers: per rank: ``rank``, ``pid``, ``executor_id``, ``host``, row counts,
            ``device``, ``backend_size``, ``warm_process`` (the rank ran in a
            process an earlier fit left imported on its executor) and ``seconds``
            (its phases: ``shard_write``, ``meet``, ``rank``, and within ``rank``
            ``backend_start``, ``train``, ``backend_stop`` where a child reports them).
        resumed_from_epoch: the checkpoint's epoch this fit continued from (0: none);
            ``epochs`` then starts with the epochs recorded in that checkpoint.
        attempts: one dict per run of the barrier job: ``attempt`` (1, 2, ...),
            ``started``/``ended`` (UTC, ISO 8601), ``status`` (``finished`` or
            ``failed``), ``resumed_from_epoch``; a failed one also ``cause`` and,
            where Spark names them, ``failed_rank`` and ``failed_executor``.
    """

    epochs: list[dict] = field(default_factory=list)
    backend: str = ""
    num_workers: int = 0
    workers: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0
    attempts: list[dict] = field(default_factory=list)

    @property
    def restarts(self) -> int:
        """How many times the barrier job ran again after a failure."""
        return max(len(self.attempts) - 1, 0)

    @property
    def stopped_epoch(self) -> int | None:
        """The epoch after which early stopping ended the fit, or ``None``."""
        stopped = [e["epoch"] for e in self.epochs if e.get("stopped_early")]
        return stopped[-1] if stopped else None

    @property
    def stop_reason(self) -> str | None:
        """Why early stopping ended the fit (the metric, its best value and epoch), or
        ``None`` if the fit ran all its epochs."""
        stopped = [e["stopped_early"] for e in self.epochs if e.get("stopped_early")]
        return stopped[-1] if stopped else None

    def metric(self, name: str) -> list:
        """The values of one metric, epoch by epoch (``None`` where absent)."""
        return [e.get(name) for e in self.epochs]

    def plot(self, metrics: list[str] | None = None, figsize: tuple[float, float] | None = None):
        """The training curves: one panel per metric, train and validation together.

        Needs matplotlib (``pip install 'sparkdl[notebook]'``). In a notebook the
        returned figure shows itself as the cell's result.

        Args:
            metrics: base names to draw (``"loss"``, ``"accuracy"``, ...); default
                every ``train_*``/``val_*`` metric the epochs recorded, except row counts.
            figsize: matplotlib's figure size; default 5 x 3.5 inches per panel.

        Returns:
            A ``matplotlib.figure.Figure``.

        Raises:
            ImportError: matplotlib is missing (the message says how to install it).
            ValueError: there are no epochs, or no such metric.

        Example::

            fig = model.history.plot()             # loss and accuracy panels
            fig.savefig("curves.png")
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError("TrainingHistory.plot needs matplotlib: pip install "
                              "'sparkdl[notebook]' (or matplotlib)") from exc
        if not self.epochs:
            raise ValueError("This history has no epochs to plot.")
        found = [k.split("_", 1)[1] for e in self.epochs for k in e
                 if k.startswith(("train_", "val_")) and not k.endswith("_rows")]
        available = list(dict.fromkeys(found))
        names = list(metrics) if metrics else available
        missing = [m for m in names if m not in available]
        if missing or not names:
            raise ValueError(f"No metric {missing or names} in this history; it has "
                             f"{available}.")
        # Figure, not pyplot: no global state, no GUI backend needed on a driver.
        figure = Figure(figsize=figsize or (5 * len(names), 3.5), layout="constrained")
        axes = figure.subplots(1, len(names), squeeze=False)[0]
        for ax, name in zip(axes, names):
            for prefix, label, style in (("train", "train", "-o"), ("val", "validation", "--s")):
                points = [(e["epoch"], e[f"{prefix}_{name}"]) for e in self.epochs
                          if isinstance(e.get(f"{prefix}_{name}"), (int, float))]
                if points:
                    ax.plot(*zip(*points), style, label=label, markersize=3)
            ax.set_title(name)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend()
        _show_in_ipython(Figure)
        return figure

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, i: int) -> dict:
        return self.epochs[i]

    def to_dict(self) -> dict:
        """A dict of strict JSON: a diverged run's NaN or infinite loss becomes
        ``"NaN"``/``"Infinity"``/``"-Infinity"``, as Spark writes non-finite double
        Params, since Spark's JVM metadata reader refuses bare ``NaN``.

        Example:
            >>> TrainingHistory([{"train_loss": float("nan")}]).to_dict()["epochs"]
            [{'train_loss': 'NaN'}]
        """
        data = asdict(self)
        data["epochs"] = _map_floats(data["epochs"], _encode)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainingHistory:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "epochs": _map_floats(data.get("epochs", []), _decode)})


def _show_in_ipython(figure_class) -> None:
    """Let IPython render a bare ``Figure`` as a PNG, as pyplot's inline backend would
    (a notebook that never imported pyplot would print ``<Figure size ...>``)."""
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import print_figure
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["image/png"].for_type(
            figure_class, lambda fig: print_figure(fig, "png"))


_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _encode(value):
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _decode(value):
    return _NON_FINITE.get(value, value) if isinstance(value, str) else value


def _map_floats(value, fn):
    if isinstance(value, dict):
        return {k: _map_floats(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_floats(v, fn) for v in value]
    return fn(value)
