"""Concurrent fits in one driver hold task slots; those that do not fit wait their turn."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from sparkdl.cluster import barrier_slots


def test_fits_that_do_not_fit_side_by_side_take_turns():
    sc = SimpleNamespace(applicationId="app-ledger-1")
    running, peak, order = [0], [0], []
    lock = threading.Lock()

    def fit(name):
        with barrier_slots(sc, 2, 2):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                order.append(name)
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=fit, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert sorted(order) == [0, 1, 2] and peak[0] == 1


def test_fits_that_fit_run_together_and_a_failure_releases_its_slots():
    sc = SimpleNamespace(applicationId="app-ledger-2")
    inside = threading.Barrier(2, timeout=5)

    def fit():
        with barrier_slots(sc, 1, 2):
            inside.wait()  # both hold a slot at once, or this times out

    threads = [threading.Thread(target=fit) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not inside.broken

    try:
        with barrier_slots(sc, 2, 2):
            raise RuntimeError("the barrier job failed")
    except RuntimeError:
        pass
    done = threading.Event()

    def next_fit():
        with barrier_slots(sc, 2, 2):
            done.set()

    thread = threading.Thread(target=next_fit, daemon=True)
    thread.start()
    assert done.wait(5), "slots of a failed fit were not released"
    thread.join(5)
