"""Live progress: rank 0's reporter, the driver's service and display, history plots."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from sparkdl.history import TrainingHistory
from sparkdl.ml.progress import FitProgress, epoch_line
from sparkdl.rendezvous import DriverRendezvous
from sparkdl.worker.progress import ProgressReporter


def record(epoch: int, loss: float = 0.5) -> dict:
    return {"epoch": epoch, "train_loss": loss, "train_accuracy": 0.75, "train_rows": 100,
            "seconds": 0.5}


def test_every_epoch_goes_in_order_and_only_the_newest_step_waits():
    sent, gate = [], threading.Event()

    def post(message):
        gate.wait(5)  # a slow driver: messages queue up meanwhile
        sent.append(message)

    reporter = ProgressReporter(post, interval_s=0.0)
    for epoch in (1, 2, 3):
        reporter.step(epoch, 1, 4, 0.9, 32, 0.1)
        reporter.step(epoch, 2, 4, 0.8, 64, 0.2)
        reporter.epoch(record(epoch), epochs=3)
    reporter.step(4, 1, 4, 0.7, 32, 0.1)
    gate.set()
    reporter.close()
    epochs = [m["record"]["epoch"] for m in sent if m["type"] == "epoch"]
    assert epochs == [1, 2, 3]
    steps = [m for m in sent if m["type"] == "step"]
    assert steps[-1] == {"type": "step", "epoch": 4, "step": 1, "steps": 4, "loss": 0.7,
                         "samples_per_s": pytest.approx(320.0)}
    assert len(steps) <= 2  # the first may have gone before the gate; then only the newest


def test_step_reports_are_throttled():
    sent = []
    reporter = ProgressReporter(sent.append, interval_s=60.0)
    for step in range(100):
        reporter.step(1, step + 1, 100, 0.5, step * 10, 1.0)
    reporter.close()
    assert sent == []


def test_a_driver_that_cannot_be_reached_turns_the_reporter_off_without_failing(caplog):
    calls = []

    def post(message):
        calls.append(message)
        raise OSError("connection refused")

    reporter = ProgressReporter(post, interval_s=0.0)
    reporter.epoch(record(1), 3)
    reporter.close()
    reporter.epoch(record(2), 3)  # after the failure: dropped, no error
    assert len(calls) == 1 and "stopped reporting progress" in caplog.text


def test_progress_reaches_the_driver_through_the_authenticated_rendezvous():
    got = []
    with DriverRendezvous(2, "127.0.0.1", on_progress=got.append) as rdv:
        rdv.address.post_progress({"type": "epoch", "epochs": 2, "record": record(1)})
        wrong = dataclasses.replace(rdv.address, authkey=b"x" * 32)
        with pytest.raises(Exception, match="wrong key"):
            wrong.post_progress({"type": "epoch", "epochs": 2, "record": record(2)})
        big = {"type": "step", "blob": "x" * (2 << 20)}
        rdv.address.post_progress(big)  # over the cap: not sent at all
    assert got == [{"type": "epoch", "epochs": 2, "record": record(1)}]


def test_a_failing_display_does_not_stop_the_service(caplog):
    def broken(message):
        raise RuntimeError("display bug")

    with DriverRendezvous(1, "127.0.0.1", on_progress=broken) as rdv:
        rdv.address.post_progress({"type": "step"})
        assert rdv.address.gather(0, "hello", attempt=0) == ["hello"]
    assert "showing the training progress failed" in caplog.text


def test_callbacks_get_each_epoch_once_in_order_even_after_a_restart(capsys):
    seen = []
    progress = FitProgress(2, 4, [lambda e, m: seen.append((e, m["train_loss"]))])
    for epoch in (1, 2):
        progress.on_message({"type": "epoch", "epochs": 4, "record": record(epoch)})
    progress.on_message({"type": "epoch", "epochs": 4, "record": record(2, loss=9.0)})  # again
    progress.replay([record(1), record(2), record(3), record(4)])
    progress.close()
    assert seen == [(1, 0.5), (2, 0.5), (3, 0.5), (4, 0.5)]
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"sparkdl {epoch_line(record(e), 4)}" for e in (1, 2, 3, 4)]
    assert lines[0] == "sparkdl epoch 1/4: loss=0.5000 acc=0.7500 (0.50 s) 200 samples/s"


def test_a_callback_that_raises_is_logged_and_the_others_still_run(caplog):
    seen = []

    def bad(epoch, metrics):
        raise ValueError("oops")

    progress = FitProgress(0, 2, [bad, lambda e, m: seen.append(e)])
    progress.replay([record(1), record(2)])
    assert seen == [1, 2] and "onEpochEnd callback" in caplog.text and "oops" in caplog.text


def test_the_bar_shows_epochs_and_running_figures(capsys):
    progress = FitProgress(1, 3)
    progress._bar.mininterval = 0  # redraw on every update
    progress.on_message({"type": "step", "epoch": 1, "step": 5, "steps": 10, "loss": 0.75,
                         "samples_per_s": 1234.0})
    time.sleep(0.01)
    progress.on_message({"type": "epoch", "epochs": 3, "record": record(1)})
    progress.close()
    err = capsys.readouterr().err
    assert "sparkdl fit" in err and "step=5/10" in err and "samples/s=1234" in err
    assert "1/3" in err and "loss=0.5000" in err


def test_quiet_shows_nothing(capsys):
    progress = FitProgress(0, 2)
    progress.replay([record(1), record(2)])
    progress.close()
    assert capsys.readouterr() == ("", "")


def test_history_plot_draws_train_and_validation_curves():
    history = TrainingHistory([{**record(e), "val_loss": 0.6, "val_accuracy": 0.7}
                               for e in (1, 2, 3)])
    figure = history.plot()
    assert [ax.get_title() for ax in figure.axes] == ["loss", "accuracy"]
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == ["train", "validation"]
    assert list(figure.axes[0].get_lines()[0].get_xdata()) == [1, 2, 3]
    with pytest.raises(ValueError, match="No metric \\['f1'\\]"):
        history.plot(["f1"])
    with pytest.raises(ValueError, match="no epochs"):
        TrainingHistory().plot()


def test_callbacks_are_callables_or_objects_with_on_epoch_end():
    from sparkdl import TorchEstimator
    from sparkdl.errors import ConfigError

    class Recorder:
        def __init__(self):
            self.seen = []

        def on_epoch_end(self, epoch, metrics):
            self.seen.append(epoch)

    recorder, plain = Recorder(), []
    est = TorchEstimator(model=lambda: None, onEpochEnd=lambda e, m: plain.append(e),
                         callbacks=[recorder])
    progress = FitProgress(0, 2, est.getOnEpochEnd())
    progress.replay([record(1), record(2)])
    assert plain == [1, 2] and recorder.seen == [1, 2]
    assert len(est.copy().getOnEpochEnd()) == 2  # Pipelines and tuning copy estimators
    with pytest.raises(ConfigError, match="onEpochEnd takes a callable"):
        TorchEstimator(callbacks=[42])
