"""Fault tolerance: what the per-epoch driver state costs, and how fast a fit recovers.

Two networks train data-parallel on ``local-cluster[2,1,1024]`` (two executor JVMs,
one core each, ``numWorkers=2``, backend torch; Horovod too in the full mode):

* cnn: the digits CNN of ``python/train_digits.py`` on scikit-learn's 1797 8x8
  digits (batch 32, Adam);
* mlp: a ~10.5M-parameter MLP (1024-2048-2048-2048-10) on synthetic rows (batch
  128, Adam: the optimizer state is twice the weights).

**Cost per epoch.** Each network is fitted with the defaults (``maxRestarts=3``,
``driverStateInterval=1``: after every epoch but the last, rank 0 serialises its
weights and optimizer state and hands them to the driver) and with
``maxRestarts=0, driverStateInterval=0``, interleaved. The handoff happens after
an epoch's ``seconds`` (``model.history``) is measured, so those do not show it.
What is measured instead is the *epoch period*: the time between consecutive
writes of ``logDir/metrics.jsonl`` (the file's mtime; rank 0 rewrites it after
each epoch, right after that epoch's handoff), which is one epoch's training plus
whatever runs between epochs (the *gap*: period minus the next epoch's
``seconds``). Both settings write the log. Reported per network: the extra
seconds per epoch = median gap with state - median gap without, and the ratio =
(T + gap with) / (T + gap without), where T is the median epoch ``seconds`` over
both settings (training does not depend on the setting; on a busy machine its
noise would swamp the handoff; the plain ratio of median periods is saved too).
The state size is the bytes of one handed state (safetensors weights +
``torch.save`` of Adam's state after a step).

**Recovery.** The 10M MLP is fitted with the defaults while a watcher SIGKILLs
one executor JVM half an epoch after epoch 1 is logged (so epoch 1's state has
reached the driver and epoch 2 is mid-way). Measured, on the wall clock:

* detected: kill -> the driver logs that the barrier job failed;
* relaunched: -> the driver logs the restart (the cluster has 2 slots again);
* resumed: -> rank 0 starts training the first epoch of the new attempt
  (the first ``metrics.jsonl`` write after the kill minus that epoch's
  ``seconds``: executor replaced, Python workers started, data sharded again,
  backend started, state loaded);
* within relaunched -> resumed, about when rank 0's task body began (the fit's
  end minus rank 0's phase timings in ``history.workers``): Spark scheduling,
  the task closure (it carries the state) and a cold Python worker on the
  replacement executor come before it; sharding, backend start and state
  loading after. For comparison, the wall time of the session's first fit (one
  epoch of the CNN on fresh executors) is saved as well;
* kill -> resumed, the headline number, and the fit's wall time / an
  uninterrupted fit's (the default-settings fit of the cost part). That ratio
  depends on how long the fit is (the quick mode's is short); the recovery's
  absolute seconds do not.

No target: the numbers inform the README (information only).

    .venv/bin/python bench/fault_tolerance.py [--quick]
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import torch
from _common import cli, local_servers, median, save, spark_session, synthetic, write_parquet

local_servers()  # puts deploy/local on sys.path
from local_executors import executor_pids, wait_for_executors  # noqa: E402

MASTER = "local-cluster[2,1,1024]"
MLP_FEATURES, MLP_HIDDEN, CLASSES = 1024, 2048, 10
OFF = {"maxRestarts": 0, "driverStateInterval": 0}


def digits_cnn() -> torch.nn.Module:
    """The CNN of ``python/train_digits.py``."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 2 * 2, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, CLASSES))


def big_mlp() -> torch.nn.Module:
    """About 10.5M parameters: 1024-2048-2048-2048-10."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(MLP_FEATURES, MLP_HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(MLP_HIDDEN, MLP_HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(MLP_HIDDEN, MLP_HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(MLP_HIDDEN, CLASSES))


NETS = {"cnn": (digits_cnn, 32, {"featureShape": [1, 8, 8]}, (1, 64)),
        "mlp": (big_mlp, 128, {}, (1, MLP_FEATURES))}
LABELS = {"cnn": "digits CNN", "mlp": "10M MLP"}


def state_bytes(kind: str) -> dict:
    """The size of the state rank 0 hands the driver after an epoch (Adam, one step taken)."""
    from sparkdl.architecture import weights_to_bytes
    from sparkdl.checkpoints import Resume
    from sparkdl.epoch_state import encode_state

    make, _, _, shape = NETS[kind]
    module = make()
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    x = torch.zeros(shape).reshape((1, 1, 8, 8) if kind == "cnn" else shape)
    module(x).sum().backward()
    opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    weights = weights_to_bytes(module)
    total = len(encode_state(Resume(1, weights, buffer.getvalue(), [{"epoch": 1}])))
    return {"parameters": sum(p.numel() for p in module.parameters()),
            "weights_bytes": len(weights), "optimizer_bytes": len(buffer.getvalue()),
            "state_bytes": total}


class LogClock:
    """Watches ``logDir/metrics.jsonl``: (write time, lines, last record) per rewrite.

    The write time is the file's mtime (rank 0 replaces the file after each epoch),
    so it does not depend on how often this polls.
    """

    def __init__(self, log_dir: str) -> None:
        self.path = Path(log_dir, "metrics.jsonl")
        self.writes: list[tuple[float, int, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        seen = None
        while not self._stop.is_set():
            try:
                mtime = self.path.stat().st_mtime_ns
                if mtime != seen:
                    lines = self.path.read_text().splitlines()
                    seen = mtime
                    self.writes.append((mtime / 1e9, len(lines),
                                        json.loads(lines[-1]) if lines else {}))
            except (FileNotFoundError, ValueError):
                pass
            self._stop.wait(0.01)

    def stop(self) -> list[tuple[float, int, dict]]:
        self._stop.set()
        self._thread.join()
        return self.writes

    def lines(self) -> int:
        return self.writes[-1][1] if self.writes else 0


def estimator(kind: str, epochs: int, log_dir: str, backend: str = "torch", **params):
    from sparkdl import TorchEstimator

    make, batch, extra, _ = NETS[kind]
    return TorchEstimator(model=make(), loss="cross_entropy", optimizer="adam",
                          optimizerParams={"lr": 1e-3}, batchSize=batch, epochs=epochs,
                          numWorkers=2, backend=backend, seed=0, validationFraction=0.0,
                          logDir=log_dir, **extra, **params)


def timed_fit(df, kind: str, epochs: int, tmp: str, backend: str = "torch",
              on_clock=None, **params) -> dict:
    """One fit; its epoch ends from ``metrics.jsonl`` and its history."""
    log_dir = tempfile.mkdtemp(prefix="logs-", dir=tmp)
    clock = LogClock(log_dir)
    watcher = on_clock(clock) if on_clock else None
    began = time.time()
    try:
        model = estimator(kind, epochs, log_dir, backend, **params).fit(df)
    finally:
        writes = clock.stop()
        if watcher is not None:
            watcher.join(timeout=5)
    wall = time.time() - began
    history = model.history
    seconds = [float(s) for s in history.metric("seconds")]
    # Uninterrupted: the write with e lines ends epoch e.
    ends = {n: t for t, n, _ in writes}
    periods = [ends[e + 1] - ends[e] for e in range(1, epochs) if e in ends and e + 1 in ends]
    gaps = [ends[e + 1] - ends[e] - seconds[e] for e in range(1, epochs)
            if e in ends and e + 1 in ends]
    return {"wall_s": wall, "began": began, "epoch_seconds": seconds, "periods": periods,
            "gaps": gaps, "writes": writes, "attempts": history.attempts,
            "restarts": history.restarts, "workers": history.workers}


class DriverLog(logging.Handler):
    """Wall-clock times of the driver's restart messages (``sparkdl.ml.recovery``)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.events: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append((record.created, record.getMessage()))

    def first(self, text: str) -> float | None:
        return next((t for t, m in self.events if text in m), None)


def kill_run(spark, df, epochs: int, tmp: str, period_s: float) -> dict:
    """The 10M MLP fitted with the defaults; one executor JVM SIGKILLed mid-epoch 2."""
    wait_for_executors(spark)
    killed: dict = {}

    def arm(clock: LogClock) -> threading.Thread:
        def watch():
            deadline = time.monotonic() + 600
            while clock.lines() < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(period_s / 2)  # epoch 1's state is with the driver; epoch 2 mid-way
            if clock.lines() != 1:
                return  # too late: report, do not kill
            executor, pid = sorted(executor_pids(spark).items())[-1]
            killed.update(executor=executor, pid=pid, at=time.time())
            os.kill(pid, signal.SIGKILL)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        return thread

    recovery_log = logging.getLogger("sparkdl.ml.recovery")
    handler = DriverLog()
    recovery_log.addHandler(handler)
    try:
        run = timed_fit(df, "mlp", epochs, tmp, on_clock=arm)
    finally:
        recovery_log.removeHandler(handler)
    if not killed:
        raise RuntimeError("the executor was never killed: epoch 2 ended before the watcher")
    at = killed["at"]
    after = [(t, n, rec) for t, n, rec in run["writes"] if t > at]
    first = after[0] if after else None
    resumed = first[0] - float(first[2]["seconds"]) if first else None
    ended = run["began"] + run["wall_s"]
    rank0 = next((w for w in run["workers"] if w["rank"] == 0), None)
    # Rank 0 of the restarted attempt: its phases, counted back from the fit's end
    # (approximate: the weights' way back to the driver is inside the last second or so).
    phases = rank0["seconds"] if rank0 else {}
    rank_began = ended - sum(phases.get(k, 0.0) for k in ("shard_write", "meet", "rank")) \
        if phases else None
    detected = handler.first("the training job failed")
    relaunched = handler.first("restarting the training job (attempt")
    steps = {
        "kill_to_detected_s": detected - at if detected else None,
        "detected_to_relaunched_s": relaunched - detected if detected and relaunched else None,
        "relaunched_to_training_s": resumed - relaunched if resumed and relaunched else None,
        "kill_to_resumed_s": resumed - at if resumed else None,
        "relaunched_to_rank0_task_body_s_approx":
            rank_began - relaunched if rank_began and relaunched else None,
        "rank0_task_body_to_training_s_approx":
            resumed - rank_began if resumed and rank_began else None,
        "rank0_phases_s": phases,
        "kill_to_first_epoch_after_restart_s": first[0] - at if first else None,
        "first_epoch_after_restart": first[2].get("epoch") if first else None,
        "first_epoch_after_restart_seconds": float(first[2]["seconds"]) if first else None,
    }
    return {**run, "killed": killed, "driver_log": handler.events, **steps}


def cost_summary(without: list[dict], with_state: list[dict]) -> dict:
    p0 = median([p for r in without for p in r["periods"]])
    p1 = median([p for r in with_state for p in r["periods"]])
    g0 = median([g for r in without for g in r["gaps"]])
    g1 = median([g for r in with_state for g in r["gaps"]])
    s0 = median([s for r in without for s in r["epoch_seconds"][1:]])
    s1 = median([s for r in with_state for s in r["epoch_seconds"][1:]])
    # One epoch's training does not depend on the setting; on a busy machine its
    # noise would swamp the handoff, so the ratio uses the median over both.
    train = median([s for r in without + with_state for s in r["epoch_seconds"][1:]])
    handoffs = len(with_state[0]["epoch_seconds"]) - 1
    wall = (median([r["wall_s"] for r in with_state]) -
            median([r["wall_s"] for r in without])) / max(handoffs, 1)
    return {"ratio": (train + g1) / (train + g0), "epoch_train_s": train,
            "period_without_s": p0, "period_with_s": p1, "ratio_of_periods": p1 / p0,
            "gap_without_s": g0, "gap_with_s": g1, "extra_s_per_epoch": g1 - g0,
            "history_seconds_without_s": s0, "history_seconds_with_s": s1,
            "extra_s_per_epoch_from_fit_wall": wall}


def main(quick: bool = False) -> dict:
    load_before = os.getloadavg()
    started = time.time()
    # rows / epochs / rounds: an MLP epoch takes a few seconds at 2 workers
    mlp_rows, mlp_epochs, cnn_epochs, rounds = (2048, 3, 8, 1) if quick else (8192, 5, 12, 2)
    backends = ("torch",) if quick else ("torch", "horovod")
    sizes = {k: state_bytes(k) for k in NETS}
    for k, s in sizes.items():
        print(f"[fault_tolerance] {LABELS[k]}: {s['parameters']:,} parameters, state "
              f"{s['state_bytes']:,} bytes (weights {s['weights_bytes']:,}, "
              f"optimizer {s['optimizer_bytes']:,})", flush=True)
    runs: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="sparkdl-bench-") as tmp, \
            spark_session(MASTER, "bench-fault-tolerance") as spark:
        from sklearn.datasets import load_digits

        digits = load_digits()
        dfs = {"cnn": spark.read.parquet(write_parquet(
            f"{tmp}/digits", (digits.data / 16.0).astype("float32"),
            digits.target.astype("int64"))).cache(),
            "mlp": spark.read.parquet(write_parquet(
                f"{tmp}/mlp", *synthetic(mlp_rows, MLP_FEATURES, CLASSES))).cache()}
        for df in dfs.values():
            df.count()
        epochs = {"cnn": cnn_epochs, "mlp": mlp_epochs}
        wait_for_executors(spark)
        print(f"[fault_tolerance] data cached ({time.time() - started:.0f}s)", flush=True)
        # Warm-up: Python workers, imports. On fresh executors, as a restart's
        # replacement executor is: its wall time is shown for comparison.
        cold = timed_fit(dfs["cnn"], "cnn", 1, tmp, **OFF)["wall_s"]
        print(f"[fault_tolerance] warmed up ({time.time() - started:.0f}s): a 1-epoch fit "
              f"on fresh executors took {cold:.1f}s", flush=True)
        for _ in range(rounds):
            for kind in ("cnn", "mlp"):
                for backend in backends if kind == "mlp" else ("torch",):
                    for state, params in (("without", OFF), ("with", {})):
                        key = f"{kind}/{backend}/{state}"
                        run = timed_fit(dfs[kind], kind, epochs[kind], tmp, backend, **params)
                        runs.setdefault(key, []).append(run)
                        print(f"[fault_tolerance] ({time.time() - started:.0f}s) {key} periods "
                              f"{[round(p, 3) for p in run['periods']]}  history seconds "
                              f"{[round(s, 3) for s in run['epoch_seconds']]}  wall "
                              f"{run['wall_s']:.1f}s", flush=True)
        cost = {f"{kind}/{backend}": cost_summary(runs[f"{kind}/{backend}/without"],
                                                  runs[f"{kind}/{backend}/with"])
                for kind in ("cnn", "mlp")
                for backend in (backends if kind == "mlp" else ("torch",))}
        straight = runs["mlp/torch/with"][-1]
        print(f"[fault_tolerance] ({time.time() - started:.0f}s) the recovery run", flush=True)
        killed = kill_run(spark, dfs["mlp"], mlp_epochs, tmp,
                          cost["mlp/torch"]["period_with_s"])
        wait_for_executors(spark)  # the cluster is whole again before it stops
    load_after = os.getloadavg()

    for key, c in cost.items():
        kind = key.split("/")[0]
        print(f"[fault_tolerance] {LABELS[kind]} ({key}): epoch period with state "
              f"{c['period_with_s']:.3f}s / without {c['period_without_s']:.3f}s; "
              f"ratio {c['ratio']:.3f} (epoch training {c['epoch_train_s']:.3f}s); extra "
              f"{c['extra_s_per_epoch'] * 1000:.0f} ms per epoch "
              f"(from fit wall times: {c['extra_s_per_epoch_from_fit_wall'] * 1000:.0f} ms) "
              f"for a {sizes[kind]['state_bytes'] / 1e6:.2f} MB state")
    fit_ratio = killed["wall_s"] / straight["wall_s"]
    attempts = killed["attempts"]
    resumed_from = attempts[1]["resumed_from_epoch"] if len(attempts) > 1 else None

    def s(v):
        return f"{v:.1f}s" if v is not None else "n/a"

    print(f"[fault_tolerance] executor {killed['killed']['executor']} SIGKILLed mid-epoch 2; "
          f"restarts {killed['restarts']}, resumed from epoch {resumed_from}")
    print(f"[fault_tolerance] kill -> failure seen {s(killed['kill_to_detected_s'])}, "
          f"-> relaunched {s(killed['detected_to_relaunched_s'])}, -> training "
          f"{s(killed['relaunched_to_training_s'])}: kill -> training resumed "
          f"{s(killed['kill_to_resumed_s'])}")
    print(f"[fault_tolerance]   of which relaunched -> rank 0's task body begins (about) "
          f"{s(killed['relaunched_to_rank0_task_body_s_approx'])}, -> its first epoch begins "
          f"{s(killed['rank0_task_body_to_training_s_approx'])} "
          f"(phases {({k: round(v, 1) for k, v in killed['rank0_phases_s'].items()})})")
    print(f"[fault_tolerance] fit with a kill {killed['wall_s']:.1f}s / uninterrupted "
          f"{straight['wall_s']:.1f}s = {fit_ratio:.2f}")
    if max(load_before[0], load_after[0]) > (os.cpu_count() or 1):
        print(f"[fault_tolerance] WARNING: load average {load_before[0]:.1f} -> "
              f"{load_after[0]:.1f} on {os.cpu_count()} cores: timings are noisy")

    ratios = {f"epoch time with state / without ({LABELS['cnn']})": cost["cnn/torch"]["ratio"],
              f"epoch time with state / without ({LABELS['mlp']})": cost["mlp/torch"]["ratio"]}
    if "mlp/horovod" in cost:
        ratios[f"epoch time with state / without ({LABELS['mlp']}, hvd)"] = \
            cost["mlp/horovod"]["ratio"]
    ratios["fit time killed once / uninterrupted (10M MLP)"] = fit_ratio
    killed["fit_extra_s"] = killed["wall_s"] - straight["wall_s"]
    for key in ("writes", "began"):
        for rs in runs.values():
            for r in rs:
                r.pop(key, None)
    killed_out = {k: v for k, v in killed.items() if k not in ("began",)}
    result = {
        "quick": quick,
        "load_average": {"before": load_before, "after": load_after},
        "config": {"master": MASTER, "num_workers": 2, "backends": backends,
                   "mlp": {"rows": mlp_rows, "epochs": mlp_epochs, "batch_size": 128,
                           "layers": [MLP_FEATURES, MLP_HIDDEN, MLP_HIDDEN, MLP_HIDDEN,
                                      CLASSES]},
                   "cnn": {"rows": 1797, "epochs": cnn_epochs, "batch_size": 32},
                   "optimizer": "adam", "rounds": rounds,
                   "with_state": {"maxRestarts": 3, "driverStateInterval": 1},
                   "without_state": OFF},
        "measures": {
            "period": "time between consecutive metrics.jsonl writes (rank 0, after each "
                      "epoch): one epoch's training plus what runs between epochs",
            "gap": "period minus the next epoch's history `seconds`: what runs between "
                   "epochs (the state handoff, the log write)",
            "extra_s_per_epoch": "median gap with state - median gap without",
            "kill_to_resumed_s": "SIGKILL of an executor JVM -> rank 0 starts the first "
                                 "epoch of the restarted attempt (first metrics.jsonl write "
                                 "after the kill minus that epoch's seconds)",
            "fit time killed once / uninterrupted": "wall time of fit() with one kill "
                                                    "mid-epoch 2 / the same fit uninterrupted",
        },
        "state": sizes, "cost": cost, "runs": runs,
        "cold_executors_1_epoch_cnn_fit_wall_s": cold,
        "recovery": {**killed_out, "uninterrupted_wall_s": straight["wall_s"],
                     "fit_ratio": fit_ratio, "resumed_from_epoch": resumed_from},
        "ratio": cost["mlp/torch"]["ratio"], "ratios": ratios,
        "target": None, "target_met": None,
    }
    save("fault_tolerance", result)
    return result


if __name__ == "__main__":
    cli(main, __doc__, "smaller sizes, one round, torch backend only")
