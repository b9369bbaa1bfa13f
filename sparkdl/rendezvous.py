"""The driver-hosted rendezvous where the ranks of one barrier job meet.

Every rank must learn every other rank's address (rank 0's store or Horovod
rendezvous port, hosts, shard sizes) before training. Spark offers
``BarrierTaskContext.allGather`` for that, but its task side waits for the reply
in one-second sleeps, which adds about a second to every fit. Horovod on Spark
and TorchDistributor avoid it the same way sparkdl does here: the driver, which
every executor can already reach, hosts a tiny service for the duration of one
``fit``; each rank connects once, posts its message and receives all of them in
rank order as soon as the last one arrives.

Both ends of a connection prove they hold a per-fit random key
(``multiprocessing``'s HMAC challenge, so the key never crosses the wire) within
:data:`HANDSHAKE_S` seconds, on a thread of its own per connection (at most
:data:`MAX_PENDING` at once), so a silent or hostile connection cannot stall
the ranks; messages travel as size-capped JSON, never pickles. Ranks meet per task
attempt number, and a rank that connects again replaces its earlier, dead
connection, so a retried barrier stage meets again.

The same service takes rank reports while the job trains (:meth:`RendezvousAddress.post_state`,
:meth:`RendezvousAddress.post_failure`, :meth:`RendezvousAddress.post_progress`):
rank 0's state after an epoch, so that a fit restarted after a lost executor
resumes there, a rank's failure in the user's own code, so that it is never
retried, and rank 0's live metrics, which the driver shows as the fit's progress.
Reports are authenticated the same way; a state is size-capped before it is read.

``spark.sparkdl.rendezvous=barrier`` falls back to ``allGather`` where executors
cannot open connections to the driver (and then no report reaches the driver).

Example:
    >>> with DriverRendezvous(2, "127.0.0.1") as rdv:
    ...     import threading
    ...     out = {}
    ...     def post(rank):
    ...         out[rank] = rdv.address.gather(rank, f"hello from {rank}", attempt=0)
    ...     threads = [threading.Thread(target=post, args=(r,)) for r in (1, 0)]
    ...     _ = [t.start() for t in threads] + [t.join() for t in threads]
    >>> out[0] == out[1] == ["hello from 0", "hello from 1"]
    True
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge

from sparkdl.errors import ConfigError, WorkerFailedError

log = logging.getLogger(__name__)

#: Spark setting choosing how ranks meet: ``driver`` (default) or ``barrier``.
MODE_CONF = "spark.sparkdl.rendezvous"
MODES = ("driver", "barrier")

#: Seconds a peer has to connect and finish the key handshake.
HANDSHAKE_S = 10.0
#: Largest rendezvous message one rank may post (addresses and row counts: tiny).
MAX_MESSAGE_BYTES = 1 << 20
#: Handshakes in progress at once; connections beyond it are closed unread.
MAX_PENDING = 64


def _open(sock: socket.socket, authkey: bytes, driver: bool) -> Connection:
    """Both ends prove they hold ``authkey`` (multiprocessing's HMAC challenge, so
    the key never crosses the wire), each read bounded by :data:`HANDSHAKE_S`.

    The challenge is multiprocessing's, but run here rather than by its
    ``Listener``/``Client``: those read with no deadline, so one silent
    connection would stall the driver's accept loop and every rank behind it.
    """
    sock.settimeout(None)
    conn = Connection(sock.detach())
    _kernel_timeouts(conn, HANDSHAKE_S)
    try:
        if driver:
            deliver_challenge(conn, authkey)
            answer_challenge(conn, authkey)
        else:
            answer_challenge(conn, authkey)
            deliver_challenge(conn, authkey)
    except BaseException:
        conn.close()
        raise
    return conn


def _kernel_timeouts(conn: Connection, seconds: float) -> None:
    """Bound each read and write on ``conn``'s descriptor (0: no bound).

    Kernel-level (SO_RCVTIMEO/SO_SNDTIMEO): Connection reads the descriptor
    directly, where a Python socket timeout would not apply. After the handshake
    a waiting rank legitimately blocks for minutes (``poll`` bounds that), so the
    bound is lifted again.
    """
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock = socket.socket(fileno=conn.fileno())
    try:
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            sock.setsockopt(socket.SOL_SOCKET, option, timeval)
    finally:
        sock.detach()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _dumps(value) -> bytes:
    return json.dumps(value).encode("utf-8")


@dataclass(frozen=True)
class RendezvousAddress:
    """Where and how ranks reach the driver's rendezvous; shipped in the spec."""

    host: str
    port: int
    authkey: bytes
    timeout_s: float = 600.0
    #: Largest training state the driver takes (0: it takes none).
    max_state_bytes: int = 0

    def gather(self, rank: int, message: str, attempt: int) -> list[str]:
        """Post this rank's message and wait for every rank's, in rank order.

        Raises:
            WorkerFailedError: if the driver cannot be reached or the other ranks
                do not all arrive within ``timeout_s``.
        """
        conn = self._connect(rank)
        with conn:
            conn.send_bytes(_dumps([attempt, rank, message]))
            if not conn.poll(self.timeout_s):
                raise WorkerFailedError(
                    f"Rank {rank} waited {self.timeout_s:g} s at the rendezvous for the "
                    "other ranks; some never started (see the other tasks' logs).")
            try:
                reply = conn.recv_bytes(MAX_MESSAGE_BYTES * 1024)
            except EOFError as exc:
                raise WorkerFailedError("The driver closed the rendezvous before all ranks "
                                        "arrived (the fit was cancelled).") from exc
            return json.loads(reply)

    def post_state(self, epoch: int, state: bytes) -> bool:
        """Hand the driver rank 0's training state after ``epoch`` epochs.

        Returns:
            Whether the driver stored it: False when it takes no states or this one
            is over its cap (:attr:`max_state_bytes`).

        Raises:
            WorkerFailedError: if the driver cannot be reached.
        """
        if not 0 < len(state) <= self.max_state_bytes:
            return False
        conn = self._connect(0)
        with conn:
            _kernel_timeouts(conn, HANDSHAKE_S)  # each send and the reply, not the whole
            conn.send_bytes(_dumps({"kind": "state", "epoch": epoch, "bytes": len(state)}))
            conn.send_bytes(state)
            try:
                return conn.recv_bytes(16) == b"stored"
            except (EOFError, OSError):
                return False

    def post_failure(self, rank: int, text: str) -> None:
        """Tell the driver that ``rank`` failed in the user's own code (never retried).

        Best effort: the task fails with the same text either way.
        """
        try:
            conn = self._connect(rank)
            with conn:
                _kernel_timeouts(conn, HANDSHAKE_S)
                # Capped as encoded: JSON escapes may take 6 bytes per character.
                text = text[-(MAX_MESSAGE_BYTES // 8):]
                conn.send_bytes(_dumps({"kind": "failure", "rank": rank, "text": text}))
                conn.recv_bytes(16)
        except (WorkerFailedError, EOFError, OSError):
            pass

    def post_progress(self, message: dict) -> None:
        """Hand the driver rank 0's live metrics (an epoch's record, or a step's running
        loss): JSON, at most :data:`MAX_MESSAGE_BYTES`.

        Raises:
            WorkerFailedError: if the driver cannot be reached.
            OSError, EOFError: if the connection drops.
        """
        data = _dumps({"kind": "progress", "message": message})
        if len(data) > MAX_MESSAGE_BYTES:
            return
        conn = self._connect(0)
        with conn:
            _kernel_timeouts(conn, HANDSHAKE_S)
            conn.send_bytes(data)
            conn.recv_bytes(16)

    def _connect(self, rank: int) -> Connection:
        deadline = time.monotonic() + HANDSHAKE_S * 3
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=HANDSHAKE_S)
                conn = _open(sock, self.authkey, driver=False)
            except AuthenticationError as exc:
                raise WorkerFailedError(
                    f"Rank {rank} was refused by the rendezvous at {self.host}:{self.port}: "
                    "wrong key (a task of another fit?), or it is not this fit's "
                    "driver.") from exc
            except (OSError, EOFError) as exc:
                # Refused outright: no driver there. Dropped mid-handshake: the
                # driver was busy with other connections; try again while time is left.
                if isinstance(exc, ConnectionRefusedError) or time.monotonic() > deadline:
                    raise WorkerFailedError(
                        f"Rank {rank} cannot reach the driver's rendezvous at "
                        f"{self.host}:{self.port} ({exc}). If executors cannot connect to "
                        f"the driver, set {MODE_CONF}=barrier.") from exc
                time.sleep(0.2)
                continue
            _kernel_timeouts(conn, 0)
            return conn


def _hung_up(conn: Connection) -> bool:
    # A waiting rank sends nothing after its message, so anything readable is EOF.
    try:
        return conn.poll(0)
    except (OSError, EOFError):
        return True


class DriverRendezvous:
    """Accepts ``num_ranks`` connections per stage attempt and answers them together.

    Args:
        num_ranks: ranks of the barrier job.
        host: the driver address executors use (``spark.driver.host``).
        bind: the local address to listen on (``spark.driver.bindAddress``).
        timeout_s: how long a rank waits for the others.
        on_state: takes rank 0's training states ``(epoch, bytes)``; None: none taken.
        max_state_bytes: the largest state taken (checked before it is read).
        on_failure: takes ranks' failures in user code ``(rank, text)``.
        on_progress: takes rank 0's live metrics (a dict); called on the service's
            thread, and what it raises is logged, never sent back.
    """

    def __init__(self, num_ranks: int, host: str, bind: str | None = None,
                 timeout_s: float = 600.0,
                 on_state: Callable[[int, bytes], None] | None = None,
                 max_state_bytes: int = 0,
                 on_failure: Callable[[int, str], None] | None = None,
                 on_progress: Callable[[dict], None] | None = None) -> None:
        self.num_ranks = num_ranks
        self._on_progress = on_progress
        self._authkey = secrets.token_bytes(32)
        self._bind = bind or host
        self._listener = socket.create_server((self._bind, 0))
        self._listener.settimeout(0.5)  # so that close() is seen without a wake-up call
        self._on_state = on_state
        self._on_failure = on_failure
        self.address = RendezvousAddress(host, self._listener.getsockname()[1], self._authkey,
                                         timeout_s, max_state_bytes if on_state else 0)
        self._pending = threading.BoundedSemaphore(MAX_PENDING)
        # attempt -> rank -> (accept order, connection, message)
        self._waiting: dict[int, dict[int, tuple[int, Connection, str]]] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="sparkdl-rendezvous",
                                        daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        accepted = 0
        while not self._closed:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closed:
                    return
                continue
            if not self._pending.acquire(blocking=False):
                sock.close()  # a flood of connections: ranks retry theirs
                continue
            accepted += 1
            threading.Thread(target=self._receive, args=(sock, accepted), daemon=True,
                             name="sparkdl-rendezvous-peer").start()

    def _receive(self, sock: socket.socket, order: int) -> None:
        conn = None
        # The per-read deadline alone would let a peer trickle a byte every few
        # seconds and hold its slot for minutes: the whole handshake and first
        # message get HANDSHAKE_S, after which the connection is shut down.
        guard = sock.dup()
        deadline = threading.Timer(HANDSHAKE_S, _shut, args=(guard,))
        deadline.daemon = True
        deadline.start()
        try:
            conn = _open(sock, self._authkey, driver=True)
            head = json.loads(conn.recv_bytes(MAX_MESSAGE_BYTES))
            deadline.cancel()
            if isinstance(head, dict):
                self._report(conn, head)
                return
            attempt, rank, message = head
            _kernel_timeouts(conn, 0)
        except (EOFError, OSError, ValueError, TypeError, AuthenticationError):
            (conn or sock).close()
            return
        finally:
            deadline.cancel()
            guard.close()
            self._pending.release()
        if not (isinstance(attempt, int) and isinstance(rank, int) and 0 <= rank < self.num_ranks
                and isinstance(message, str)):
            conn.close()
            return
        ready = None
        with self._lock:
            if self._closed:  # finished its handshake after close(): nobody will answer
                conn.close()
                return
            group = self._waiting.setdefault(attempt, {})
            old = group.get(rank)
            if old is not None and old[0] > order:
                conn.close()  # an older connection of this rank, read late: it is stale
                return
            if old is not None:  # the same rank again: its first connection is dead
                old[1].close()
            group[rank] = (order, conn, message)
            if len(group) == self.num_ranks:
                # A rank whose task died after posting must not complete the group:
                # its connection reads as closed (EOF); it will post again or fail.
                dead = [r for r, (_, c, _) in group.items() if _hung_up(c)]
                for r in dead:
                    group.pop(r)[1].close()
                if not dead:
                    ready = self._waiting.pop(attempt)
        if ready is not None:
            messages = [ready[r][2] for r in sorted(ready)]
            reply = _dumps(messages)
            for _, peer, _ in ready.values():
                try:
                    peer.send_bytes(reply)
                except OSError:
                    pass  # that rank died; Spark fails the barrier stage
                peer.close()

    def _report(self, conn: Connection, head: dict) -> None:
        # Still under the handshake's per-read deadline, and the body is capped by
        # the size announced and checked here, before anything is allocated.
        with conn:
            kind = head.get("kind")
            if kind == "state" and self._on_state is not None:
                epoch, size = head.get("epoch"), head.get("bytes")
                limit = self.address.max_state_bytes
                if not (isinstance(epoch, int) and isinstance(size, int)
                        and 0 < size <= limit):
                    return
                state = conn.recv_bytes(limit)
                if len(state) != size:
                    return
                self._on_state(epoch, state)
                conn.send_bytes(b"stored")
            elif kind == "failure" and self._on_failure is not None:
                rank, text = head.get("rank"), head.get("text")
                if isinstance(rank, int) and isinstance(text, str):
                    self._on_failure(rank, text)
                conn.send_bytes(b"noted")
            elif kind == "progress" and self._on_progress is not None:
                # Answered after the display took it: rank 0's reporter sends one at a
                # time, so messages arrive in order (its own thread waits, not training).
                message = head.get("message")
                if isinstance(message, dict):
                    try:
                        self._on_progress(message)
                    except Exception:  # noqa: BLE001 - a display must not stop the service
                        log.exception("sparkdl: showing the training progress failed")
                conn.send_bytes(b"noted")

    def close(self) -> None:
        """Stop listening and drop ranks still waiting (they see the rendezvous closed)."""
        self._closed = True
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            for group in self._waiting.values():
                for _, conn, _ in group.values():
                    conn.close()
            self._waiting.clear()

    def __enter__(self) -> DriverRendezvous:
        return self

    def __exit__(self, *exc) -> None:
        self.close()



def rendezvous_mode(spark) -> str:
    """The session's ``spark.sparkdl.rendezvous`` setting, checked.

    A classic session defaults to ``driver`` (this process hosts the rendezvous). A
    Spark Connect session defaults to, and needs, ``barrier``: its client may be
    unreachable from the executors (a remote notebook, serverless compute), so ranks
    meet through ``BarrierTaskContext.allGather`` instead of dialling it.

    Raises:
        ConfigError: for an unknown mode, or ``driver`` over Spark Connect.

    Example::

        rendezvous_mode(SparkSession.builder.remote("sc://127.0.0.1:15002").getOrCreate())
        # 'barrier'
    """
    from sparkdl.session import facts_for

    remote = not facts_for(spark).driver_rendezvous
    mode = spark.conf.get(MODE_CONF, "barrier" if remote else "driver")
    if mode not in MODES:
        raise ConfigError(f"{MODE_CONF} must be one of {list(MODES)}. Received: {mode!r}")
    if remote and mode == "driver":
        raise ConfigError(
            f"{MODE_CONF}=driver needs executors to reach the driver's Python process, "
            "which a Spark Connect session does not run (its client may be anywhere). "
            f"Set {MODE_CONF}=barrier (the default over Spark Connect) or unset it. "
            f"Received: {mode!r}")
    return mode


@contextmanager
def rendezvous_for(spark, mode: str, num_ranks: int, timeout_s: float,
                   **reports) -> Iterator[RendezvousAddress | None]:
    """The rendezvous of one barrier job in ``mode`` (from :func:`rendezvous_mode`).

    Yields the driver service's address (closed on exit), or ``None`` for
    ``barrier`` mode, where ranks meet through ``BarrierTaskContext.allGather``.
    ``reports`` are :class:`DriverRendezvous`'s ``on_state``, ``max_state_bytes``,
    ``on_failure`` and ``on_progress``.
    """
    if mode == "barrier":
        yield None
        return
    conf = spark.sparkContext.getConf()
    host = conf.get("spark.driver.host")
    with DriverRendezvous(num_ranks, host, conf.get("spark.driver.bindAddress", host),
                          timeout_s, **reports) as service:
        yield service.address
