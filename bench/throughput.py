"""Training throughput: sparkdl with backend="horovod" vs backend="torch", and scaling.

Two networks on synthetic 64-feature, 10-class rows (Adam, cross-entropy, batch
64 per rank, no validation) on ``local-cluster[2,1,1024]`` (one core per executor):

* mlp: the digits-sized MLP 64-128-64-10;
* cnn: a small CNN on ``featureShape=[1, 8, 8]`` (two 3x3 convolutions, max-pool,
  linear head).

Each (network, backend, numWorkers in {1, 2}) fit runs interleaved with the
others for several rounds. Samples/s = ``train_rows / seconds`` per epoch from
``model.history`` (first epoch skipped as warm-up, median of the rest), best
round. Reported: horovod / torch samples/s at 2 workers, and the 1 -> 2 worker
scaling (samples/s ratio) of each backend.

Target: horovod / torch >= 0.9 at 2 workers (information only: scaling).

    .venv/bin/python bench/throughput.py [--quick]
"""

from __future__ import annotations

import tempfile

import torch
from _common import cli, median, save, spark_session, synthetic, verdict, write_parquet

TARGET = 0.9
FEATURES, CLASSES = 64, 10


def make_net(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "mlp":
        return torch.nn.Sequential(
            torch.nn.Linear(FEATURES, 128), torch.nn.ReLU(),
            torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, CLASSES))
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, CLASSES))


def fit_rate(df, kind: str, backend: str, workers: int, epochs: int) -> dict:
    from sparkdl import TorchEstimator

    extra = {"featureShape": [1, 8, 8]} if kind == "cnn" else {}
    est = TorchEstimator(model=make_net(kind), loss="cross_entropy", optimizer="adam",
                         optimizerParams={"lr": 1e-3}, batchSize=64, epochs=epochs,
                         numWorkers=workers, backend=backend, seed=0,
                         validationFraction=0.0, **extra)
    history = est.fit(df).history
    seconds = [float(s) for s in history.metric("seconds")[1:]] or history.metric("seconds")
    rows = history.metric("train_rows")[-1]
    return {"epoch_seconds": seconds, "train_rows": rows,
            "samples_per_s": rows / median(seconds)}


def main(quick: bool = False) -> dict:
    # rows per network so that an epoch takes >= 1 s at 2 workers (the CNN is slower)
    rows, epochs, rounds = ({"mlp": 40_000, "cnn": 12_000}, 2, 1) if quick else \
        ({"mlp": 120_000, "cnn": 40_000}, 3, 2)
    configs = [(k, b, w) for k in ("mlp", "cnn") for w in (2, 1) for b in ("horovod", "torch")]
    runs: dict[str, list] = {f"{k}/{b}/{w}": [] for k, b, w in configs}
    with tempfile.TemporaryDirectory() as tmp, \
            spark_session("local-cluster[2,1,1024]", "bench-throughput") as spark:
        dfs = {}
        for k, n in rows.items():
            dfs[k] = spark.read.parquet(
                write_parquet(f"{tmp}/{k}", *synthetic(n, FEATURES, CLASSES))).cache()
            dfs[k].count()
        fit_rate(dfs["cnn"], "mlp", "torch", 2, 1)  # warm-up: Python workers, imports
        for _ in range(rounds):
            for k, b, w in configs:
                runs[f"{k}/{b}/{w}"].append(fit_rate(dfs[k], k, b, w, epochs))
                print(f"[throughput] {k} {b:8s} {w} workers: "
                      f"{runs[f'{k}/{b}/{w}'][-1]['samples_per_s']:9.0f} samples/s", flush=True)
    best = {key: max(r["samples_per_s"] for r in rs) for key, rs in runs.items()}
    summary = {}
    for k in ("mlp", "cnn"):
        s = {"horovod_vs_torch_2w": best[f"{k}/horovod/2"] / best[f"{k}/torch/2"],
             **{f"scaling_{b}_1to2": best[f"{k}/{b}/2"] / best[f"{k}/{b}/1"]
                for b in ("horovod", "torch")}}
        summary[k] = s
        print(f"[throughput] {k}: samples/s at 2 workers horovod {best[f'{k}/horovod/2']:.0f}, "
              f"torch {best[f'{k}/torch/2']:.0f} -> horovod/torch {s['horovod_vs_torch_2w']:.2f}"
              f"; scaling 1->2 horovod {s['scaling_horovod_1to2']:.2f}x, "
              f"torch {s['scaling_torch_1to2']:.2f}x")
    ratio = min(s["horovod_vs_torch_2w"] for s in summary.values())
    print(f"[throughput] worst horovod/torch at 2 workers {ratio:.2f} "
          f"(target >= {TARGET}: {verdict(ratio >= TARGET)})")
    result = {"quick": quick, "master": "local-cluster[2,1,1024]", "rows": rows,
              "epochs": epochs, "rounds": rounds, "batch_size_per_rank": 64,
              "best_samples_per_s": best, "summary": summary, "runs": runs,
              "ratios": {f"{k} {name}": v for k, s in summary.items() for name, v in s.items()},
              "ratio": ratio, "target": f">= {TARGET}", "target_met": ratio >= TARGET}
    save("throughput", result)
    return result


if __name__ == "__main__":
    cli(main, __doc__, "fewer rows, epochs and rounds")
