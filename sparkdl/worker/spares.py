"""The warm-spare pool: one idle, imported rank child per executor and backend.

Starting a rank child costs an interpreter, torch and Horovod imports and torch's
lazy imports on the first optimizer (seconds). So a finished task leaves one idle
*spare* per executor and backend (:func:`keep_spare`), which the next fit's task
on that executor takes whichever Spark Python worker it lands on
(:func:`take_child`). A spare has never run ``hvd.init()``, so it is as fresh as
a new child. It advertises itself with a small file in the executor's local
directory; a task claims it by renaming that file, which only one task can do.

An unclaimed spare exits when the executor's JVM exits, or after ``warm_idle_s``
seconds (backendOptions) without a taker, withdrawing its advert first
(:func:`retire`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import secrets
import subprocess

from sparkdl.worker import liveness
from sparkdl.worker.rank_child import ChildAddress, RankChild, reap, spawn
from sparkdl.worker.rank_process import DEFAULT_IDLE_S
from sparkdl.worker.task_env import is_same_process, local_dir, process_start_time

_SPARE_GLOB = "sparkdl-spare-{backend}-{owner}-*.json"


def take_child(backend: str, workdir: str, spares: bool = True,
               idle_s: float = DEFAULT_IDLE_S) -> RankChild:
    """This executor's idle spare for ``backend`` if one is left, else a new child.

    Args:
        backend: the collective backend's name.
        workdir: the task's scratch directory (the child's log goes there).
        spares: look for a spare at all (``warm_process`` in backendOptions).
        idle_s: idle timeout of a child started here, should the task die
            before handing it work.
    """
    owner = liveness.executor_pid()
    if spares:
        for marker in sorted(glob.glob(os.path.join(
                spare_dir(), _SPARE_GLOB.format(backend=backend, owner=owner)))):
            claimed = f"{marker}.claimed-{os.getpid()}"
            try:
                os.rename(marker, claimed)  # atomic: one taker per spare
                with open(claimed) as f:
                    address = ChildAddress(**json.load(f))
            except (OSError, ValueError, TypeError):
                continue
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(claimed)
            # Its pid and start time: a spare that died leaves a pid that another
            # process may hold by now.
            if is_same_process(address.pid, address.started):
                return RankChild(backend, address, os.path.join(workdir, "rank.log"),
                                 idle_s=idle_s)
    return RankChild.start(backend, workdir, owner, idle_s)


def keep_spare(backend: str, idle_s: float = DEFAULT_IDLE_S) -> None:
    """Start an idle child for the next fit on this executor, unless one is waiting."""
    reap()
    owner = liveness.executor_pid()
    directory = spare_dir()
    if glob.glob(os.path.join(directory, _SPARE_GLOB.format(backend=backend, owner=owner))):
        return
    address = ChildAddress.new()
    marker = os.path.join(directory, f"sparkdl-spare-{backend}-{owner}-{os.getpid()}"
                                     f"-{secrets.token_hex(4)}.json")
    proc = spawn(backend, address, owner, idle_s, marker, subprocess.DEVNULL)
    # Written under a temporary name and renamed, so a taker never reads half of it;
    # 0600: the key lets whoever reads it run code in the child.
    tmp = f"{marker}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        # Read while the spare is this process's unreaped child: its pid is its own.
        json.dump(dataclasses.asdict(dataclasses.replace(
            address, pid=proc.pid, started=process_start_time(proc.pid) or 0)), f)
    os.rename(tmp, marker)


def retire(marker: str | None) -> bool:
    """Withdraw an idle spare's advert; False if a task claimed it first.

    Called by the spare itself before it exits idle; ``None`` (a task's own
    child, never advertised) always retires.
    """
    if marker is None:
        return True
    try:
        os.rename(marker, f"{marker}.retired")
    except FileNotFoundError:
        return False
    with contextlib.suppress(OSError):
        os.unlink(f"{marker}.retired")
    return True


def spare_dir() -> str:
    """Where spares advertise themselves: the executor's local directory."""
    return local_dir()
