"""One rank's training, in this process or in a fresh child process.

Spark reuses Python workers between tasks. torch.distributed can be started again
in a reused worker, but Horovod cannot: a second ``hvd.init()`` in the same
process crashes. Backends that declare ``fresh_process`` therefore train in a
child interpreter (``python -m sparkdl.worker.rank_process``) that runs exactly
one rank and exits. The task keeps its shard, its rendezvous and its results; the
child gets the spec, the shard's path and the peers over a local socket and sends
its result back on it. The child's stdout and stderr go to a log file that the
task copies to the executor log.

Starting a child costs an interpreter, torch and Horovod imports and torch's lazy
imports on the first optimizer (seconds). So a finished task leaves one idle,
fully imported *spare* per executor and backend, which the next fit's task on
that executor takes whichever Spark Python worker it lands on
(:meth:`RankChild.take`). A spare has never run ``hvd.init()``, so it is as fresh
as a new child. It advertises itself with a small file in the executor's local
directory; a task claims it by renaming that file, which only one task can do.

Lifetimes, so that nothing is left behind:

* a claimed child is bound to the claiming task's socket: when the task ends or
  is killed, the socket closes and the child exits, mid-training or not;
* an unclaimed spare exits when the executor's JVM exits, or after
  ``warm_idle_s`` seconds (backendOptions) without a taker.
"""

from __future__ import annotations

import dataclasses
import glob
import hmac
import json
import os
import pickle
import secrets
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import cloudpickle

from sparkdl.errors import WorkerFailedError

#: How long an unclaimed spare waits for a taker before exiting.
DEFAULT_IDLE_S = 300.0
_SPARE_GLOB = "sparkdl-spare-{backend}-{owner}-*.json"


@dataclass(frozen=True)
class RankResult:
    """What a rank hands back: weights (rank 0 only), history, who ran it.

    ``seconds`` holds the wall time of the rank's phases (``backend_start``,
    ``train``, ``backend_stop``), so a slow fit shows where its time went.
    """

    weights: bytes | None
    history: list
    backend_size: int
    pid: int
    device: str
    seconds: dict = dataclasses.field(default_factory=dict)


def train_rank(spec, shard, collective, rank, peers, device) -> RankResult:
    """Start the backend, train, and collect the result, in this process."""
    from sparkdl.architecture import weights_to_bytes
    from sparkdl.worker.loop import run_rank

    began = time.perf_counter()
    collective.start(rank, peers, device, spec.timeout_s)
    started = time.perf_counter()
    module, history = run_rank(spec, shard, collective, rank, peers, device)
    weights = weights_to_bytes(module) if rank == 0 else None
    seconds = {"backend_start": started - began, "train": time.perf_counter() - started}
    return RankResult(weights, history, collective.size(), os.getpid(), str(device), seconds)


@dataclass(frozen=True)
class ChildAddress:
    """Where a child listens and the key a task proves itself with.

    ``address`` is a Linux abstract socket name (no file, so no path-length
    limit from deep Spark local directories) or, elsewhere, a socket path.
    """

    address: str
    key: str
    pid: int = 0

    @classmethod
    def new(cls) -> ChildAddress:
        token = secrets.token_hex(8)
        if sys.platform.startswith("linux"):
            address = f"\0sparkdl-rank-{token}"
        else:
            address = os.path.join(tempfile.gettempdir(), f"sparkdl-rank-{token}.sock")
        return cls(address, secrets.token_hex(16))


def _send(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(struct.pack("!Q", len(payload)) + payload)


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = conn.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(conn: socket.socket) -> bytes | None:
    """One framed message, or None if the peer hung up first."""
    head = _recv_exact(conn, 8)
    return None if head is None else _recv_exact(conn, struct.unpack("!Q", head)[0])


def _alive(pid: int) -> bool:
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


def _spawn(backend: str, address: ChildAddress, owner: int, idle_s: float,
           marker: str | None, log) -> subprocess.Popen:
    # A task's own child also watches the task's process until it is claimed: a
    # task killed while writing its shard leaves no idle child behind. A spare
    # (marker set) outlives the process that started it.
    config = {"backend": backend, "address": address.address, "key": address.key,
              "owner": owner, "idle_s": idle_s, "marker": marker,
              "parent": None if marker else os.getpid()}
    # Its own session: Spark stopping the Python worker that started a spare
    # (idle reaping) must not take the spare with it.
    proc = subprocess.Popen([sys.executable, "-m", "sparkdl.worker.rank_process"],
                            stdin=subprocess.PIPE, stdout=log, stderr=log,
                            start_new_session=True)
    proc.stdin.write(json.dumps(config).encode())
    proc.stdin.close()
    _STARTED.append(proc)
    return proc


#: Children started by this process, polled so that finished ones are reaped.
_STARTED: list[subprocess.Popen] = []


def _reap() -> None:
    _STARTED[:] = [p for p in _STARTED if p.poll() is None]


class RankChild:
    """A fresh interpreter for one rank: this executor's spare, or one started now
    so that its imports overlap with the task writing its shard and meeting its peers.

    Example::

        child = RankChild.take("horovod", workdir)   # at task start
        ...                                          # write the shard, rendezvous
        result = child.run(spec_payload, shard.path, rank, peers, gpus, threads)
    """

    def __init__(self, backend: str, address: ChildAddress, log_path: str,
                 proc: subprocess.Popen | None = None, idle_s: float = DEFAULT_IDLE_S) -> None:
        self._backend = backend
        self._address = address
        self._log_path = log_path
        self._proc = proc
        self._idle_s = idle_s
        self._conn: socket.socket | None = None

    @classmethod
    def start(cls, backend: str, workdir: str, owner: int | None = None,
              idle_s: float = DEFAULT_IDLE_S) -> RankChild:
        """A new child for this task, logging into ``workdir``."""
        _reap()
        log_path = os.path.join(workdir, "rank.log")
        address = ChildAddress.new()
        with open(log_path, "ab") as log:
            proc = _spawn(backend, address, owner or executor_pid(), idle_s, None, log)
        return cls(backend, address, log_path, proc, idle_s)

    @classmethod
    def take(cls, backend: str, workdir: str, spares: bool = True,
             idle_s: float = DEFAULT_IDLE_S) -> RankChild:
        """This executor's idle spare for ``backend`` if one is left, else a new child.

        Args:
            backend: the collective backend's name.
            workdir: the task's scratch directory (the child's log goes there).
            spares: look for a spare at all (``warm_process`` in backendOptions).
            idle_s: idle timeout of a child started here, should the task die
                before handing it work.
        """
        owner = executor_pid()
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
                    _unlink(claimed)
                if _alive(address.pid):
                    return cls(backend, address, os.path.join(workdir, "rank.log"),
                               idle_s=idle_s)
        return cls.start(backend, workdir, owner, idle_s)

    @property
    def spare(self) -> bool:
        """Whether this is a spare left by an earlier task (not started by this one)."""
        return self._proc is None

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else self._address.pid

    def _connect(self, deadline: float) -> socket.socket:
        # A child binds its socket right after the interpreter starts; until
        # then (a few ms) connecting is refused.
        while True:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.connect(self._address.address)
                return conn
            except (FileNotFoundError, ConnectionRefusedError):
                conn.close()
                if not _alive(self.pid) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _connect_or_replace(self) -> socket.socket:
        try:
            return self._connect(time.monotonic() + 60)
        except (FileNotFoundError, ConnectionRefusedError):
            if self._proc is not None:
                raise
        # The spare died between the claim and now (it crashed, or was killed):
        # start a child of our own, paying the imports this once.
        workdir = os.path.dirname(self._log_path)
        fresh = RankChild.start(self._backend, workdir, idle_s=self._idle_s)
        self._address, self._proc = fresh._address, fresh._proc
        return self._connect(time.monotonic() + 60)

    def run(self, spec_payload: bytes, shard_path: str, rank: int, peers: list,
            gpus: tuple, threads: int) -> RankResult:
        """Hand the child its work and wait for its result.

        Args:
            spec_payload: the pickled :class:`~sparkdl.worker.spec.TrainSpec`
                (:attr:`~sparkdl.worker.train_task.ShippedSpec.payload`).
            shard_path: the rank's shard, written by the task.
            rank: this rank.
            peers: every rank's rendezvous info.
            gpus: the GPU addresses Spark gave the task; the child trains on the first.
            threads: CPUs Spark gave the task (0: unknown).

        Raises:
            WorkerFailedError: with the child's last log lines if it fails.
        """
        request = cloudpickle.dumps((spec_payload, shard_path, rank, peers, tuple(gpus),
                                     threads, self._log_path))
        try:
            self._conn = self._connect_or_replace()
            _send(self._conn, self._address.key.encode())
            _send(self._conn, request)
            out = _recv(self._conn)
        except OSError as exc:
            out, error = None, exc
        else:
            error = None
        finally:
            self.close()
        if self._proc is not None:
            self._proc.wait()
        log = self._read_log()
        if out is None:
            tail = "\n".join(log.strip().splitlines()[-20:])
            reason = f"failed ({error})" if error else "exited without a result"
            raise WorkerFailedError(f"Rank {rank}'s training process (pid {self.pid}) "
                                    f"{reason}:\n{tail}")
        return RankResult(**pickle.loads(out))

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
        """Stop a child that will not be given work (the task failed first)."""
        self.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        elif self._proc is None and _alive(self.pid):
            # A claimed spare never connected to: it would idle to its timeout.
            try:
                os.kill(self.pid, 9)
            except OSError:
                pass


def keep_spare(backend: str, idle_s: float = DEFAULT_IDLE_S) -> None:
    """Start an idle child for the next fit on this executor, unless one is waiting."""
    _reap()
    owner = executor_pid()
    directory = spare_dir()
    if glob.glob(os.path.join(directory, _SPARE_GLOB.format(backend=backend, owner=owner))):
        return
    address = ChildAddress.new()
    marker = os.path.join(directory, f"sparkdl-spare-{backend}-{owner}-{os.getpid()}"
                                     f"-{secrets.token_hex(4)}.json")
    proc = _spawn(backend, address, owner, idle_s, marker, subprocess.DEVNULL)
    # Written under a temporary name and renamed, so a taker never reads half of it;
    # 0600: the key lets whoever reads it run code in the child.
    tmp = f"{marker}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(dataclasses.asdict(dataclasses.replace(address, pid=proc.pid)), f)
    os.rename(tmp, marker)


def spare_dir() -> str:
    """Where spares advertise themselves: the executor's local directory."""
    from sparkdl.worker.task_env import local_dir

    return local_dir()


def executor_pid() -> int:
    """The pid of the executor JVM this process belongs to, else the parent's.

    PySpark workers are forked by ``pyspark.daemon``, itself a child of the
    executor JVM; the Scala estimator's workers are the JVM's children.
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


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _warm_up() -> None:
    import torch

    # torch imports torch._dynamo (and sympy) lazily on the first optimizer
    # construction: over a second, paid here while the child waits for work.
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=0.1)
    (param * 2).sum().backward()
    optimizer.step()


def _retire(marker: str | None) -> bool:
    """Withdraw an idle spare's advert; False if a task claimed it first."""
    if marker is None:
        return True
    try:
        os.rename(marker, f"{marker}.retired")
    except FileNotFoundError:
        return False
    _unlink(f"{marker}.retired")
    return True


def _accept(listener: socket.socket, key: bytes, owner: int, idle_s: float,
            marker: str | None, parent: int | None) -> socket.socket:
    """Wait for the task that proves it holds ``key``; exit if none comes."""
    deadline = time.monotonic() + idle_s
    claimed_grace = None
    while True:
        ready, _, _ = select.select([listener], [], [], 1.0)
        if ready:
            conn, _ = listener.accept()
            conn.settimeout(10)
            try:
                offered = _recv(conn)
            except OSError:
                offered = None
            if offered is not None and hmac.compare_digest(offered, key):
                conn.settimeout(None)
                return conn
            conn.close()
            continue
        if not _alive(owner) or (parent is not None and not _alive(parent)):
            _retire(marker)
            os._exit(0)
        now = time.monotonic()
        if claimed_grace is not None and now > claimed_grace:
            os._exit(0)  # claimed but the taker never came: it died
        if claimed_grace is None and now > deadline:
            if _retire(marker):
                os._exit(0)
            claimed_grace = now + 120


def _exit_when_task_hangs_up(conn: socket.socket) -> None:
    def watch() -> None:
        try:
            conn.recv(1)  # the task sends nothing more: this returns at hang-up
        except OSError:
            pass
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="sparkdl-task-watch").start()


def main() -> None:
    config = json.loads(sys.stdin.read())
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(config["address"])
    listener.listen(4)

    import torch  # noqa: F401 - the imports are what a spare saves the next task

    from sparkdl.collective import get_backend
    from sparkdl.data.shard import LocalShard
    from sparkdl.worker import loop  # noqa: F401 - import before work arrives

    if config["backend"] == "horovod":
        import horovod.torch  # noqa: F401 - the slowest import, done before work arrives
    _warm_up()
    conn = _accept(listener, config["key"].encode(), config["owner"], config["idle_s"],
                   config["marker"], config["parent"])
    listener.close()
    if not config["address"].startswith("\0"):
        _unlink(config["address"])
    request = _recv(conn)
    if request is None:
        os._exit(1)
    spec_payload, shard_path, rank, peers, gpus, threads, log_path = pickle.loads(request)
    # Everything written to fd 1 and 2 from here on (Horovod's logs, a print in
    # the user's model) goes to the task's log, which it copies to the executor log.
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    _exit_when_task_hangs_up(conn)

    from sparkdl.worker.task_env import gpu_device, set_threads

    set_threads(threads)
    spec = pickle.loads(spec_payload)
    collective = get_backend(spec.backend, spec.backend_options)
    collective.backward_passes_per_step = spec.backward_passes_per_step
    shard = LocalShard(shard_path, spec.layout)
    try:
        trained = train_rank(spec, shard, collective, rank, peers, gpu_device(gpus))
        stopping = time.perf_counter()
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    finally:
        collective.shutdown()
        shard.close()
    trained.seconds["backend_stop"] = time.perf_counter() - stopping
    # A plain dict: this module runs as __main__ here, so its classes would not
    # unpickle under the same name in the parent.
    _send(conn, pickle.dumps(dataclasses.asdict(trained)))
    # Interpreter teardown with torch and Horovod loaded takes seconds and the
    # task waits for it; everything this process owns is closed already.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
