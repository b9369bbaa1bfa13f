"""Facts about the Spark task a worker function runs in."""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: a task that hands its rank to a child skips torch
    import torch


def local_dir() -> str | None:
    """The executor's scratch directory (``spark.local.dir``), or the system default."""
    dirs = os.environ.get("SPARK_LOCAL_DIRS", "")
    first = dirs.split(",")[0] if dirs else ""
    return first if first and os.path.isdir(first) else tempfile.gettempdir()


def gpu_device(addresses) -> torch.device:
    """``cuda:<id>`` for the first GPU address Spark assigned, else CPU."""
    import torch

    if addresses and torch.cuda.is_available():
        return torch.device(f"cuda:{int(addresses[0])}")
    return torch.device("cpu")


def set_threads(cpus: int | None) -> None:
    """Use as many intra-op threads as CPUs Spark gave the task, not the whole host."""
    if cpus and cpus > 0:
        import torch

        torch.set_num_threads(cpus)


def task_device(ctx) -> torch.device:
    """``cuda:<id>`` for the GPU Spark assigned to this PySpark task, else CPU."""
    gpu = (ctx.resources() if ctx is not None else {}).get("gpu")
    return gpu_device(gpu.addresses if gpu is not None else ())


def limit_threads(ctx) -> None:
    """:func:`set_threads` with the CPUs of this PySpark task."""
    set_threads(ctx.cpus() if ctx is not None else 0)
