"""Facts about the Spark task a worker function runs in."""

from __future__ import annotations

import os
import tempfile

import torch


def local_dir() -> str | None:
    """The executor's scratch directory (``spark.local.dir``), or the system default."""
    dirs = os.environ.get("SPARK_LOCAL_DIRS", "")
    first = dirs.split(",")[0] if dirs else ""
    return first if first and os.path.isdir(first) else tempfile.gettempdir()


def task_device(ctx) -> torch.device:
    """``cuda:<id>`` for the GPU Spark assigned to this task, else CPU."""
    resources = ctx.resources() if ctx is not None else {}
    gpu = resources.get("gpu")
    if gpu is not None and gpu.addresses and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu.addresses[0])}")
    return torch.device("cpu")


def limit_threads(ctx) -> None:
    """Use as many intra-op threads as CPUs Spark gave the task, not the whole host."""
    cpus = ctx.cpus() if ctx is not None else 0
    if cpus and cpus > 0:
        torch.set_num_threads(cpus)
