"""``python -m sparkdl.worker`` against a stand-in for the JVM task (no Spark)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pytest
import torch

from sparkdl.architecture import weights_from_bytes, weights_to_bytes
from sparkdl.nn import Dense, Input, Sequential
from sparkdl.worker.frames import FrameError, PeerClosed
from sparkdl.worker.jvm_worker import (
    AUTH,
    BATCH,
    BLOB,
    DONE,
    END,
    ERROR,
    GATHER,
    GATHERED,
    NONCE_BYTES,
    REQUEST,
    RESULT,
    SECRET_ENV,
    TO_JVM,
    TO_WORKER,
    Channel,
    HandshakeError,
    connect,
    proof,
    train_spec,
)
from sparkdl.worker.liveness import is_alive

TASK = {"rank": 0, "hosts": ["127.0.0.1"], "cpus": 1, "gpus": [], "attempt": 0,
        "executor_id": "0"}


def network():
    return Sequential([Input((3,)), Dense(2)])


def ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def jvm_handshake(channel: Channel, key: bytes, answer: bytes | None = None) -> bool:
    """The JVM's side of the AUTH handshake, as PythonWorker.scala runs it: challenge,
    check the worker's proof, then prove itself (with ``answer`` instead, if given).
    Whether the worker's proof was right."""
    challenge = secrets.token_bytes(NONCE_BYTES)
    channel.send(AUTH, challenge)
    kind, payload = channel.recv(timeout_s=30, max_bytes=64)
    assert kind == AUTH and len(payload) == 64
    nonce, worker_proof = payload[:NONCE_BYTES], payload[NONCE_BYTES:]
    if worker_proof != proof(key, TO_JVM, challenge, nonce):
        return False
    channel.send(AUTH, proof(key, TO_WORKER, nonce, challenge) if answer is None else answer)
    return True


class FakeJvm:
    """Listens, starts the worker, runs the handshake: what PythonWorker.scala does."""

    def __init__(self, secret="s3cret", sent_secret=None):
        self.server = socket.create_server(("127.0.0.1", 0))
        env = dict(os.environ, **{SECRET_ENV: sent_secret or secret})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sparkdl.worker", str(self.server.getsockname()[1])],
            env=env)
        self.server.settimeout(60)
        self.conn, _ = self.server.accept()
        self.conn.settimeout(120)
        self.channel = Channel(self.conn)
        self.authenticated = jvm_handshake(self.channel, secret.encode())

    def close(self):
        """Hang up, as the JVM pool does to retire a worker; the worker then exits."""
        self.conn.shutdown(socket.SHUT_RDWR)
        self.conn.close()
        self.server.close()
        self.proc.wait(60)


def batches_of(x, y):
    return pa.record_batch({"f": pa.array(x.tolist(), pa.list_(pa.float32())),
                            "y": pa.array(y, pa.int64())})


def test_train_request_becomes_the_python_spec():
    spec = train_spec({
        "network": network().to_json(), "loss": "cross_entropy", "optimizer": "sgd",
        "optimizer_params": {"lr": 0.1}, "batch_size": 8, "epochs": 2, "seed": 3,
        "num_workers": 2, "backend": "torch",
        "layout": {"feature_cols": ["f"], "label_col": "y", "integer_labels": True,
                   "feature_shape": [3], "validation_col": None, "order_col": "o"}})
    assert spec.architecture.kind == "spec"
    assert spec.layout.feature_shape == (3,) and spec.layout.order_col == "o"
    assert spec.rendezvous is None and spec.initial_weights is None


TRAIN = {"mode": "train", "task": TASK, "network": network().to_json(),
         "loss": "cross_entropy", "optimizer": "sgd", "optimizer_params": {"lr": 0.1},
         "batch_size": 8, "epochs": 2, "seed": 3, "num_workers": 1, "backend": "torch",
         "layout": {"feature_cols": ["f"], "label_col": "y", "integer_labels": True,
                    "feature_shape": [3]}}


def train(jvm: FakeJvm, x, y) -> tuple[dict, int]:
    """One training request: results by kind, and how many gathers the worker asked for."""
    jvm.channel.send(REQUEST, json.dumps(TRAIN).encode())
    jvm.channel.send(BATCH, ipc(batches_of(x, y)))
    jvm.channel.send(END)
    results, gathered = {}, 0
    while True:
        kind, payload = jvm.channel.recv()
        assert kind != ERROR, payload.decode()
        if kind == GATHER:
            gathered += 1
            jvm.channel.send(GATHERED, json.dumps([payload.decode()]).encode())
        elif kind == RESULT:
            row = pa.ipc.open_stream(payload).read_next_batch().to_pylist()[0]
            results[row["kind"]] = row["payload"]
        else:
            assert kind == DONE
            return results, gathered


def test_worker_trains_one_rank_and_asks_the_jvm_to_gather():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 3)).astype("float32"), rng.integers(0, 2, 20)
    jvm = FakeJvm()
    assert jvm.authenticated
    results, gathered = train(jvm, x, y)
    jvm.close()
    assert gathered == 1 and jvm.proc.returncode == 0
    assert set(results) == {"worker", "weights", "history"}
    assert len(json.loads(results["history"])) == 2
    assert set(weights_from_bytes(results["weights"])) == {"0.weight", "0.bias"}


def test_one_worker_serves_many_requests_and_trains_the_same_each_time():
    # A pooled worker: torch.distributed starts and stops per request, seeds are per request.
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 3)).astype("float32"), rng.integers(0, 2, 20)
    jvm = FakeJvm()
    first, _ = train(jvm, x, y)
    score(jvm, weights_from_bytes(first["weights"]))
    second, _ = train(jvm, x, y)
    assert json.loads(first["worker"])["pid"] == json.loads(second["worker"])["pid"] == jvm.proc.pid
    assert first["weights"] == second["weights"]
    assert jvm.proc.poll() is None, "a worker waits for the next request after DONE"
    jvm.close()
    assert jvm.proc.returncode == 0


SCORE_REQUEST = {"mode": "score", "task": TASK, "architecture_kind": "spec",
                 "feature_cols": ["f"], "feature_shape": [3], "task_kind": "multiclass",
                 "batch_size": 4, "prediction_col": "prediction",
                 "probability_col": "probability", "raw_col": "rawPrediction",
                 "scalar_prediction": False}


def send_score(jvm: FakeJvm, net: torch.nn.Module, x: np.ndarray) -> pa.RecordBatch:
    """Send one scoring request for ``net`` with the rows ``x``; the scored batch."""
    jvm.channel.send(REQUEST, json.dumps(SCORE_REQUEST).encode())
    jvm.channel.send(BLOB, network().to_json().encode())
    jvm.channel.send(BLOB, weights_to_bytes(net))
    jvm.channel.send(BATCH, ipc(batches_of(x, np.zeros(len(x), int))))
    kind, payload = jvm.channel.recv()
    assert kind == RESULT, payload
    return pa.ipc.open_stream(payload).read_next_batch()


def score(jvm: FakeJvm, state: dict) -> None:
    """One scoring request with these weights, checked against torch."""
    net = network().build()
    net.load_state_dict(state)
    x = np.arange(6, dtype="float32").reshape(2, 3)
    out = send_score(jvm, net, x)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.array(out.column("rawPrediction").to_pylist()), expected,
                               rtol=1e-6)
    jvm.channel.send(END)
    assert jvm.channel.recv()[0] == DONE


def test_worker_exits_when_its_parent_dies():
    # The parent stands in for the executor JVM: SIGKILLed, it closes nothing itself.
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(60)
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time; "
         "p = subprocess.Popen([sys.executable, '-m', 'sparkdl.worker', sys.argv[1]]); "
         "print(p.pid, flush=True); time.sleep(600)", str(server.getsockname()[1])],
        stdout=subprocess.PIPE, env=dict(os.environ, **{SECRET_ENV: "x"}))
    worker = int(parent.stdout.readline())
    conn, _ = server.accept()
    assert jvm_handshake(Channel(conn), b"x")  # the worker is connected and idle
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 20
        while is_alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not is_alive(worker), "the worker outlived its parent"
    finally:
        parent.stdout.close()
        conn.close()
        server.close()


def test_worker_scores_batches_lock_step():
    net = network().build()
    jvm = FakeJvm()
    x = np.arange(15, dtype="float32").reshape(5, 3)
    out = send_score(jvm, net, x)
    assert out.schema.names == ["prediction", "rawPrediction", "probability"]
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.array(out.column("rawPrediction").to_pylist()), expected,
                               rtol=1e-6)
    jvm.channel.send(END)
    assert jvm.channel.recv()[0] == DONE
    jvm.close()


def test_worker_reports_its_error_to_the_jvm():
    jvm = FakeJvm()
    jvm.channel.send(REQUEST, json.dumps({"mode": "dance", "task": TASK}).encode())
    kind, payload = jvm.channel.recv()
    assert kind == ERROR and "Unknown mode 'dance'" in payload.decode()
    jvm.close()
    assert jvm.proc.returncode == 1


def test_the_jvm_sees_a_wrong_secret():
    jvm = FakeJvm(sent_secret="wrong")
    assert not jvm.authenticated
    jvm.conn.close()  # the JVM drops it; the worker reads nothing more and exits
    assert jvm.proc.wait(30) == 1
    jvm.server.close()


def test_a_jvm_without_the_secret_is_refused_before_any_request_is_read(capfd):
    # A local user who took the JVM's port answers the handshake without the key, then
    # sends a request: the worker must stop at the bad proof, read nothing, answer nothing.
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(60)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparkdl.worker", str(server.getsockname()[1])],
        env=dict(os.environ, **{SECRET_ENV: "s3cret"}))
    conn, _ = server.accept()
    conn.settimeout(60)
    channel = Channel(conn)
    forged = proof(b"a guess", TO_WORKER, b"n" * NONCE_BYTES, b"c" * NONCE_BYTES)
    jvm_handshake(channel, b"s3cret", answer=forged)  # the worker's proof is checked by then
    try:
        channel.send(REQUEST, json.dumps({"mode": "dance", "task": TASK}).encode())
    except OSError:
        pass  # the worker may have hung up already
    assert proc.wait(30) == 1
    with pytest.raises((PeerClosed, ConnectionError)):
        channel.recv(timeout_s=10)  # no ERROR frame, no answer of any kind
    assert "did not prove that it holds this worker's secret" in capfd.readouterr().err
    conn.close()
    server.close()


def _serve_once(server: socket.socket, behave) -> threading.Thread:
    def run():
        conn, _ = server.accept()
        with conn:
            behave(conn)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_silent_server_times_out_the_handshake():
    with socket.create_server(("127.0.0.1", 0)) as server:
        thread = _serve_once(server, lambda conn: conn.recv(1))  # says nothing, waits
        began = time.monotonic()
        with pytest.raises(FrameError, match="sent no whole frame in time"):
            connect(server.getsockname()[1], b"k", handshake_s=0.5, connect_s=5)
        assert time.monotonic() - began < 5
    thread.join(5)


def test_a_server_that_declares_a_huge_challenge_is_refused_before_reading_it():
    def huge(conn):
        conn.sendall(AUTH.to_bytes(4, "big") + (1 << 40).to_bytes(8, "big"))
        conn.recv(1)
    with socket.create_server(("127.0.0.1", 0)) as server:
        thread = _serve_once(server, huge)
        with pytest.raises(FrameError, match="over the 32-byte cap"):
            connect(server.getsockname()[1], b"k", handshake_s=5, connect_s=5)
    thread.join(5)


def test_a_connection_dropped_before_the_challenge_is_tried_again():
    # A JVM busy with strangers' handshakes closes new connections; the worker retries.
    key = b"k" * 16
    with socket.create_server(("127.0.0.1", 0)) as server:
        def jvm():
            first, _ = server.accept()
            first.close()
            conn, _ = server.accept()
            with conn:
                assert jvm_handshake(Channel(conn), key)
                conn.recv(1)
        thread = threading.Thread(target=jvm, daemon=True)
        thread.start()
        channel = connect(server.getsockname()[1], key, handshake_s=5, connect_s=10)
        channel.close()
    thread.join(5)


def test_a_jvm_that_refuses_the_proof_is_not_retried():
    with socket.create_server(("127.0.0.1", 0)) as server:
        thread = _serve_once(server, lambda conn: jvm_handshake(Channel(conn), b"other key"))
        with pytest.raises(HandshakeError, match="refused this worker's proof"):
            connect(server.getsockname()[1], b"k", handshake_s=5, connect_s=10)
    thread.join(5)
