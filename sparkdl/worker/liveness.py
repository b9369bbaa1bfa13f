"""Whether a process is still there, and which executor JVM this process serves.

Read from ``/proc`` on Linux, so a zombie (dead, not yet reaped by its parent)
counts as gone; elsewhere a signal 0 answers.

Example:
    >>> import os
    >>> is_alive(os.getpid())
    True
"""

from __future__ import annotations

import os
import sys


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not).

    Example:
        >>> is_alive(os.getpid())
        True
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not sys.platform.startswith("linux")


def executor_pid() -> int:
    """The pid of the executor JVM this process belongs to, else the parent's.

    PySpark workers are forked by ``pyspark.daemon``, itself a child of the
    executor JVM; the Scala estimator's workers are the JVM's children.

    Example:
        >>> executor_pid() > 0
        True
    """
    pid = os.getppid()
    for _ in range(4):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "java":
                    return pid
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
    return os.getppid()
