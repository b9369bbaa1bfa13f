"""Epoch time: sparkdl with one worker vs a hand-written single-process PyTorch loop.

Both train the same MLP (256-512-512-10, Adam, cross-entropy) on the same synthetic
rows with the same batch size, reshuffling every epoch, with one torch thread (the
executor has one core). sparkdl's time is the per-epoch ``seconds`` recorded in
``model.history`` (first epoch skipped as warm-up, median of the rest) for
``TorchEstimator(numWorkers=1)`` on ``local-cluster[1,1,1024]``; the baseline is
the median epoch of the plain loop over in-memory tensors (first epoch skipped too),
run once before and once after sparkdl.

Target: sparkdl / plain <= 1.15.

    .venv/bin/python bench/epoch_time.py [--quick]
"""

from __future__ import annotations

import tempfile
import time

import torch
from _common import cli, median, save, spark_session, synthetic, verdict, write_parquet

TARGET = 1.15
FEATURES, HIDDEN, CLASSES = 256, 512, 10


def make_mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, CLASSES))


def plain_loop(x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int) -> list[float]:
    """What a user would write by hand: shuffle, slice, forward, backward, step."""
    torch.set_num_threads(1)
    model = make_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(epochs):
        began = time.perf_counter()
        model.train()
        total = 0.0
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            xb, yb = x[idx], y[idx]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        seconds.append(time.perf_counter() - began)
    return seconds


def sparkdl_epochs(path: str, batch_size: int, epochs: int) -> tuple[list[float], float]:
    from sparkdl import TorchEstimator

    with spark_session("local-cluster[1,1,1024]", "bench-epoch-time") as spark:
        df = spark.read.parquet(path)
        est = TorchEstimator(model=make_mlp(), loss="cross_entropy", optimizer="adam",
                             optimizerParams={"lr": 1e-3}, batchSize=batch_size,
                             epochs=epochs, numWorkers=1, seed=0)
        began = time.perf_counter()
        model = est.fit(df)
        wall = time.perf_counter() - began
    return [float(s) for s in model.history.metric("seconds")], wall


def main(quick: bool = False) -> dict:
    rows, epochs, batch_size = (50_000, 3, 128) if quick else (100_000, 4, 128)
    x, y = synthetic(rows, FEATURES, CLASSES)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    # The plain loop runs before and after sparkdl, so slow drift in background
    # load on the machine affects both sides alike.
    plain_before = plain_loop(tx, ty, batch_size, epochs)
    with tempfile.TemporaryDirectory(prefix="sparkdl-bench-") as tmp:
        path = write_parquet(f"{tmp}/data", x, y)
        spark_s, fit_wall = sparkdl_epochs(path, batch_size, epochs)
    plain_after = plain_loop(tx, ty, batch_size, epochs)
    plain_s = plain_before + plain_after

    spark_med = median(spark_s[1:])
    plain_med = median(plain_before[1:] + plain_after[1:])
    ratio = spark_med / plain_med
    print(f"[epoch_time] rows={rows} batch={batch_size} epochs={epochs} threads=1")
    print(f"[epoch_time] sparkdl 1 worker : median epoch {spark_med:.3f}s  "
          f"(all {[round(s, 3) for s in spark_s]}, fit wall {fit_wall:.1f}s)")
    print(f"[epoch_time] plain PyTorch    : median epoch {plain_med:.3f}s  "
          f"(all {[round(s, 3) for s in plain_s]})")
    print(f"[epoch_time] ratio sparkdl/plain = {ratio:.3f}  (target <= {TARGET}: "
          f"{verdict(ratio <= TARGET)})")
    result = {
        "quick": quick,
        "config": {"rows": rows, "features": FEATURES, "hidden": HIDDEN,
                   "classes": CLASSES, "batch_size": batch_size, "epochs": epochs,
                   "torch_threads": 1, "master": "local-cluster[1,1,1024]"},
        "sparkdl_epoch_seconds": spark_s, "sparkdl_fit_wall_seconds": fit_wall,
        "plain_epoch_seconds": {"before": plain_before, "after": plain_after},
        "sparkdl_median_s": spark_med, "plain_median_s": plain_med,
        "ratio": ratio, "target": f"<= {TARGET}", "target_met": ratio <= TARGET,
    }
    save("epoch_time", result)
    return result


if __name__ == "__main__":
    cli(main, __doc__, "smaller sizes")
