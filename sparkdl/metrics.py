"""Epoch metrics (``metrics=[...]``), exact over all ranks.

Each rank keeps sums (correct predictions, per-class true/false positives,
absolute and squared errors) or, for ``auc``, its scores; at the end of an epoch
the sums are added across ranks and the scores gathered, so the figures are the
ones a single process would compute over the whole set, never an average of
per-rank figures (which is wrong as soon as shards differ in size).

Example:
    >>> import torch
    >>> sums = MetricSums(("accuracy", "f1"), "multiclass")
    >>> sums.add(torch.tensor([[2.0, 0.1], [0.3, 1.0], [0.9, 0.2]]),
    ...          torch.tensor([0, 1, 1]), torch.tensor(0.5))
    >>> {k: round(v, 3) for k, v in sums.figures().items()}
    {'loss': 0.5, 'accuracy': 0.667, 'f1': 0.667}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from sparkdl.errors import ConfigError

#: Every metric, and the tasks it applies to.
METRICS: dict[str, tuple[str, ...]] = {
    "accuracy": ("multiclass", "binary"),
    "top5_accuracy": ("multiclass",),
    "f1": ("multiclass", "binary"),
    "auc": ("multiclass", "binary"),
    "mae": ("regression",),
    "rmse": ("regression",),
}


def default_metrics(task: str) -> tuple[str, ...]:
    """What a fit reports without ``metrics``: accuracy for classifiers."""
    return ("accuracy",) if task in ("multiclass", "binary") else ()


def check_metrics(names: Sequence[str], task: str | Sequence[str]) -> tuple[str, ...]:
    """Validate ``metrics`` against the loss's task (on the driver); a multi-output
    model's outputs each report the metrics that apply to their own task.

    Raises:
        ConfigError: for an unknown metric or one that applies to no output's task.

    Example:
        >>> check_metrics(["mae", "rmse"], "regression")
        ('mae', 'rmse')
    """
    for name in names:
        if name not in METRICS:
            raise ConfigError(f"Unknown metric {name!r}. Valid choices: {sorted(METRICS)}. "
                              f"Received: metrics={list(names)}")
        tasks = [task] if isinstance(task, str) else list(task)
        if not set(tasks) & set(METRICS[name]):
            valid = [m for m, applies in METRICS.items() if set(tasks) & set(applies)]
            kind = f"a {tasks[0]} loss" if len(set(tasks)) == 1 else f"losses {tasks}"
            raise ConfigError(f"Metric {name!r} does not apply to {kind}; for it use "
                              f"{valid}. Received: metrics={list(names)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"metrics lists a metric twice. Received: metrics={list(names)}")
    return tuple(names)


class MetricSums:
    """One rank's running sums of an epoch's loss and metrics.

    Args:
        names: the metrics to compute.
        task: ``multiclass`` (output: logits ``(n, classes)``), ``binary`` (logits,
            targets in [0, 1]) or ``regression``.
    """

    def __init__(self, names: Sequence[str], task: str):
        self.names, self.task = tuple(names), task
        self.loss = 0.0
        self.loss_weight = 0.0  # rows, or their summed sample weights
        self.rows = 0
        self._sums: dict[str, torch.Tensor] = {}
        self._scores: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def _add(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().to("cpu", torch.float64)
        self._sums[key] = self._sums[key] + value if key in self._sums else value

    @property
    def running_loss(self) -> float:
        """This rank's mean loss so far."""
        return self.loss / self.loss_weight if self.loss_weight else float("nan")

    def add(self, output: torch.Tensor, target: torch.Tensor, mean_loss: torch.Tensor,
            weight_sum: float | None = None) -> None:
        """Count one batch: its outputs, targets and mean loss (weighted by sample
        weights summing to ``weight_sum``, if given)."""
        n = len(target)
        weight = float(n) if weight_sum is None else weight_sum
        self.loss += float(mean_loss) * weight
        self.loss_weight += weight
        self.rows += n
        if not self.names:
            return
        output = output.detach().float()
        if self.task == "multiclass":
            self._add_multiclass(output, target)
        elif self.task == "binary":
            self._add_binary(output, target.reshape(output.shape).float())
        else:
            err = output.reshape(n, -1) - target.reshape(n, -1).to(output.dtype)
            self._add("abs", err.abs().sum().reshape(1))
            self._add("sq", err.square().sum().reshape(1))
            self._add("elements", torch.tensor([float(err.numel())]))

    def _add_multiclass(self, output: torch.Tensor, target: torch.Tensor) -> None:
        classes = output.shape[1]
        predicted = output.argmax(dim=1)
        if "accuracy" in self.names:
            self._add("correct", (predicted == target).sum().reshape(1))
        if "top5_accuracy" in self.names:
            top = output.topk(min(5, classes), dim=1).indices
            self._add("top5", (top == target[:, None]).any(dim=1).sum().reshape(1))
        if "f1" in self.names:
            hit = predicted == target
            self._add("tp", torch.bincount(target[hit], minlength=classes))
            self._add("pred", torch.bincount(predicted, minlength=classes))
            self._add("true", torch.bincount(target, minlength=classes))
        if "auc" in self.names:
            self._scores.append(torch.softmax(output, dim=1).cpu())
            self._targets.append(target.cpu().float()[:, None])

    def _add_binary(self, output: torch.Tensor, target: torch.Tensor) -> None:
        n = len(output)
        predicted = output > 0
        truth = target > 0.5
        if "accuracy" in self.names:
            hits = (predicted == truth).reshape(n, -1).float().mean(dim=1).sum()
            self._add("correct", hits.reshape(1))
        if "f1" in self.names:
            self._add("tp", (predicted & truth).sum().reshape(1))
            self._add("pred", predicted.sum().reshape(1))
            self._add("true", truth.sum().reshape(1))
        if "auc" in self.names:
            self._scores.append(output.reshape(n, -1).cpu())
            self._targets.append(truth.reshape(n, -1).cpu().float())

    def reduce(self, collective, rank: int, prefix: str) -> dict:
        """The epoch's figures over all ranks, as ``{prefix}_loss`` etc.

        Every rank calls it in the same order (it runs collectives).
        """
        keys = _sum_keys(self.names, self.task)
        # A rank without rows has no per-class sums: learn their sizes from the others.
        sizes = collective.allreduce_sum(torch.tensor(
            [float(self._sums[k].numel()) if k in self._sums else 0.0 for k in keys]
            + [1.0 if self._sums else 0.0], dtype=torch.float64))
        holders = max(1, int(sizes[-1]))
        parts = [torch.tensor([self.loss, float(self.rows), self.loss_weight],
                              dtype=torch.float64)]
        for k, size in zip(keys, sizes[:-1].tolist()):
            parts.append(self._sums[k].reshape(-1) if k in self._sums
                         else torch.zeros(int(size) // holders, dtype=torch.float64))
        total = collective.allreduce_sum(torch.cat(parts))
        sums, offset = {}, 3
        for k, part in zip(keys, parts[1:]):
            sums[k] = total[offset:offset + part.numel()]
            offset += part.numel()
        loss, rows, loss_weight = float(total[0]), int(total[1]), float(total[2])
        gathered = _gather(collective, rank, self._scores, self._targets, self.task) \
            if "auc" in self.names else None
        out = {f"{prefix}_rows": rows}
        if rows:
            out.update({f"{prefix}_{k}": v for k, v in _figures(
                self.names, self.task, loss, loss_weight, rows, sums, gathered).items()})
        return out

    def figures(self) -> dict:
        """This rank's figures alone (a world of one)."""
        sums = dict(self._sums)
        scores = (torch.cat(self._scores).double(), torch.cat(self._targets).double()) \
            if self._scores else None
        return _figures(self.names, self.task, self.loss, self.loss_weight, self.rows, sums,
                        scores)


def _sum_keys(names: tuple[str, ...], task: str) -> list[str]:
    """The sums :class:`MetricSums` keeps for ``names``, in a fixed order."""
    keys = []
    if task == "regression":
        if names:
            keys += ["abs", "sq", "elements"]
        return keys
    if "accuracy" in names:
        keys.append("correct")
    if "top5_accuracy" in names:
        keys.append("top5")
    if "f1" in names:
        keys += ["tp", "pred", "true"]
    return keys


def _gather(collective, rank: int, scores: list[torch.Tensor], targets: list[torch.Tensor],
            task: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Every rank's scores and targets, in rank order, on every rank.

    Built on the backends' sum: each rank writes its rows at its offset into zeros,
    and the sum of those is the concatenation (adding zeros is exact).
    """
    local = torch.cat([torch.cat(scores), torch.cat(targets)], dim=1).double() if scores \
        else None
    # rows per rank, plus the row width (known only to ranks with rows) and their number
    counts = torch.zeros(collective.size() + 2, dtype=torch.float64)
    if local is not None:
        counts[rank], counts[-2], counts[-1] = len(local), local.shape[1], 1.0
    counts = collective.allreduce_sum(counts)
    width = int(counts[-2]) // max(1, int(counts[-1]))
    counts = counts[:-2].long()
    total = int(counts.sum())
    if not total or not width:
        return None
    buffer = torch.zeros((total, width), dtype=torch.float64)
    start = int(counts[:rank].sum())
    if local is not None:
        buffer[start:start + len(local)] = local
    buffer = collective.allreduce_sum(buffer.reshape(-1)).reshape(total, width)
    # multiclass rows: class probabilities then the class id; binary: scores then targets
    split = width - 1 if task == "multiclass" else width // 2
    return buffer[:, :split], buffer[:, split:]


def _figures(names, task, loss, loss_weight, rows, sums, gathered) -> dict:
    out = {"loss": loss / loss_weight if loss_weight else float("nan")}
    for name in names:
        if name == "accuracy":
            out[name] = float(sums["correct"][0]) / rows
        elif name == "top5_accuracy":
            out[name] = float(sums["top5"][0]) / rows
        elif name == "f1":
            out[name] = _f1(sums["tp"], sums["pred"], sums["true"])
        elif name == "auc":
            out[name] = _auc(*gathered, task) if gathered is not None else float("nan")
        elif name == "mae":
            out[name] = float(sums["abs"][0] / sums["elements"][0])
        elif name == "rmse":
            out[name] = math.sqrt(float(sums["sq"][0] / sums["elements"][0]))
    return out


def _f1(tp: torch.Tensor, predicted: torch.Tensor, true: torch.Tensor) -> float:
    """F1 of the positive class (binary) or the macro mean over the classes that
    occur in the targets or the predictions (multiclass), as scikit-learn's."""
    tp, predicted, true = (t.double() for t in (tp, predicted, true))
    present = (predicted + true) > 0
    if not bool(present.any()):
        return 0.0
    f1 = 2 * tp[present] / (predicted[present] + true[present])
    return float(f1.mean())


def _auc(scores: torch.Tensor, targets: torch.Tensor, task: str) -> float:
    """Area under the ROC curve: binary (per output column, averaged) or one class
    against the rest, averaged over the classes that have both (multiclass)."""
    s, t = scores.numpy(), targets.numpy()
    if task == "multiclass":
        labels = t[:, 0].astype(np.int64)
        columns = [(s[:, c], labels == c) for c in range(s.shape[1])]
    else:
        columns = [(s[:, c], t[:, c] > 0.5) for c in range(s.shape[1])]
    aucs = [_binary_auc(score, positive) for score, positive in columns
            if 0 < positive.sum() < len(positive)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _binary_auc(score: np.ndarray, positive: np.ndarray) -> float:
    # Mann-Whitney U with tied scores given their average rank: the exact ROC area.
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class OutputSums:
    """The epoch sums of a network with one output or several (``labelCols``).

    One output keeps :class:`MetricSums`' keys (``train_loss``, ``train_accuracy``);
    several add, next to the combined ``train_loss``, each output's own loss and
    metrics under its label column (``train_<label>_loss``, ``train_<label>_mae``).

    Args:
        metrics: per output, the metric names.
        tasks: per output, its task.
        labels: the label columns of a multi-output network, or ``None``.
    """

    def __init__(self, metrics: Sequence[Sequence[str]], tasks: Sequence[str],
                 labels: Sequence[str] | None = None):
        self.labels = tuple(labels) if labels is not None else None
        self.parts = [MetricSums(m, t) for m, t in zip(metrics, tasks)]
        self.total = MetricSums((), "regression") if self.labels is not None else None

    @property
    def running_loss(self) -> float:
        return (self.total or self.parts[0]).running_loss

    def add(self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
            loss: torch.Tensor, parts: Sequence[torch.Tensor],
            weight_sum: float | None = None) -> None:
        """Count a batch: each output with its target and loss, and the combined loss."""
        if self.total is not None:
            self.total.add(outputs[0], targets[0], loss, weight_sum)
        for sums, output, target, part in zip(self.parts, outputs, targets, parts):
            sums.add(output, target, part, weight_sum)

    def reduce(self, collective, rank: int, prefix: str) -> dict:
        """The epoch's figures over all ranks (collectives: every rank calls it)."""
        if self.total is None:
            return self.parts[0].reduce(collective, rank, prefix)
        out = self.total.reduce(collective, rank, prefix)
        for label, sums in zip(self.labels, self.parts):
            figures = sums.reduce(collective, rank, f"{prefix}_{label}")
            figures.pop(f"{prefix}_{label}_rows", None)
            out.update(figures)
        return out
