"""A rank child seen from its task: start it, hand it the rank, read its result.

A rank child is a fresh interpreter (``python -m sparkdl.worker.rank_child_main``)
that trains exactly one rank and exits. The task keeps its shard, its rendezvous
and its results; the child gets the spec, the shard's path and the peers over a
local socket and sends its result back on it. The child's stdout and stderr go to
a log file that the task copies to the executor log.

The protocol, in :mod:`sparkdl.worker.frames` frames, the task speaking first:

===========  ===========  =====================================================
kind         direction    payload
===========  ===========  =====================================================
KEY (0)      task->child  the child's key; a child drops a peer that gets it wrong
WORK (1)     task->child  JSON: shard path, rank, peers, GPUs, CPUs, log path
SPEC (2)     task->child  the pickled :class:`~sparkdl.worker.spec.TrainSpec`
RESULT (3)   child->task  JSON: the :class:`~sparkdl.worker.rank_process.RankResult`
                          without its weights
WEIGHTS (4)  child->task  rank 0's weights (safetensors); empty on other ranks
===========  ===========  =====================================================

Each end checks who the other is before anything is read or sent: the child
drops a peer of another OS user at once (:func:`trusted_peer`), and the task sends
the key only to the very process it started or claimed, by its pid and user
(``SO_PEERCRED``). An abstract socket name is free again once its child exits, so
another local user may hold it by the time a task connects.

The task never unpickles what the child sends. Lifetimes, so that nothing is
left behind: a child bound to a task (it received the key) exits when the task's
socket closes, mid-training or not; before that it watches the task's process
(or, for a spare, the executor's: :mod:`sparkdl.worker.spares`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from sparkdl.errors import WorkerFailedError
from sparkdl.worker import liveness
from sparkdl.worker.frames import FramedSocket, PeerClosed
from sparkdl.worker.rank_process import DEFAULT_IDLE_S, RankResult
from sparkdl.worker.task_env import process_start_time

KEY, WORK, SPEC, RESULT, WEIGHTS = range(5)

#: Cap on the frame a child reads before the peer has proven its key.
KEY_MAX_BYTES = 1024
#: Cap on the work: a few paths and one line per peer.
WORK_MAX_BYTES = 1 << 20
#: Cap on the result without its weights: mostly the history, a line per epoch.
RESULT_MAX_BYTES = 64 << 20
#: Cap on rank 0's weights: they reach the driver as one Arrow binary value, whose
#: offsets are 32-bit.
WEIGHTS_MAX_BYTES = (1 << 31) - 1
#: Cap on any frame, the spec the largest: initial weights (no larger than the
#: weights that must come back) and the pickled network and code. The caps keep a
#: corrupt length from allocating more than could ever be used.
MAX_BYTES = 4 << 30

#: How long a task waits for its child to accept the connection.
CONNECT_TIMEOUT_S = 60.0
#: How long a task waits for its child to exit after the result (or its failure).
EXIT_TIMEOUT_S = 30.0

# struct ucred: pid, uid, gid.
_UCRED = struct.Struct("3i")


class NotOurChild(ConnectionError):
    """The process at a child's address is not that child: the name was free
    (the child had exited) and another process bound it."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """``(pid, uid, gid)`` of the process at the other end of a Unix socket, as
    the kernel recorded them (not as the peer claims); ``None`` where the platform
    has no ``SO_PEERCRED`` (the socket is then a path in this user's temp directory).
    """
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def trusted_peer(credentials: tuple[int, int, int] | None, uid: int,
                 pid: int | None = None) -> bool:
    """Whether a peer is this OS user's process (and, given ``pid``, that very process).

    ``None`` credentials (no ``SO_PEERCRED``, off Linux) pass: the socket is then a
    path in this user's temp directory, not a name any user can bind.

    Example:
        >>> trusted_peer((42, 1000, 1000), uid=1000), trusted_peer((42, 0, 0), uid=1000)
        (True, False)
        >>> trusted_peer((42, 1000, 1000), uid=1000, pid=43)
        False
    """
    if credentials is None:
        return True
    peer_pid, peer_uid, _ = credentials
    return peer_uid == uid and (pid is None or peer_pid == pid)


@dataclass(frozen=True)
class ChildAddress:
    """Where a child listens and the key a task proves itself with.

    ``address`` is a Linux abstract socket name (no file, so no path-length
    limit from deep Spark local directories) or, elsewhere, a socket path.

    ``pid`` and ``started`` (its :func:`~sparkdl.worker.task_env.process_start_time`)
    name the child process once it runs: a pid alone may by then be another
    process's.

    Example:
        >>> address = ChildAddress.new()
        >>> len(address.key), address.pid, address.started
        (32, 0, 0)
    """

    address: str
    key: str
    pid: int = 0
    started: int = 0

    @classmethod
    def new(cls) -> ChildAddress:
        """A fresh address and key (the pid is filled in once the child runs)."""
        token = secrets.token_hex(8)
        if sys.platform.startswith("linux"):
            address = f"\0sparkdl-rank-{token}"
        else:
            address = os.path.join(tempfile.gettempdir(), f"sparkdl-rank-{token}.sock")
        return cls(address, secrets.token_hex(16))


def spawn(backend: str, address: ChildAddress, owner: int, idle_s: float,
          marker: str | None, log) -> subprocess.Popen:
    """Start a child listening at ``address``.

    Args:
        backend: the collective backend whose imports it pays up front.
        address: where it listens, and its key.
        owner: the executor JVM's pid; the child exits when it does.
        idle_s: how long it waits for a task before exiting.
        marker: a spare's advert file (:mod:`sparkdl.worker.spares`), or ``None``
            for a child of this task.
        log: where its output goes until a task hands it a log file.
    """
    # A task's own child also watches the task's process until it is claimed: a
    # task killed while writing its shard leaves no idle child behind. A spare
    # (marker set) outlives the process that started it.
    parent = None if marker else os.getpid()
    # With their start times, so that the child does not take a process that
    # reused the pid of its dead owner (or parent) for it.
    config = {"backend": backend, "address": address.address, "key": address.key,
              "owner": owner, "owner_started": process_start_time(owner) or 0,
              "idle_s": idle_s, "marker": marker, "parent": parent,
              "parent_started": (process_start_time(parent) or 0) if parent else 0}
    # Its own session: Spark stopping the Python worker that started a spare
    # (idle reaping) must not take the spare with it.
    proc = subprocess.Popen([sys.executable, "-m", "sparkdl.worker.rank_child_main"],
                            stdin=subprocess.PIPE, stdout=log, stderr=log,
                            start_new_session=True)
    proc.stdin.write(json.dumps(config).encode())
    proc.stdin.close()
    _STARTED.append(proc)
    return proc


#: Children started by this process, polled so that finished ones are reaped.
_STARTED: list[subprocess.Popen] = []


def kill_process(pid: int, started: int) -> bool:
    """SIGKILL ``pid`` only if it is still the process that started at ``started``
    (:func:`~sparkdl.worker.task_env.process_start_time`).

    The process is pinned with a pidfd before its start time is compared, so it
    cannot exit and hand its pid to another process between the check and the
    signal. Without pidfds (Linux before 5.3) that window stays, a few
    microseconds wide. An unknown start time (0) signals nothing.

    Returns:
        Whether the signal was sent.
    """
    if not started:
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # no pidfd_open here
        pidfd = None
    try:
        if process_start_time(pid) != started:
            return False  # exited; its pid may be someone else's now
        if pidfd is None:
            os.kill(pid, signal.SIGKILL)
        else:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return True
    except OSError:  # gone meanwhile (ProcessLookupError), or not ours to signal
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def reap() -> None:
    """Collect the exit status of children of this process that have ended."""
    _STARTED[:] = [p for p in _STARTED if p.poll() is None]


class RankChild:
    """A fresh interpreter for one rank: this executor's spare, or one started now
    so that its imports overlap with the task writing its shard and meeting its peers.

    Example::

        child = take_child("horovod", workdir)       # sparkdl.worker.spares, at task start
        ...                                          # write the shard, rendezvous
        result = child.train(spec_payload, shard.path, rank, peers, gpus, threads)
    """

    def __init__(self, backend: str, address: ChildAddress, log_path: str,
                 proc: subprocess.Popen | None = None, idle_s: float = DEFAULT_IDLE_S) -> None:
        self._backend = backend
        self._address = address
        self._log_path = log_path
        self._proc = proc
        self._idle_s = idle_s
        self._conn: FramedSocket | None = None

    @classmethod
    def start(cls, backend: str, workdir: str, owner: int | None = None,
              idle_s: float = DEFAULT_IDLE_S) -> RankChild:
        """A new child for this task, logging into ``workdir``."""
        reap()
        log_path = os.path.join(workdir, "rank.log")
        address = ChildAddress.new()
        with open(log_path, "ab") as log:
            proc = spawn(backend, address, owner or liveness.executor_pid(), idle_s, None, log)
        return cls(backend, address, log_path, proc, idle_s)

    @property
    def spare(self) -> bool:
        """Whether this is a spare left by an earlier task (not started by this one)."""
        return self._proc is None

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._proc.pid if self._proc is not None else self._address.pid

    def _connect(self, deadline: float) -> socket.socket:
        """A connection to this child, proven by the kernel to be that process.

        Raises:
            FileNotFoundError, ConnectionRefusedError: nothing listens there and
                the child is gone (or the deadline passed).
            NotOurChild: another process holds the address; nothing was sent to it.
            TimeoutError: the address stayed busy (full backlog) past the deadline.
        """
        while True:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # With a timeout the socket is non-blocking: a full backlog fails at
            # once (retried below) instead of blocking for as long as a stalled
            # or hostile listener never accepts.
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                conn.connect(self._address.address)
            except (FileNotFoundError, ConnectionRefusedError, BlockingIOError) as exc:
                # Refused: a child binds its socket right after the interpreter
                # starts, a few ms away. Busy (BlockingIOError): its backlog is full.
                conn.close()
                if time.monotonic() > deadline:
                    if isinstance(exc, BlockingIOError):
                        raise TimeoutError(f"Rank child {self.pid} did not accept a "
                                           "connection in time.") from exc
                    raise
                if not liveness.is_alive(self.pid):
                    raise ConnectionRefusedError(f"Rank child {self.pid} exited.") from exc
                time.sleep(0.02)
                continue
            except BaseException:
                conn.close()
                raise
            conn.settimeout(None)
            credentials = peer_credentials(conn)
            if not trusted_peer(credentials, os.getuid(), self.pid):
                conn.close()  # before a byte is sent: the key lets its holder run code
                raise NotOurChild(f"The process at rank child {self.pid}'s address is "
                                  f"not that child (pid, uid, gid: {credentials}).")
            return conn

    def _connect_or_replace(self) -> socket.socket:
        try:
            return self._connect(time.monotonic() + CONNECT_TIMEOUT_S)
        except (FileNotFoundError, ConnectionRefusedError, NotOurChild, TimeoutError):
            if self._proc is not None:
                raise
        # The spare is gone since the claim (it crashed, was killed, or its
        # address is someone else's now): start a child of our own, paying the
        # imports this once.
        workdir = os.path.dirname(self._log_path)
        fresh = RankChild.start(self._backend, workdir, idle_s=self._idle_s)
        self._address, self._proc = fresh._address, fresh._proc
        return self._connect(time.monotonic() + CONNECT_TIMEOUT_S)

    def _open(self) -> FramedSocket:
        """Connect and prove the key: from here on the child is bound to this task."""
        self._conn = FramedSocket(self._connect_or_replace(), f"rank child {self.pid}",
                                  MAX_BYTES)
        self._conn.send(KEY, self._address.key.encode())
        return self._conn

    def train(self, spec_payload: bytes, shard_path: str, rank: int, peers: list,
              gpus: tuple, threads: int) -> RankResult:
        """Hand the child its rank and wait for its result.

        Args:
            spec_payload: the pickled :class:`~sparkdl.worker.spec.TrainSpec`
                (:attr:`~sparkdl.worker.train_task.ShippedSpec.payload`).
            shard_path: the rank's shard, written by the task.
            rank: this rank.
            peers: every rank's :class:`~sparkdl.collective.PeerInfo`.
            gpus: the GPU addresses Spark gave the task; the child trains on the first.
            threads: CPUs Spark gave the task (0: unknown).

        Raises:
            WorkerFailedError: with the child's last log lines if it fails.
        """
        work = {"shard_path": shard_path, "rank": rank,
                "peers": [dataclasses.asdict(p) for p in peers], "gpus": list(gpus),
                "threads": threads, "log_path": self._log_path}
        result = error = None
        try:
            conn = self._open()
            conn.send(WORK, json.dumps(work).encode())
            conn.send(SPEC, spec_payload)
            _, meta = conn.recv(RESULT, max_bytes=RESULT_MAX_BYTES)  # as long as training takes
            # Kept as read (a bytearray): a copy would double the peak for large weights.
            _, weights = conn.recv(WEIGHTS, max_bytes=WEIGHTS_MAX_BYTES, as_bytes=False)
            fields = json.loads(meta)
            result = RankResult(**{**fields, "weights": weights if fields["weights"] else None})
        except PeerClosed:
            pass  # it exited without a result: its log says why
        except OSError as exc:  # a broken frame (FrameError) included
            error = exc
        finally:
            self.close()
        self._wait_exit()
        log = self._read_log()
        if result is None:
            tail = "\n".join(log.strip().splitlines()[-20:])
            reason = f"failed ({error})" if error else "exited without a result"
            raise WorkerFailedError(f"Rank {rank}'s training process (pid {self.pid}) "
                                    f"{reason}:\n{tail}")
        return result

    def _wait_exit(self) -> None:
        """Wait for the child to exit (it does, once it sent its result or failed);
        kill one that does not within :data:`EXIT_TIMEOUT_S` (stuck in teardown)."""
        if self._proc is None:
            return
        try:
            self._proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _read_log(self) -> str:
        try:
            with open(self._log_path, "rb") as f:
                log = f.read().decode(errors="replace")
        except OSError:
            return ""
        sys.stderr.write(log)
        return log

    def close(self) -> None:
        """Hang up: a child that has work ends, one still idle ends too."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def kill(self) -> None:
        """Stop a child that will not be given work (the task failed first).

        A child this task started is signalled through its ``Popen``, which never
        signals a reaped pid. A claimed spare (another task started it) is
        signalled only while its pid is still that spare (:func:`kill_process`).
        """
        self.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        elif self._proc is None:
            # A claimed spare never connected to: it would idle to its timeout.
            kill_process(self.pid, self._address.started)
