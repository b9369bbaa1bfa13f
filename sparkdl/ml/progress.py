"""The driver's view of a fit while it trains: a progress bar, log lines, callbacks.

Rank 0 reports every epoch's record, and within long epochs its running loss and
the samples per second, through the fit's rendezvous (:mod:`sparkdl.worker.progress`).
:class:`FitProgress` shows them as they arrive:

* ``verbose=1``: a ``tqdm.auto`` bar over the epochs (a widget in Jupyter, a text
  bar on a terminal) with loss, accuracy, validation figures, samples/s and ETA;
* ``verbose=2``: one line per epoch on standard output, for log files and
  spark-submit;
* ``verbose=0``: nothing shown;

and at every verbosity logs each epoch (logger ``sparkdl.ml.progress``, INFO) and
calls the user's ``onEpochEnd(epoch, metrics)`` callbacks. Where ranks cannot reach
this process (``spark.sparkdl.rendezvous=barrier``, always over Spark Connect), the
epochs arrive with the trained weights and are shown then.

Each epoch is shown and handed to the callbacks once: after a restart, epochs
trained again are not repeated.

Example::

    progress = FitProgress(verbose=1, epochs=20, callbacks=[print])
    progress.on_message({"type": "epoch", "epochs": 20, "record": {"epoch": 1, ...}})
    progress.close()
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

Callback = Callable[[int, dict], object]

#: Spark setting: the least seconds between rank 0's step reports within an epoch.
INTERVAL_CONF = "spark.sparkdl.progressInterval"
DEFAULT_INTERVAL_S = 5.0

_SHORT = {"train_loss": "loss", "train_accuracy": "acc", "val_loss": "val_loss",
          "val_accuracy": "val_acc"}


def progress_interval(spark) -> float:
    """``spark.sparkdl.progressInterval`` (seconds, default 5), checked.

    Raises:
        ConfigError: for a value that is not a positive number.
    """
    from sparkdl.errors import ConfigError

    text = spark.conf.get(INTERVAL_CONF, None) or str(DEFAULT_INTERVAL_S)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{INTERVAL_CONF} must be a positive number of seconds. "
                          f"Received: {text!r}")
    return value


def _samples_per_s(record: dict) -> float | None:
    rows, seconds = record.get("train_rows"), record.get("seconds")
    if isinstance(rows, int) and isinstance(seconds, (int, float)) and seconds > 0:
        return rows / seconds
    return None


def _figures(record: dict) -> dict[str, str]:
    """The epoch's figures as shown: short name -> text, samples/s last."""
    shown = {short: f"{record[name]:.4f}" for name, short in _SHORT.items()
             if isinstance(record.get(name), (int, float))}
    rate = _samples_per_s(record)
    if rate is not None:
        shown["samples/s"] = f"{rate:.0f}"
    return shown


def epoch_line(record: dict, epochs: int) -> str:
    """One epoch as a log line.

    Example:
        >>> epoch_line({"epoch": 2, "train_loss": 0.51234, "train_accuracy": 0.875,
        ...             "seconds": 1.25}, 10)
        'epoch 2/10: loss=0.5123 acc=0.8750 (1.25 s)'
    """
    shown = _figures(record)
    rate = shown.pop("samples/s", None)
    figures = " ".join(f"{short}={text}" for short, text in shown.items())
    seconds = record.get("seconds")
    tail = f" ({seconds:.2f} s)" if isinstance(seconds, (int, float)) else ""
    if rate is not None:
        tail += f" {rate} samples/s"
    return f"epoch {record.get('epoch')}/{epochs}: {figures}{tail}"


class FitProgress:
    """Shows one fit's progress (see the module's docstring); thread-safe.

    Args:
        verbose: 0 quiet, 1 a progress bar, 2 a line per epoch.
        epochs: the fit's epochs.
        callbacks: ``callable(epoch, metrics)``, called on each epoch's end, in order.
        start_epoch: epochs already done (a resumed fit starts its bar there).
    """

    def __init__(self, verbose: int, epochs: int, callbacks: Sequence[Callback] = (),
                 start_epoch: int = 0) -> None:
        self.verbose = verbose
        self.epochs = epochs
        self.callbacks = list(callbacks)
        self.shown = start_epoch
        self._lock = threading.Lock()
        self._bar = None
        if verbose == 1:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=epochs, initial=start_epoch, desc="sparkdl fit",
                             unit="epoch", file=sys.stderr, dynamic_ncols=True)

    def on_message(self, message: dict) -> None:
        """Take one of rank 0's messages (``type`` ``epoch`` or ``step``)."""
        with self._lock:
            if message.get("type") == "epoch" and isinstance(message.get("record"), dict):
                self._epoch(message["record"])
            elif message.get("type") == "step":
                self._step(message)

    def replay(self, records: Sequence[dict]) -> None:
        """The fit's epochs as the job returned them: those not shown yet are shown."""
        with self._lock:
            for record in records:
                self._epoch(record)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def _epoch(self, record: dict) -> None:
        epoch = record.get("epoch")
        if not isinstance(epoch, int) or epoch <= self.shown:
            return  # shown before a restart, or not an epoch
        self.shown = epoch
        line = epoch_line(record, self.epochs)
        log.info("sparkdl %s", line)
        if self._bar is not None:
            self._bar.set_postfix(_figures(record))
            self._bar.update(epoch - self._bar.n)
        elif self.verbose == 2:
            print(f"sparkdl {line}", flush=True)
        metrics = {k: v for k, v in record.items() if k != "epoch"}
        for callback in self.callbacks:
            try:
                callback(epoch, dict(metrics))
            except Exception:  # noqa: BLE001 - a callback's bug must not lose the fit
                log.exception("sparkdl: the onEpochEnd callback %r raised on epoch %d",
                              callback, epoch)

    def _step(self, message: dict) -> None:
        if self._bar is None or message.get("epoch", 0) <= self.shown:
            return
        postfix = {"step": f"{message.get('step')}/{message.get('steps')}"}
        if isinstance(message.get("loss"), (int, float)):
            postfix["loss"] = f"{message['loss']:.4f}"
        if isinstance(message.get("samples_per_s"), (int, float)):
            postfix["samples/s"] = f"{message['samples_per_s']:.0f}"
        self._bar.set_postfix(postfix)
