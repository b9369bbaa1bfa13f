"""Launch overhead: a trivial 2-worker training run, sparkdl vs the peer launchers.

On ``local-cluster[2,1,1024]`` with warm executors (a throwaway Spark job and a
throwaway run of each launcher first), runs interleaved round by round:

* sparkdl ``backend="torch"``: wall time of ``TorchEstimator(numWorkers=2,
  epochs=1, backend="torch").fit(df)`` on a tiny DataFrame (one linear layer, a
  handful of steps, gloo allreduce), the whole ``fit`` counted.
* TorchDistributor: ``TorchDistributor(num_processes=2, local_mode=False,
  use_gpu=False).run(fn)``, ``fn`` joining a gloo group and taking one
  DistributedDataParallel step on one linear layer.
* sparkdl ``backend="horovod"``: the same ``fit`` with Horovod. Each rank trains
  in a fresh child process; a fit leaves an idle, imported one per executor
  for the next fit (``backendOptions={"warm_process": False}`` turns that
  off), so repeated fits skip the imports. The first (cold) fit of each launcher
  is reported as ``first_s``.
* Horovod on Spark: ``horovod.spark.run(fn, num_proc=2)``, ``fn`` calling
  ``hvd.init()`` and taking one ``hvd.DistributedOptimizer`` step on one linear layer.

Every launch is followed by a pause of ``SETTLE_S`` seconds and, after a sparkdl
Horovod fit, by a wait until the spare it leaves has finished importing (its CPU
time stops growing), so that work a launcher leaves running in the background
never lands on the next launcher's clock.

Each timed run directly follows an untimed run of the same launcher, so every
launcher is timed in the warm state it leaves itself. Interleaving alone would
time one of them cold: TorchDistributor's barrier tasks end the executors' Python
workers (after its run only the ``pyspark.daemon`` processes are left), so the
launcher after it starts fresh workers and, if it trains in them, imports torch
again (about two seconds per worker). That cold start is what the first run
(``first_s``) of each launcher reports.

Targets (medians): TorchDistributor / sparkdl-torch >= 5 and
horovod.spark.run / sparkdl-horovod >= 5.

    .venv/bin/python bench/launch_overhead.py [--quick]
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import torch
from _common import cli, median, save, spark_session, verdict

TARGET = 5.0
SETTLE_S = 3.0


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


def one_hvd_step() -> float:
    """Run by horovod.spark.run on each rank: one Horovod step, one linear layer."""
    import horovod.torch as hvd
    import torch

    hvd.init()
    torch.manual_seed(hvd.rank())
    model = torch.nn.Linear(4, 2)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                   named_parameters=model.named_parameters(), op=hvd.Sum)
    loss = model(torch.randn(8, 4)).pow(2).mean()
    loss.backward()
    opt.step()
    hvd.shutdown()
    return loss.item()


def _rank_process_cpu() -> int:
    """Summed CPU ticks of the sparkdl rank processes (spares) on this machine."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"sparkdl.worker.rank_child_main" not in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            continue
    return total


def wait_for_idle_spares(limit_s: float = 60.0) -> None:
    """Return once no spare is busy importing (CPU time flat for a second)."""
    deadline = time.monotonic() + limit_s
    last = _rank_process_cpu()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _rank_process_cpu()
        if now == last:
            return
        last = now


class Timer:
    """Times one launcher; the first call is a warm-up, an exception ends its runs."""

    def __init__(self, name: str, call):
        self.name, self.call, self.walls, self.extra, self.error = name, call, [], [], None
        self.first = None

    def run(self, warmup: bool = False) -> None:
        if self.error:
            return
        try:
            began = time.perf_counter()
            out = self.call()
            wall = time.perf_counter() - began
        except Exception as exc:  # noqa: BLE001 - recorded in the results, not fatal
            self.error = {"error": f"{type(exc).__name__}: {exc}"[:4000],
                          "traceback": traceback.format_exc()[-4000:]}
            print(f"[launch_overhead] {self.name} FAILED: {self.error['error'][:500]}")
            return
        finally:
            time.sleep(SETTLE_S)
            wait_for_idle_spares()
        if warmup:
            self.first = wall if self.first is None else self.first
        else:
            self.walls.append(wall)
            if out is not None:
                self.extra.append(wall - out)

    def result(self) -> dict:
        if self.error:
            return self.error
        out = {"wall_seconds": self.walls, "median_s": median(self.walls),
               "first_s": self.first}
        if self.extra:
            out["median_outside_train_loop_s"] = median(self.extra)
        if getattr(self.call, "warm", None):
            out["warm_ranks_per_fit"] = self.call.warm  # the warm-up fit first
        return out


def sparkdl_fit(spark, backend: str):
    from pyspark.sql import functions as F

    from sparkdl import TorchEstimator

    df = spark.range(256).select(
        F.array(*[F.rand(i) for i in range(4)]).alias("features"),
        (F.col("id") % 2).alias("label")).cache()
    df.count()
    est = TorchEstimator(model=torch.nn.Linear(4, 2), loss="cross_entropy", optimizer="sgd",
                         optimizerParams={"lr": 0.1}, batchSize=32, epochs=1, numWorkers=2,
                         backend=backend)

    def fit() -> float:  # returns the training-loop seconds, to report what is outside
        history = est.fit(df).history
        # Horovod: whether each rank found the spare an earlier fit left (all False: cold)
        fit.warm.append([w.get("warm_process", False) for w in history.workers])
        return sum(history.metric("seconds"))
    fit.warm = []
    return fit


def distributor_run():
    from pyspark.ml.torch.distributor import TorchDistributor

    dist = TorchDistributor(num_processes=2, local_mode=False, use_gpu=False)

    def run() -> None:
        dist.run(one_ddp_step)
    return run


def horovod_spark_run():
    import horovod.spark

    def run() -> None:
        horovod.spark.run(one_hvd_step, num_proc=2, verbose=0)
    return run


def ratio_line(peer: Timer, ours: Timer) -> dict:
    if peer.error or ours.error:
        return {"ratio": None, "target_met": None}
    ratio = peer.result()["median_s"] / ours.result()["median_s"]
    print(f"[launch_overhead] ratio {peer.name}/{ours.name} = {ratio:.1f}x  "
          f"(target >= {TARGET}x: {verdict(ratio >= TARGET)})")
    return {"ratio": ratio, "target_met": ratio >= TARGET}


def main(quick: bool = False) -> dict:
    from pyspark import cloudpickle

    if __name__ != "__main__":  # bench/ is not importable from the launched processes
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    rounds = 2 if quick else 3
    with spark_session("local-cluster[2,1,1024]", "bench-launch-overhead") as spark:
        spark.range(1000).repartition(2).count()  # executors up, Python workers started
        timers = [Timer("sparkdl-torch", sparkdl_fit(spark, "torch")),
                  Timer("TorchDistributor", distributor_run()),
                  Timer("sparkdl-horovod", sparkdl_fit(spark, "horovod")),
                  Timer("horovod.spark.run", horovod_spark_run())]
        for t in timers:
            t.run(warmup=True)
        for _ in range(rounds):  # interleaved, so background load hits all alike
            for t in timers:
                t.run(warmup=True)  # the state this launcher leaves, not the last one's
                t.run()
    ours_t, dist_t, ours_h, hvd_t = timers
    for t in timers:
        if not t.error:
            print(f"[launch_overhead] {t.name:18s} median {t.result()['median_s']:6.2f}s "
                  f"(all {[round(w, 2) for w in t.walls]}; first, cold: {t.first:.2f}s)")
    torch_cmp, hvd_cmp = ratio_line(dist_t, ours_t), ratio_line(hvd_t, ours_h)
    met = [c["target_met"] for c in (torch_cmp, hvd_cmp)]
    result = {"quick": quick, "master": "local-cluster[2,1,1024]", "rounds": rounds,
              **{t.name: t.result() for t in timers},
              "torch_distributor_vs_sparkdl_torch": torch_cmp,
              "horovod_spark_run_vs_sparkdl_horovod": hvd_cmp,
              # headline: the worse of the two ratios
              "ratios": {"TorchDistributor / sparkdl torch": torch_cmp["ratio"],
                         "horovod.spark.run / sparkdl horovod": hvd_cmp["ratio"]},
              "ratio": None if None in met else min(torch_cmp["ratio"], hvd_cmp["ratio"]),
              "target": f">= {TARGET}x (both)",
              "target_met": None if None in met else all(met)}
    save("launch_overhead", result)
    return result


if __name__ == "__main__":
    cli(main, __doc__, "fewer repetitions")
