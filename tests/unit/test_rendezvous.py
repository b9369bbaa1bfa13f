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
