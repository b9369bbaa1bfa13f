"""Run every sparkdl benchmark and print a summary of ratios and targets.

Each benchmark runs in its own Python process (a fresh SparkSession each, no
state leaking between them) and writes ``bench/results/<name>.json``; this script
collects those files into ``bench/results/summary.json``.

    .venv/bin/python bench/run_all.py [--quick] [--only epoch_time scoring ...]

With ``--only``, the other benchmarks' entries of a previous summary of the same
mode (full or quick) are kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS_DIR, machine_info

BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS = ("epoch_time", "launch_overhead", "scoring", "allreduce", "throughput",
              "scala_bridge", "kafka_stream", "parquet_ingest", "fault_tolerance",
              "padded_sequences")
WHAT = {
    "epoch_time": "epoch time sparkdl(1 worker) / plain PyTorch",
    "launch_overhead": "trivial run peer / sparkdl (worse of torch, hvd)",
    "scoring": "rows/s sparkdl transform / predict_batch_udf",
    "allreduce": "GB/s sparkdl horovod / gloo (worst >= 4 MB)",
    "throughput": "samples/s horovod / torch, 2 workers (worst)",
    "scala_bridge": "fit samples/s Scala estimator / Python estimator",
    "kafka_stream": "records/s into tensors Kafka float32 / Parquet",
    "parquet_ingest": "rows/s Parquet->tensors sparkdl / Petastorm",
    "fault_tolerance": "epoch time with driver state / without (10M MLP)",
    "padded_sequences": "epoch time padded LSTM/Transformer sparkdl / plain",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    args = parser.parse_args()

    summary = {"quick": args.quick, "machine": machine_info(), "benchmarks": {}}
    previous = RESULTS_DIR / "summary.json"
    if set(args.only) != set(BENCHMARKS) and previous.exists():  # --only: update in place
        kept = json.loads(previous.read_text())
        if kept.get("quick") == args.quick:
            summary["benchmarks"] = {k: v for k, v in kept["benchmarks"].items()
                                     if k in BENCHMARKS}
    failed = False
    for name in args.only:
        print(f"=== {name} ===", flush=True)
        began = time.perf_counter()
        cmd = [sys.executable, str(BENCH_DIR / f"{name}.py")] + (["--quick"] if args.quick else [])
        rc = subprocess.call(cmd, cwd=BENCH_DIR.parent)
        entry = {"returncode": rc, "wall_seconds": round(time.perf_counter() - began, 1)}
        result_file = RESULTS_DIR / f"{name}.json"
        if rc == 0 and result_file.exists():
            result = json.loads(result_file.read_text())
            entry.update(ratio=result.get("ratio"), target=result.get("target"),
                         target_met=result.get("target_met"))
            if result.get("ratios"):
                entry["ratios"] = result["ratios"]
        failed |= rc != 0
        summary["benchmarks"][name] = entry

    print("\n=== summary ===")
    for name in (n for n in BENCHMARKS if n in summary["benchmarks"]):
        entry = summary["benchmarks"][name]
        ratio = entry.get("ratio")
        shown = "failed" if entry["returncode"] else \
            f"{ratio:.2f}" if ratio is not None else "n/a"
        met = {True: "MET", False: "NOT MET"}.get(entry.get("target_met"), "n/a")
        print(f"{name:16s} {WHAT[name]:50s} ratio {shown:>7s}  target "
              f"{entry.get('target') or '?':8s} {met:8s} ({entry['wall_seconds']}s)")
        for what, value in (entry.get("ratios") or {}).items():
            print(f"{'':16s}   {what:48s} {value:7.2f}" if value is not None else
                  f"{'':16s}   {what:48s}     n/a")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
