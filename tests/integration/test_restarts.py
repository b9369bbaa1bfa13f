"""A fit survives a lost executor or a killed rank: the barrier job runs again from
the newest state and ends with the weights of an uninterrupted run (issue 14).

Executors are real JVMs of the shared ``local-cluster``; the test kills them (or a
rank's Python process) with SIGKILL while the fit trains, as a preempted node or
the kernel's OOM killer would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from local_executors import executor_pids, wait_for_executors

from sparkdl import ClusterCapacityError, TorchEstimator, TrainingCodeError, WorkerFailedError
from sparkdl.checkpoints import METRICS

pytestmark = [pytest.mark.spark, pytest.mark.slow]


class Net(torch.nn.Module):
    """The digits MLP; with ``marker_dir`` each step takes a little longer (so a kill
    lands mid-training) and the process records its pid there."""

    def __init__(self, marker_dir: str | None = None, fail_after_steps: int = 0,
                 slow_state_after_steps: int = 0):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                        torch.nn.Dropout(0.2), torch.nn.Linear(32, 10))
        self.marker_dir = marker_dir
        self.fail_after_steps = fail_after_steps
        self.slow_state_after_steps = slow_state_after_steps
        self.steps = 0

    def state_dict(self, *args, **kwargs):
        # Rank 0 reads its state to write a checkpoint; past the given step that takes
        # long enough for the test to kill the process mid-checkpoint.
        if self.slow_state_after_steps and self.steps > self.slow_state_after_steps:
            Path(self.marker_dir, f"checkpointing-{os.getpid()}").touch()
            time.sleep(8)
        return super().state_dict(*args, **kwargs)

    def forward(self, x):
        if self.training:
            self.steps += 1
            if self.fail_after_steps and self.steps > self.fail_after_steps:
                raise ValueError(f"boom in forward after {self.fail_after_steps} steps")
            if self.marker_dir:
                Path(self.marker_dir, str(os.getpid())).touch()
                time.sleep(0.03)
        return self.body(x)


class make_net:  # noqa: N801 - a factory, called like one
    """A factory of :class:`Net` with the given settings (shipped by value)."""

    def __init__(self, marker_dir=None, fail_after_steps=0, slow_state_after_steps=0):
        self.settings = (marker_dir, fail_after_steps, slow_state_after_steps)

    def __call__(self):
        return Net(*self.settings)


def estimator(backend="torch", epochs=4, **params) -> TorchEstimator:
    merged = dict(model=make_net(), optimizer="adam", optimizerParams={"lr": 1e-2}, batchSize=64,
                  epochs=epochs, numWorkers=2, seed=7, backend=backend)
    merged.update(params)
    return TorchEstimator(**merged)


def weights(model) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.getModel().state_dict().items()}


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_allclose(wa[name], wb[name], rtol=1e-5, atol=1e-6, err_msg=name)


def after_epoch(log_dir: Path, epoch: int, action) -> threading.Thread:
    """Run ``action`` once rank 0 has logged ``epoch`` (so the kill lands mid-fit)."""

    def watch():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if len((log_dir / METRICS).read_text().splitlines()) >= epoch:
                    action()
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def uninterrupted(spark, digits):
    """The uninterrupted fit each interrupted one must match, per backend (run once)."""
    fits = {}

    def fit(backend):
        if backend not in fits:
            fits[backend] = estimator(backend).fit(digits[0])
        return fits[backend]
    return fit


@pytest.fixture
def healthy_cluster(spark):
    wait_for_executors(spark)
    yield spark
    wait_for_executors(spark)


@pytest.mark.parametrize("backend", ["torch", "horovod"])
def test_a_lost_executor_jvm_restarts_the_fit_with_the_weights_of_an_uninterrupted_run(
        healthy_cluster, digits, uninterrupted, tmp_path, backend):
    spark = healthy_cluster
    train, _ = digits
    straight = uninterrupted(backend)
    markers = tmp_path / "pids"
    markers.mkdir()
    killed = {}

    def kill_an_executor():
        executor, pid = sorted(executor_pids(spark).items())[-1]
        killed[executor] = pid
        os.kill(pid, signal.SIGKILL)

    watcher = after_epoch(tmp_path, 2, kill_an_executor)
    model = estimator(backend, model=make_net(str(markers)),
                      logDir=str(tmp_path)).fit(train)
    watcher.join(timeout=5)

    assert killed, "the executor was never killed: training ended before epoch 2?"
    assert_same_weights(model, straight)
    history = model.history
    assert history.restarts == 1
    first, second = history.attempts
    assert first["status"] == "failed" and second["status"] == "finished"
    assert second["resumed_from_epoch"] >= 2  # the state rank 0 handed the driver
    assert history.metric("epoch") == [1, 2, 3, 4]
    np.testing.assert_allclose(history.metric("train_loss"),
                               straight.history.metric("train_loss"), rtol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "horovod"])
def test_a_killed_rank_process_restarts_the_fit(healthy_cluster, digits, uninterrupted,
                                                 tmp_path, backend):
    train, _ = digits
    straight = uninterrupted(backend)
    markers = tmp_path / "pids"
    markers.mkdir()
    killed = []

    def kill_a_rank():
        pid = int(sorted(os.listdir(markers))[0])
        killed.append(pid)
        os.kill(pid, signal.SIGKILL)

    watcher = after_epoch(tmp_path, 2, kill_a_rank)
    model = estimator(backend, model=make_net(str(markers)),
                      logDir=str(tmp_path)).fit(train)
    watcher.join(timeout=5)

    assert killed
    assert_same_weights(model, straight)
    assert model.history.restarts == 1
    assert model.history.attempts[1]["resumed_from_epoch"] >= 2


def test_rank_zero_killed_while_writing_a_checkpoint_resumes_from_the_one_before(
        healthy_cluster, digits, uninterrupted, tmp_path):
    train, _ = digits
    ckpt = tmp_path / "ckpt"
    markers = tmp_path / "pids"
    markers.mkdir()
    straight = uninterrupted("torch")
    killed = []

    def kill_mid_checkpoint():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            writers = [m for m in os.listdir(markers) if m.startswith("checkpointing-")]
            third = ckpt / "epoch-0003"
            if writers and (third / "weights.safetensors").exists():
                assert not (third / "state.json").exists()
                killed.append(int(writers[0].split("-")[1]))
                os.kill(killed[0], signal.SIGKILL)
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_mid_checkpoint, daemon=True)
    watcher.start()
    # 12 steps per epoch: the checkpoint after epoch 3 is the slow one. Without the
    # driver's state, the restart can only resume from checkpointDir.
    model = estimator(model=make_net(str(markers), 0, 30), checkpointDir=str(ckpt),
                      driverStateInterval=0).fit(train)
    watcher.join(timeout=5)

    assert killed, "rank 0 was never caught writing the third checkpoint"
    assert model.history.attempts[1]["resumed_from_epoch"] == 2
    assert_same_weights(model, straight)
    assert sorted(os.listdir(ckpt)) == ["epoch-0001", "epoch-0002", "epoch-0003", "epoch-0004"]


def test_an_error_in_forward_is_not_retried(healthy_cluster, digits):
    train, _ = digits
    # 1437 rows, 2 ranks, batches of 64: 12 steps per epoch; the third epoch fails.
    began = time.monotonic()
    with pytest.raises(TrainingCodeError) as failure:
        estimator(epochs=5, model=make_net(None, 30)).fit(train)
    text = str(failure.value)
    assert "boom in forward after 30 steps" in text
    assert "TrainingCodeError" in text and "in epoch 3" in text
    assert "ran the barrier job" not in text  # never restarted
    assert time.monotonic() - began < 60


def test_max_restarts_zero_fails_as_before(healthy_cluster, digits, tmp_path):
    spark = healthy_cluster
    train, _ = digits
    markers = tmp_path / "pids"
    markers.mkdir()
    after_epoch(tmp_path, 1, lambda: os.kill(sorted(executor_pids(spark).values())[-1],
                                             signal.SIGKILL))
    with pytest.raises(WorkerFailedError, match="training job failed|worker failed"):
        estimator(epochs=6, maxRestarts=0, model=make_net(str(markers)),
                  logDir=str(tmp_path)).fit(train)


def test_an_executor_that_does_not_come_back_fails_within_the_timeout(tmp_path):
    # In an application of its own: it shrinks its cluster for good.
    local = str(Path(__file__).resolve().parents[2] / "deploy" / "local")  # local_executors
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join(filter(None, [local, os.environ.get("PYTHONPATH")]))}
    began = time.monotonic()
    done = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["removed"], "no executor was removed: the fit ended before epoch 1?"
    assert result["error"] == ClusterCapacityError.__name__, result
    assert "numWorkers=2 task slots within timeout=15 s (slots seen" in result["message"]
    # The wait for slots is bounded by the fit's timeout (15 s); the rest is Spark
    # noticing the loss and failing the stage.
    assert result["after_removal_s"] < 90 and time.monotonic() - began < 480


def _fit_on_a_shrinking_cluster(workdir: str) -> None:
    """A fit whose executor is removed by Spark's own scale-down (the cluster manager
    is told not to replace it); prints what the fit raised, as JSON."""
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local-cluster[2,1,1024]")
             .config("spark.ui.enabled", "false").config("spark.task.maxFailures", "1")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    wait_for_executors(spark)
    rng = np.random.default_rng(0)
    df = spark.createDataFrame([(rng.random(64).tolist(), int(rng.integers(10)))
                                for _ in range(1000)], "features array<float>, label long")
    removed = []

    def remove_an_executor():
        executor = sorted(executor_pids(spark))[-1]
        removed.append(time.monotonic())
        spark.sparkContext._jsc.sc().killExecutor(executor)

    markers = Path(workdir, "pids")
    markers.mkdir()
    after_epoch(Path(workdir), 1, remove_an_executor)
    try:
        estimator(epochs=20, timeout=15.0, model=make_net(str(markers)),
                  logDir=workdir).fit(df)
        error, message = None, ""
    except Exception as exc:  # noqa: BLE001 - reported to the test
        error, message = type(exc).__name__, str(exc)
    after = time.monotonic() - removed[0] if removed else None
    print(json.dumps({"removed": bool(removed), "error": error, "message": message,
                      "after_removal_s": after}))
    spark.stop()


if __name__ == "__main__":
    _fit_on_a_shrinking_cluster(sys.argv[1])
