"""The Python end of the Scala estimator and model: ``python -m sparkdl.worker <port>``.

The executor JVM (``sparkdl.ml.PythonWorkerPool``, for ``sparkdl.ml.TorchEstimator``
barrier tasks and ``sparkdl.ml.TorchModel`` scoring tasks) listens on a loopback port,
starts this process with the port as argument and a per-process secret in
``SPARKDL_WORKER_SECRET``, and talks over one socket in :mod:`sparkdl.worker.frames`
frames ``[kind: int32][length: int64][payload]`` (big-endian). One process serves many
requests, one at a time, as PySpark's reused Python workers do: each is a REQUEST,
its input frames, and this process's answers up to DONE. It exits when the JVM
closes the socket (an idle timeout, reuse turned off, the executor stopping), when
its parent process dies, and after any failed request (the JVM never reuses it).

The port is visible to every local user, so before anything else both ends prove
they hold the secret (:func:`authenticate`): three AUTH frames, each with a fixed
size and within :data:`HANDSHAKE_S` seconds, HMAC-SHA256 over both ends' random
nonces with a label per direction, so the secret never crosses the wire and a
proof cannot be replayed or reflected. The JVM keeps listening until its own
worker has proved itself (a stranger that connects first is dropped, whatever it
sends), and this process reads no REQUEST or BLOB (which may carry a pickled
architecture) from a peer that has not proved itself.

=============  =========  ========================================================
kind           direction  payload
=============  =========  ========================================================
AUTH (0)       jvm -> py  handshake 1: the JVM's challenge, 32 random bytes ``c``
AUTH (0)       py -> jvm  handshake 2: a nonce ``n`` (32 random bytes), then
                          ``HMAC(secret, "sparkdl-worker py->jvm" + c + n)``
AUTH (0)       jvm -> py  handshake 3: ``HMAC(secret, "sparkdl-worker jvm->py" + n + c)``
REQUEST (1)    jvm -> py  JSON: mode (``train``/``score``), task facts, the run spec
BLOB (9)       jvm -> py  scoring: architecture bytes, then weights bytes; training
                          (a restarted fit): the state it resumes from
BATCH (2)      jvm -> py  one Arrow IPC stream holding one record batch
END (3)        jvm -> py  no more batches
GATHER (4)     py -> jvm  a rendezvous message; the JVM runs ``allGather`` ...
GATHERED (5)   jvm -> py  ... and answers every rank's messages (JSON list)
RESULT (6)     py -> jvm  one Arrow IPC stream holding one record batch
ERROR (7)      py -> jvm  the worker's traceback; the JVM fails the task with it
DONE (8)       py -> jvm  all results sent
=============  =========  ========================================================

Training runs :func:`sparkdl.worker.rank.train_rank`, the same code as the PySpark
estimator (torch.distributed is started and shut down per request, as in a reused
PySpark worker); rank 0 hands its training state and a failure in the user's code
straight to the driver (:mod:`sparkdl.worker.jvm_rendezvous`). Scoring runs
:func:`sparkdl.worker.score_task.score_batch` once per batch, lock-step (one
RESULT per BATCH, holding only the new columns).
Everything this process prints goes to stderr, which the JVM copies to the
executor log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator

import pyarrow as pa

from sparkdl.worker.frames import FramedSocket, FrameError, PeerClosed

AUTH, REQUEST, BATCH, END, GATHER, GATHERED, RESULT, ERROR, DONE, BLOB = range(10)
SECRET_ENV = "SPARKDL_WORKER_SECRET"

#: The largest frame the JVM can send: it holds every payload in one Java array.
MAX_BYTES = (1 << 31) - 1
#: How long the JVM may take to send what it sends right after a request (BLOB).
PROMPT_S = 300.0
#: Seconds each end has for the whole AUTH handshake of one connection.
HANDSHAKE_S = 10.0
#: Seconds to connect and authenticate, retries included (the JVM's own connect
#: deadline is 120 s from the start of this process).
CONNECT_S = 100.0
#: Size of each end's random challenge or nonce, and of an HMAC-SHA256 proof.
NONCE_BYTES = 32
PROOF_BYTES = 32
#: HMAC labels, one per direction, so that one end's proof never passes for the other's.
TO_JVM = b"sparkdl-worker py->jvm"
TO_WORKER = b"sparkdl-worker jvm->py"


class HandshakeError(FrameError):
    """The peer on the JVM's port did not prove that it holds this worker's secret,
    or it refused this worker's proof; nothing it sent is read."""


class Channel(FramedSocket):
    """The worker's end of the JVM socket: frames, Arrow batches and gathers.

    No stall limit inside a frame: the JVM writes BATCH frames into a buffer that
    it flushes only when full or at the next other frame, so half a frame may wait
    for as long as the next rows take. The JVM's death still ends the read (the
    socket closes) and the worker (:func:`exit_with_parent`).

    Example::

        channel = Channel(socket.create_connection(("127.0.0.1", port)))
        kind, payload = channel.recv(REQUEST)
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, "The JVM task", MAX_BYTES, stall_s=None)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Record batches until END."""
        while True:
            kind, payload = self.recv(BATCH, END)
            if kind == END:
                return
            yield pa.ipc.open_stream(payload).read_next_batch()

    def send_batch(self, batch: pa.RecordBatch) -> None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        self.send(RESULT, sink.getvalue())

    def gather(self, message: str) -> list[str]:
        self.send(GATHER, message.encode("utf-8"))
        _, payload = self.recv(GATHERED)
        return json.loads(payload)


def proof(key: bytes, label: bytes, *nonces: bytes) -> bytes:
    """HMAC-SHA256 of ``label`` and the nonces under ``key``: one end's proof that it
    holds the key, bound to both ends' fresh nonces.

    Example:
        >>> len(proof(b"key", TO_JVM, b"c" * 32, b"n" * 32))
        32
    """
    return hmac.new(key, label + b"".join(nonces), hashlib.sha256).digest()


def authenticate(channel: FramedSocket, key: bytes, timeout_s: float = HANDSHAKE_S) -> None:
    """The worker's side of the AUTH handshake (the table above): answer the JVM's
    challenge, then check the JVM's proof, all within ``timeout_s`` seconds.

    Every frame has a fixed size and is capped before it is read, so a peer that is
    not the JVM can neither make this process allocate nor keep it waiting.

    Raises:
        PeerClosed: the peer hung up before its challenge (a busy JVM drops
            connections beyond its handshake limit; connecting again may succeed).
        HandshakeError: the peer's proof is wrong, or it refused this worker's.
        FrameError: a malformed frame, or none within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    _, challenge = channel.recv(AUTH, timeout_s=timeout_s, max_bytes=NONCE_BYTES)
    if len(challenge) != NONCE_BYTES:
        raise HandshakeError(f"{channel.peer} sent a {len(challenge)}-byte challenge, "
                             f"not {NONCE_BYTES} bytes: it is not a sparkdl JVM task.")
    nonce = secrets.token_bytes(NONCE_BYTES)
    channel.send(AUTH, nonce + proof(key, TO_JVM, challenge, nonce))
    try:
        _, answer = channel.recv(AUTH, timeout_s=max(0.0, deadline - time.monotonic()),
                                 max_bytes=PROOF_BYTES)
    except PeerClosed as exc:
        raise HandshakeError(
            f"{channel.peer} refused this worker's proof: its {SECRET_ENV} differs from the "
            "JVM's (this process must be started by the sparkdl JVM task).") from exc
    if not hmac.compare_digest(answer, proof(key, TO_WORKER, nonce, challenge)):
        raise HandshakeError(
            f"{channel.peer} did not prove that it holds this worker's secret: another "
            "process holds the JVM's port; nothing it sends is read.")


def connect(port: int, key: bytes, handshake_s: float = HANDSHAKE_S,
            connect_s: float = CONNECT_S) -> Channel:
    """Connect to the JVM task at loopback ``port`` and authenticate both ends.

    A connection dropped before the JVM's challenge is tried again while
    ``connect_s`` lasts (the JVM drops connections beyond its handshake limit when
    strangers flood its port); any other failure ends the attempt.

    Example::

        channel = connect(41234, os.environ.pop(SECRET_ENV).encode())

    Raises:
        OSError: nothing listens at ``port``.
        HandshakeError: the peer is not the JVM that started this process.
        FrameError: the peer broke the handshake or did not answer in time.
    """
    deadline = time.monotonic() + connect_s
    while True:
        sock = socket.create_connection(("127.0.0.1", port), timeout=handshake_s)
        sock.settimeout(None)  # frame deadlines bound every read from here on
        channel = Channel(sock)
        try:
            authenticate(channel, key, handshake_s)
        except PeerClosed:
            channel.close()
            if time.monotonic() > deadline:
                raise HandshakeError(
                    f"The JVM task at port {port} kept dropping this worker's connection for "
                    f"{connect_s:g} s before its challenge (too many other connections).") from None
            time.sleep(0.2)
            continue
        except BaseException:
            channel.close()
            raise
        return channel


def train_spec(request: dict, resume=None):
    """The :class:`~sparkdl.worker.spec.TrainSpec` a JVM training request describes.

    Args:
        request: the REQUEST frame's JSON.
        resume: the :class:`~sparkdl.checkpoints.Resume` a restarted fit continues
            from (the BLOB after the request), or None.
    """
    from sparkdl.architecture import Architecture
    from sparkdl.checkpoints import RunOutputs
    from sparkdl.data.shard import ShardLayout
    from sparkdl.lr_schedulers import SchedulerPlan
    from sparkdl.worker.early_stopping import EarlyStopping
    from sparkdl.worker.jvm_rendezvous import JvmRendezvousAddress
    from sparkdl.worker.spec import TrainSpec

    layout = request["layout"]
    shape = layout.get("feature_shape")
    return TrainSpec(
        architecture=Architecture("spec", request["network"].encode("utf-8")),
        initial_weights=None, loss=request["loss"], optimizer=request["optimizer"],
        optimizer_params=dict(request.get("optimizer_params") or {}),
        layout=ShardLayout(tuple(layout["feature_cols"]), layout.get("label_col"),
                           bool(layout["integer_labels"]),
                           tuple(shape) if shape else None, layout.get("validation_col"),
                           layout.get("order_col")),
        batch_size=int(request["batch_size"]), epochs=int(request["epochs"]),
        seed=int(request["seed"]), num_workers=int(request["num_workers"]),
        backend=request["backend"], shuffle=bool(request.get("shuffle", True)),
        timeout_s=float(request.get("timeout_s", 600.0)),
        backend_options=dict(request.get("backend_options") or {}),
        backward_passes_per_step=int(request.get("backward_passes_per_step", 1)),
        rendezvous=JvmRendezvousAddress.from_request(request.get("rendezvous")),
        outputs=RunOutputs(resume=resume),
        state_interval=int(request.get("state_interval") or 0),
        lr_scheduler=SchedulerPlan(request["lr_scheduler"],
                                   dict(request.get("lr_scheduler_params") or {}))
        if request.get("lr_scheduler") else None,
        gradient_clip_norm=float(request.get("gradient_clip_norm") or 0.0),
        early_stopping=EarlyStopping.from_param(request.get("early_stopping")),
        precision=str(request.get("precision") or "32"),
        metrics=tuple(request["metrics"]) if request.get("metrics") is not None else None)


def _context(channel: Channel, task: dict, keep_spare: bool = False):
    from sparkdl.worker.context import StaticRankContext

    return StaticRankContext(
        rank=int(task["rank"]), hosts=list(task.get("hosts") or ["localhost"]),
        cpus=int(task.get("cpus") or 0), gpus=tuple(task.get("gpus") or ()),
        executor_id=str(task.get("executor_id", "")),
        gather_fn=channel.gather, keep_spare=keep_spare)


def _train(channel: Channel, request: dict) -> None:
    from sparkdl.epoch_state import decode_state
    from sparkdl.worker.rank import train_rank
    from sparkdl.worker.train_task import ShippedSpec

    resume = None
    if request.get("resume"):
        _, state = channel.recv(BLOB, timeout_s=PROMPT_S)
        resume = decode_state(state)
    spec = ShippedSpec.of(train_spec(request, resume))
    # A pooled worker outlives the task, as a reused PySpark worker does, so it may keep
    # a warm Horovod rank process for the next fit.
    ctx = _context(channel, request["task"], keep_spare=bool(request.get("worker_reused")))
    for batch in train_rank(spec, channel.batches(), ctx):
        channel.send_batch(batch)


def _score(channel: Channel, request: dict) -> None:
    from sparkdl.architecture import Architecture, weights_from_bytes
    from sparkdl.worker.score_task import ScoreSpec, score_batch

    _, arch = channel.recv(BLOB, timeout_s=PROMPT_S)
    _, weights = channel.recv(BLOB, timeout_s=PROMPT_S)
    ctx = _context(channel, request["task"])
    ctx.limit_threads()
    device = ctx.device()
    shape = request.get("feature_shape")
    spec = ScoreSpec(
        model_key="jvm", feature_cols=tuple(request["feature_cols"]),
        feature_shape=tuple(shape) if shape else None, keep_cols=(),
        task=request["task_kind"], batch_size=int(request["batch_size"]),
        prediction_col=request["prediction_col"],
        probability_col=request.get("probability_col") or "",
        raw_col=request.get("raw_col") or "",
        scalar_prediction=bool(request["scalar_prediction"]))
    module = Architecture(request["architecture_kind"], arch).build(
        weights_from_bytes(weights)).to(device).eval()
    for batch in channel.batches():
        cols = score_batch(spec, module, device, batch) if batch.num_rows else {}
        if not cols:
            channel.send(RESULT, b"")
            continue
        channel.send_batch(pa.RecordBatch.from_arrays(list(cols.values()), names=list(cols)))


def serve(channel: Channel) -> None:
    """Answer requests, one at a time, until the JVM closes the connection.

    Raises:
        Exception: whatever a request raised; the caller reports it and exits.
    """
    while True:
        try:
            _, payload = channel.recv(REQUEST)
        except PeerClosed:  # between requests: this worker's work is done
            return
        request = json.loads(payload)
        if request["mode"] == "train":
            _train(channel, request)
        elif request["mode"] == "score":
            _score(channel, request)
        else:
            raise ValueError(f"Unknown mode {request['mode']!r}")
        channel.send(DONE)


def exit_with_parent(poll_s: float = 1.0) -> threading.Thread:
    """Exit this process as soon as its parent (the executor JVM) is gone.

    A closed socket already ends an idle worker; this also ends one that is busy
    computing when the JVM is killed. ``PR_SET_PDEATHSIG`` does not fit: it fires when
    the JVM *thread* that started this process ends, and pooled workers outlive the
    task threads that start them.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(3)

    thread = threading.Thread(target=watch, name="sparkdl-parent-watch", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m sparkdl.worker <port>  (started by the sparkdl JVM task)",
              file=sys.stderr)
        return 2
    secret = os.environ.pop(SECRET_ENV, "")
    if not secret:
        print(f"sparkdl worker: {SECRET_ENV} is not set; only the sparkdl JVM task starts "
              "this process.", file=sys.stderr)
        return 2
    # Results travel on the socket; keep stray prints (user code, Horovod) off it.
    os.dup2(2, 1)
    exit_with_parent()
    try:
        channel = connect(int(argv[0]), secret.encode("utf-8"))
    except (OSError, FrameError) as exc:
        # Nothing goes back on an unauthenticated connection, not even the error.
        print(f"sparkdl worker: cannot open the connection to the JVM task: {exc}",
              file=sys.stderr)
        return 1
    try:
        serve(channel)
    except BaseException:  # noqa: BLE001 - every failure goes back to the JVM task
        text = traceback.format_exc()
        sys.stderr.write(text)
        try:
            channel.send(ERROR, text.encode("utf-8", "replace"))
        except OSError:
            pass
        sys.stderr.flush()
        os._exit(1)
    sys.stderr.flush()
    # Interpreter teardown with torch loaded takes seconds; everything is closed.
    try:
        channel.close()
    finally:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
