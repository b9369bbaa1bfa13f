"""Shared helpers for the benchmarks: Spark sessions, synthetic data, JSON results."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@contextmanager
def spark_session(master: str, app: str, **conf: str):
    """A SparkSession on ``master`` whose executors run this interpreter; stopped on exit.

    ``conf`` adds Spark settings, e.g. ``**{"spark.python.worker.reuse": "false"}``.
    """
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = (builder.master(master).appName(app)
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", "4")
             .config("spark.driver.memory", "2g")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()


def synthetic(rows: int, features: int, classes: int, seed: int = 0):
    """Random float32 features and integer labels a linear rule can partly predict."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features), dtype=np.float32)
    w = rng.standard_normal((features, classes), dtype=np.float32)
    y = (x @ w).argmax(axis=1).astype(np.int64)
    return x, y


def write_parquet(path: str, x: np.ndarray, y: np.ndarray, files: int = 1) -> str:
    """Write ``features`` (array<float>) and ``label`` (long) columns as Parquet files."""
    os.makedirs(path, exist_ok=True)
    for i, (xs, ys) in enumerate(zip(np.array_split(x, files), np.array_split(y, files))):
        offsets = pa.array(np.arange(0, xs.size + 1, xs.shape[1], dtype=np.int32))
        feats = pa.ListArray.from_arrays(offsets, pa.array(xs.reshape(-1)))
        pq.write_table(pa.table({"features": feats, "label": pa.array(ys)}),
                       os.path.join(path, f"part-{i}.parquet"), row_group_size=16384)
    return path


def machine_info() -> dict:
    import pyspark
    import torch

    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyspark": pyspark.__version__,
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
    }


def median(values) -> float:
    return float(statistics.median(values))


def save(name: str, result: dict) -> Path:
    """Write ``result`` plus machine info to ``bench/results/<name>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"benchmark": name, "machine": machine_info(), **result}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"[{name}] results written to {path}")
    return path


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def cli(main, doc: str, quick_help: str) -> None:
    """Run a benchmark's ``main(quick)`` from the command line: ``[--quick]``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    main(parser.parse_args().quick)


def local_servers():
    """``deploy/local/servers.py`` (Kafka broker, MiniDFSCluster), imported as it says."""
    local = str(Path(__file__).resolve().parents[1] / "deploy" / "local")
    if local not in sys.path:
        sys.path.append(local)
    import servers

    return servers
