"""Rank 0's live metrics, on their way to the driver while the job trains.

:class:`ProgressReporter` hands each message to a background thread, so training
never waits for the driver: an epoch's record is always sent, in order; of the
step reports (every ``interval_s`` within an epoch) only the newest waits. A
driver that cannot be reached turns the reporter off with one warning: progress
is a view, never a reason for a fit to fail.

Example::

    reporter = ProgressReporter(spec.rendezvous.post_progress, interval_s=5.0)
    reporter.step(epoch=1, step=10, steps=50, loss=0.7, samples=3200, seconds=2.0)
    reporter.epoch({"epoch": 1, "train_loss": 0.6}, epochs=20)
    reporter.close()
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Seconds :meth:`ProgressReporter.close` waits for the last messages to go.
FLUSH_S = 10.0


class ProgressReporter:
    """Sends rank 0's progress messages through ``post`` on a thread of its own.

    Args:
        post: sends one message (``RendezvousAddress.post_progress``); may raise.
        interval_s: the least time between two step reports.
    """

    def __init__(self, post: Callable[[dict], None], interval_s: float) -> None:
        self._post = post
        self._interval = interval_s
        self._last_step = time.monotonic()
        self._epochs: deque[dict] = deque()
        self._step: dict | None = None
        self._wake = threading.Condition()
        self._closed = False
        self._broken = False
        self._thread = threading.Thread(target=self._run, name="sparkdl-progress", daemon=True)
        self._thread.start()

    def step(self, epoch: int, step: int, steps: int, loss: float | None, samples: int,
             seconds: float) -> None:
        """A step's running figures, sent if ``interval_s`` passed since the last one.

        Args:
            epoch: the epoch (1-based). step: steps done in it. steps: per epoch.
            loss: rank 0's running mean loss this epoch (None before any row).
            samples: rows all ranks trained this epoch so far.
            seconds: since the epoch began.
        """
        now = time.monotonic()
        if self._broken or now - self._last_step < self._interval:
            return
        self._last_step = now
        message = {"type": "step", "epoch": epoch, "step": step, "steps": steps,
                   "samples_per_s": samples / seconds if seconds > 0 else None}
        if loss is not None:
            message["loss"] = loss
        with self._wake:
            self._step = message
            self._wake.notify()

    def epoch(self, record: dict, epochs: int) -> None:
        """An epoch's record (the history's), with the run's number of epochs."""
        if self._broken:
            return
        self._last_step = time.monotonic()
        with self._wake:
            self._step = None  # older than this epoch's end
            self._epochs.append({"type": "epoch", "epochs": epochs, "record": record})
            self._wake.notify()

    def close(self, timeout_s: float = FLUSH_S) -> None:
        """Send what is queued (within ``timeout_s``) and stop the thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout_s)

    def _next(self) -> dict | None:
        with self._wake:
            while not (self._epochs or self._step or self._closed):
                self._wake.wait()
            if self._epochs:
                return self._epochs.popleft()
            message, self._step = self._step, None
            return message

    def _run(self) -> None:
        while True:
            message = self._next()
            if message is None:
                return
            try:
                self._post(message)
            except Exception as exc:  # noqa: BLE001 - progress never fails training
                log.warning("sparkdl: rank 0 stopped reporting progress to the driver: %s",
                            exc)
                self._broken = True
                return
