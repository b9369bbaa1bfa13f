"""The rank child's own side: ``python -m sparkdl.worker.rank_child_main``.

Started by :func:`sparkdl.worker.rank_child.spawn` with its configuration as JSON
on stdin. It binds its socket, pays the imports a rank needs, then waits for a
task that proves its key (:func:`_accept`), trains that task's rank with
:func:`~sparkdl.worker.rank_process.train_in_process`, sends the result and exits.
The protocol is in :mod:`sparkdl.worker.rank_child`.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import os
import pickle
import select
import socket
import sys
import threading
import time

from sparkdl.worker.frames import FramedSocket, FrameError
from sparkdl.worker.rank_child import (
    KEY,
    KEY_MAX_BYTES,
    MAX_BYTES,
    RESULT,
    SPEC,
    WEIGHTS,
    WORK,
    WORK_MAX_BYTES,
    peer_credentials,
    trusted_peer,
)
from sparkdl.worker.spares import retire
from sparkdl.worker.task_env import is_same_process

#: How long a connecting peer has to prove the key.
KEY_TIMEOUT_S = 10.0
#: How long the task may take to send its work once it proved the key (it sends
#: both frames at once).
WORK_TIMEOUT_S = 300.0
#: How long a claimed spare waits for its taker to connect before it counts it dead.
CLAIMED_GRACE_S = 120.0


def _warm_up() -> None:
    import torch

    # torch imports torch._dynamo (and sympy) lazily on the first optimizer
    # construction: over a second, paid here while the child waits for work.
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=0.1)
    (param * 2).sum().backward()
    optimizer.step()


def _prove(conn: socket.socket, key: bytes) -> FramedSocket | None:
    """The connection as frames if the peer sends ``key`` in time, else ``None``."""
    # Before the key, the peer may be anyone on this host: a small cap and a
    # deadline for the whole frame.
    stranger = FramedSocket(conn, "a peer", KEY_MAX_BYTES, stall_s=KEY_TIMEOUT_S)
    try:
        _, offered = stranger.recv(KEY, timeout_s=KEY_TIMEOUT_S)
    except OSError:  # FrameError included
        return None
    if not hmac.compare_digest(offered, key):
        return None
    return FramedSocket(conn, "the task", MAX_BYTES)


def _gone(pid: int | None, started: int) -> bool:
    """Whether the watched process ``pid`` has exited: not running, or its pid now
    names a process that started at another time."""
    return pid is not None and not is_same_process(pid, started)


def _accept(listener: socket.socket, key: bytes, owner: int, idle_s: float,
            marker: str | None, parent: int | None, owner_started: int = 0,
            parent_started: int = 0) -> FramedSocket:
    """Wait for the task that proves it holds ``key``; exit if none comes."""
    deadline = time.monotonic() + idle_s
    claimed_grace = None
    while True:
        ready, _, _ = select.select([listener], [], [], 1.0)
        if ready:
            conn, _ = listener.accept()
            # Another OS user is dropped unread: it cannot hold the key, and
            # waiting for its frame would stall this loop for the key's timeout.
            if trusted_peer(peer_credentials(conn), os.getuid()):
                framed = _prove(conn, key)
                if framed is not None:
                    return framed
            conn.close()
            continue
        if _gone(owner, owner_started) or _gone(parent, parent_started):
            retire(marker)
            os._exit(0)
        now = time.monotonic()
        if claimed_grace is not None and now > claimed_grace:
            os._exit(0)  # claimed but the taker never came: it died
        if claimed_grace is None and now > deadline:
            if retire(marker):
                os._exit(0)
            claimed_grace = now + CLAIMED_GRACE_S


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

    from sparkdl.collective import PeerInfo, get_backend
    from sparkdl.data.shard import LocalShard
    from sparkdl.worker import loop  # noqa: F401 - import before work arrives
    from sparkdl.worker.rank_process import train_in_process
    from sparkdl.worker.task_env import gpu_device, set_threads

    if config["backend"] == "horovod":
        import horovod.torch  # noqa: F401 - the slowest import, done before work arrives
    _warm_up()
    conn = _accept(listener, config["key"].encode(), config["owner"], config["idle_s"],
                   config["marker"], config["parent"], config["owner_started"],
                   config["parent_started"])
    listener.close()
    if not config["address"].startswith("\0"):
        os.unlink(config["address"])
    try:
        _, work = conn.recv(WORK, timeout_s=WORK_TIMEOUT_S, max_bytes=WORK_MAX_BYTES)
        # Left a bytearray (pickle takes one): a copy would double the spec's peak.
        _, spec_payload = conn.recv(SPEC, timeout_s=WORK_TIMEOUT_S, as_bytes=False)
    except FrameError:  # the task hung up (PeerClosed) or broke the protocol
        os._exit(1)
    work = json.loads(work)
    # Everything written to fd 1 and 2 from here on (Horovod's logs, a print in
    # the user's model) goes to the task's log, which it copies to the executor log.
    log = os.open(work["log_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    _exit_when_task_hangs_up(conn.sock)

    set_threads(work["threads"])
    try:
        spec = pickle.loads(spec_payload)  # the task proved the key: it is trusted
        collective = get_backend(spec.backend, spec.backend_options)
        shard = LocalShard(work["shard_path"], spec.layout)
        peers = [PeerInfo(**p) for p in work["peers"]]
        trained = train_in_process(spec, shard, collective, work["rank"], peers,
                                   gpu_device(work["gpus"]))
        stopping = time.perf_counter()
        collective.shutdown()
        shard.close()
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    trained = trained.with_seconds(backend_stop=time.perf_counter() - stopping)
    fields = dataclasses.asdict(trained)
    weights = fields.pop("weights")
    conn.send(RESULT, json.dumps({**fields, "weights": weights is not None}).encode())
    conn.send(WEIGHTS, weights or b"")
    # Interpreter teardown with torch and Horovod loaded takes seconds and the
    # task waits for it; everything this process owns is closed already.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
