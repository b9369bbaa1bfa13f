"""Launch overhead: a trivial 2-worker training run, sparkdl vs Spark's TorchDistributor.

On ``local-cluster[2,1,1024]`` with warm executors (a throwaway Spark job and a
throwaway run of each launcher first), this times:

* sparkdl: wall time of ``TorchEstimator(numWorkers=2, epochs=1).fit(df)`` on a
  tiny DataFrame (one linear layer, a handful of steps, gloo allreduce). The whole
  ``fit`` is counted, schema checks and result collection included.
* TorchDistributor: wall time of ``TorchDistributor(num_processes=2,
  local_mode=False, use_gpu=False).run(fn)`` where ``fn`` joins a gloo group and
  takes one DistributedDataParallel optimizer step on one linear layer.

Target: TorchDistributor / sparkdl >= 5.

    .venv/bin/python bench/launch_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

import torch
from _common import median, save, spark_session, verdict

TARGET = 5.0


def one_ddp_step() -> float:
    """Run by TorchDistributor in each torchrun process: one gloo step, one linear layer."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    torch.manual_seed(dist.get_rank())
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(torch.randn(8, 4)).pow(2).mean()
    loss.backward()
    opt.step()
    dist.destroy_process_group()
    return loss.item()


def time_sparkdl(spark, runs: int) -> dict:
    from pyspark.sql import functions as F

    from sparkdl import TorchEstimator

    df = spark.range(256).select(
        F.array(*[F.rand(i) for i in range(4)]).alias("features"),
        (F.col("id") % 2).alias("label")).cache()
    df.count()
    est = TorchEstimator(model=torch.nn.Linear(4, 2), loss="cross_entropy", optimizer="sgd",
                         optimizerParams={"lr": 0.1}, batchSize=32, epochs=1, numWorkers=2)
    est.fit(df)  # warm-up: Python workers, imports, torch on both executors
    walls, train = [], []
    for _ in range(runs):
        began = time.perf_counter()
        model = est.fit(df)
        walls.append(time.perf_counter() - began)
        train.append(sum(model.history.metric("seconds")))
    return {"fit_wall_seconds": walls, "train_loop_seconds": train,
            "median_s": median(walls),
            "median_outside_train_loop_s": median(w - t for w, t in zip(walls, train))}


def time_distributor(runs: int) -> dict:
    from pyspark import cloudpickle
    from pyspark.ml.torch.distributor import TorchDistributor

    if __name__ != "__main__":  # bench/ is not importable from the torchrun processes
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    dist = TorchDistributor(num_processes=2, local_mode=False, use_gpu=False)
    try:
        dist.run(one_ddp_step)  # warm-up
        walls = []
        for _ in range(runs):
            began = time.perf_counter()
            dist.run(one_ddp_step)
            walls.append(time.perf_counter() - began)
    except Exception as exc:  # noqa: BLE001 - recorded in the results, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"[:4000],
                "traceback": traceback.format_exc()[-4000:]}
    return {"run_wall_seconds": walls, "median_s": median(walls)}


def main(quick: bool = False) -> dict:
    spark_runs, dist_runs = (3, 1) if quick else (5, 3)
    with spark_session("local-cluster[2,1,1024]", "bench-launch-overhead") as spark:
        spark.range(1000).repartition(2).count()  # executors up, Python workers started
        ours = time_sparkdl(spark, spark_runs)
        theirs = time_distributor(dist_runs)

    print(f"[launch_overhead] sparkdl fit (2 workers, warm): median {ours['median_s']:.2f}s "
          f"(all {[round(w, 2) for w in ours['fit_wall_seconds']]}; outside the training "
          f"loop {ours['median_outside_train_loop_s']:.2f}s)")
    result = {"quick": quick, "master": "local-cluster[2,1,1024]", "sparkdl": ours,
              "torch_distributor": theirs, "target": f">= {TARGET}x"}
    if "error" in theirs:
        print(f"[launch_overhead] TorchDistributor FAILED: {theirs['error'][:500]}")
        result.update(ratio=None, target_met=None)
    else:
        ratio = theirs["median_s"] / ours["median_s"]
        walls = [round(w, 2) for w in theirs["run_wall_seconds"]]
        print(f"[launch_overhead] TorchDistributor.run (2 processes, warm): median "
              f"{theirs['median_s']:.2f}s (all {walls})")
        print(f"[launch_overhead] ratio TorchDistributor/sparkdl = {ratio:.1f}x  "
              f"(target >= {TARGET}x: {verdict(ratio >= TARGET)})")
        result.update(ratio=ratio, target_met=ratio >= TARGET)
    save("launch_overhead", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    main(parser.parse_args().quick)
