"""Facts about the Spark task a worker function runs in."""

from __future__ import annotations

import os
import stat
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: a task that hands its rank to a child skips torch
    import torch


def local_dir() -> str:
    """The executor's scratch directory (``spark.local.dir``), else a private one.

    Spark's local directory belongs to the executor's user. Without it, shards and
    spare adverts go to ``<tmp>/sparkdl-<uid>`` (mode 0700), not to the shared
    temporary directory, where another local user could read a shard or plant a
    spare's advert.

    Raises:
        PermissionError: if that private directory exists but is not this user's
            alone (someone else made it first).
    """
    dirs = os.environ.get("SPARK_LOCAL_DIRS", "")
    first = dirs.split(",")[0] if dirs else ""
    if first and os.path.isdir(first):
        return first
    return private_dir(os.path.join(tempfile.gettempdir(), f"sparkdl-{os.getuid()}"))


def private_dir(path: str) -> str:
    """``path`` as a directory only this user can enter, created if missing.

    Example:
        >>> import stat, tempfile
        >>> d = private_dir(tempfile.mkdtemp() + "/mine")
        >>> stat.S_IMODE(os.stat(d).st_mode) == 0o700
        True
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or \
            stat.S_IMODE(info.st_mode) & 0o077:
        raise PermissionError(
            f"{path} must be a directory owned by uid {os.getuid()} with mode 0700 "
            f"(found uid {info.st_uid}, mode {oct(stat.S_IMODE(info.st_mode))}). Remove it, "
            "or set spark.local.dir.")
    return path


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
