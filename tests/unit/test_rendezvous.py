"""The driver rendezvous: ranks as threads of this process, over real sockets."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from sparkdl.errors import WorkerFailedError
from sparkdl.rendezvous import DriverRendezvous


def _gather_all(address, ranks, attempt=0, message=lambda r: f"m{r}"):
    out, errors = {}, {}

    def post(rank):
        try:
            out[rank] = address.gather(rank, message(rank), attempt)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            errors[rank] = exc

    threads = [threading.Thread(target=post, args=(r,)) for r in ranks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return out, errors


def test_every_rank_gets_every_message_in_rank_order():
    with DriverRendezvous(4, "127.0.0.1") as rdv:
        out, errors = _gather_all(rdv.address, [3, 1, 0, 2])
    assert not errors
    assert all(out[r] == ["m0", "m1", "m2", "m3"] for r in range(4))


def test_attempts_meet_separately():
    with DriverRendezvous(2, "127.0.0.1") as rdv:
        first, _ = _gather_all(rdv.address, [0, 1], attempt=0, message=lambda r: f"a{r}")
        second, _ = _gather_all(rdv.address, [0, 1], attempt=1, message=lambda r: f"b{r}")
    assert first[0] == ["a0", "a1"] and second[1] == ["b0", "b1"]


def test_a_rank_that_reconnects_replaces_its_dead_connection():
    with DriverRendezvous(2, "127.0.0.1", timeout_s=30) as rdv:
        stale = dataclasses.replace(rdv.address, timeout_s=0.3)
        with pytest.raises(WorkerFailedError, match="waited 0.3 s"):
            stale.gather(0, "stale", 0)
        out, errors = _gather_all(rdv.address, [0, 1])
    assert not errors and out[0] == ["m0", "m1"]


def test_a_missing_rank_times_out_with_a_clear_error():
    with DriverRendezvous(2, "127.0.0.1", timeout_s=0.5) as rdv:
        began = time.monotonic()
        with pytest.raises(WorkerFailedError, match="some never started"):
            rdv.address.gather(0, "alone", 0)
    assert time.monotonic() - began < 10


def test_a_wrong_key_is_refused_and_does_not_join():
    with DriverRendezvous(2, "127.0.0.1", timeout_s=5) as rdv:
        intruder = dataclasses.replace(rdv.address, authkey=b"not the key")
        with pytest.raises(WorkerFailedError, match="wrong key"):
            intruder.gather(1, "evil", 0)
        out, errors = _gather_all(rdv.address, [0, 1])
    assert not errors and out[1] == ["m0", "m1"]


def test_closing_releases_waiting_ranks():
    rdv = DriverRendezvous(2, "127.0.0.1", timeout_s=30)
    result = {}

    def wait():
        try:
            rdv.address.gather(0, "early", 0)
        except WorkerFailedError as exc:
            result["error"] = str(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    rdv.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert "closed the rendezvous" in result["error"]


def test_an_unreachable_driver_names_the_setting_to_change():
    with DriverRendezvous(1, "127.0.0.1") as rdv:
        address = rdv.address
    with pytest.raises(WorkerFailedError, match="spark.sparkdl.rendezvous=barrier"):
        address.gather(0, "late", 0)


def test_a_silent_connection_does_not_stall_the_ranks():
    import socket

    with DriverRendezvous(2, "127.0.0.1", timeout_s=30) as rdv:
        squatters = [socket.create_connection(("127.0.0.1", rdv.address.port))
                     for _ in range(3)]  # connect, then say nothing
        began = time.monotonic()
        out, errors = _gather_all(rdv.address, [0, 1])
        took = time.monotonic() - began
        for s in squatters:
            s.close()
    assert not errors and out[0] == ["m0", "m1"]
    assert took < 5, f"ranks waited {took:.1f} s behind silent connections"


def test_a_driver_that_never_answers_fails_the_rank_in_bounded_time(monkeypatch):
    import socket

    from sparkdl import rendezvous
    from sparkdl.rendezvous import RendezvousAddress

    monkeypatch.setattr(rendezvous, "HANDSHAKE_S", 0.3)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never speaks
        address = RendezvousAddress("127.0.0.1", silent.getsockname()[1], b"k" * 32, 60)
        began = time.monotonic()
        with pytest.raises(WorkerFailedError, match="cannot reach the driver's rendezvous"):
            address.gather(0, "hello", 0)
    assert time.monotonic() - began < 10


_UNPICKLED = []


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (_UNPICKLED.append, ("ran",))


def test_a_pickled_message_is_never_unpickled():
    import pickle
    import socket

    from sparkdl.rendezvous import _open

    with DriverRendezvous(1, "127.0.0.1", timeout_s=5) as rdv:
        sock = socket.create_connection(("127.0.0.1", rdv.address.port), timeout=5)
        conn = _open(sock, rdv.address.authkey, driver=False)  # holds the key, even
        conn.send_bytes(pickle.dumps((0, 0, _RunsCodeWhenUnpickled())))
        with pytest.raises((EOFError, OSError)):
            conn.recv_bytes()  # dropped, not answered
        conn.close()
        out, errors = _gather_all(rdv.address, [0])
    assert _UNPICKLED == [] and not errors and out[0] == ["m0"]


def test_an_oversized_message_is_dropped_before_it_is_read():
    import socket

    from sparkdl.rendezvous import MAX_MESSAGE_BYTES, _open

    with DriverRendezvous(1, "127.0.0.1", timeout_s=5) as rdv:
        sock = socket.create_connection(("127.0.0.1", rdv.address.port), timeout=5)
        conn = _open(sock, rdv.address.authkey, driver=False)
        try:
            conn.send_bytes(b"x" * (MAX_MESSAGE_BYTES + 1))
        except OSError:
            pass  # the driver may hang up while we still write
        with pytest.raises((EOFError, OSError)):
            conn.recv_bytes()
        conn.close()


def test_a_peer_trickling_its_handshake_is_cut_off_at_the_deadline(monkeypatch):
    import socket

    import sparkdl.rendezvous as rendezvous

    monkeypatch.setattr(rendezvous, "HANDSHAKE_S", 1.0)
    with DriverRendezvous(1, "127.0.0.1") as rdv:
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", rdv.address.port), timeout=10) as peer:
            peer.recv(4096)  # the driver's challenge
            closed = False
            while time.monotonic() - began < 8 and not closed:
                try:
                    peer.sendall(b"x")  # one byte at a time, each well within a read's bound
                    time.sleep(0.3)
                    peer.setblocking(False)
                    try:
                        closed = peer.recv(1) == b""
                    except BlockingIOError:
                        pass
                    finally:
                        peer.setblocking(True)
                except OSError:
                    closed = True
        assert closed and time.monotonic() - began < 4
        # The ranks still meet.
        assert rdv.address.gather(0, "m0", 0) == ["m0"]
