"""Facts about the Spark task a worker function runs in, and its scratch space.

A rank's shard lives in a ``sparkdl-shard-*`` directory of the executor's local
directory (:func:`new_shard_dir`), removed when the task ends. A task killed
outright (SIGKILL, an executor lost mid-fit) never runs that cleanup, so each
directory's name records its owner: the task's pid, the process's start time and
which machine and pid namespace that pid belongs to. Every new shard directory
first sweeps the ones whose owner is gone (:func:`sweep_stale_shards`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import tempfile
from typing import TYPE_CHECKING

from sparkdl.worker.liveness import is_alive

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


SHARD_PREFIX = "sparkdl-shard-"


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot; ``None`` if no such
    process or no ``/proc``.

    A pid is reused once its process is gone; the pair (pid, start time) is not,
    so it tells whether ``pid`` is still the process it was.

    Example:
        >>> process_start_time(os.getpid()) == process_start_time(os.getpid()) is not None
        True
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            # Field 22; the name (field 2) may hold spaces and parentheses.
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def is_same_process(pid: int, started: int) -> bool:
    """Whether ``pid`` still runs and is the process that started at ``started``
    (:func:`process_start_time`); ``started`` 0 (unknown) checks only that it runs.

    Example:
        >>> is_same_process(os.getpid(), process_start_time(os.getpid()) or 0)
        True
        >>> is_same_process(os.getpid(), 1)
        False
    """
    if not is_alive(pid):
        return False
    return not started or process_start_time(pid) in (None, started)


def pid_namespace_key() -> str:
    """A short key naming this machine's boot and this process's pid namespace.

    Pids recorded under another key (another host sharing the directory, another
    container's pid namespace, a boot ago) say nothing about processes here.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        boot, namespace = socket.gethostname(), ""
    return hashlib.sha256(f"{boot}|{namespace}".encode()).hexdigest()[:12]


def new_shard_dir(directory: str | None = None) -> str:
    """A fresh private directory for this task's shard, named after its owner.

    Stale shard directories of dead tasks in the same place are swept first.

    Args:
        directory: where to create it; the executor's :func:`local_dir` by default.

    Example:
        >>> import shutil, tempfile
        >>> parent = tempfile.mkdtemp()
        >>> os.path.basename(new_shard_dir(parent)).startswith(f"sparkdl-shard-{os.getpid()}-")
        True
        >>> shutil.rmtree(parent)
    """
    directory = directory or local_dir()
    sweep_stale_shards(directory)
    pid = os.getpid()
    owner = f"{pid}-{process_start_time(pid) or 0}-{pid_namespace_key()}"
    # mkdtemp: mode 0700, and its random suffix never holds a '-'.
    return tempfile.mkdtemp(prefix=f"{SHARD_PREFIX}{owner}-", dir=directory)


def shard_owner(name: str) -> tuple[int, int, str] | None:
    """``(pid, start time, namespace key)`` from a shard directory's name, or
    ``None`` for a name :func:`new_shard_dir` did not make.

    Example:
        >>> shard_owner("sparkdl-shard-4242-1234567-0123456789ab-x1y2z3")
        (4242, 1234567, '0123456789ab')
        >>> shard_owner("sparkdl-shard-kd83nd") is None
        True
    """
    if not name.startswith(SHARD_PREFIX):
        return None
    parts = name[len(SHARD_PREFIX):].split("-")
    if len(parts) != 4 or not parts[0].isdigit() or not parts[1].isdigit() or \
            len(parts[2]) != 12:
        return None
    return int(parts[0]), int(parts[1]), parts[2]


def sweep_stale_shards(directory: str) -> list[str]:
    """Remove the shard directories in ``directory`` whose owner task is gone.

    Only directories this user owns (not links) with an owner recorded under this
    machine's and pid namespace's key are considered; one is removed when its
    owner pid has exited or now belongs to a process that started at another
    time (the pid was reused). Anything else is left alone.

    Returns:
        The paths removed.
    """
    key, uid, removed = pid_namespace_key(), os.getuid(), []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        owner = shard_owner(name)
        if owner is None or owner[2] != key or is_same_process(owner[0], owner[1]):
            continue
        path = os.path.join(directory, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue  # another task swept it first
        if stat.S_ISDIR(info.st_mode) and info.st_uid == uid:
            # rmtree does not follow links inside; errors: a concurrent sweep.
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


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
