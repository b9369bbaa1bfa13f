"""Restarting a fit's barrier job after a lost executor, from the newest state.

Spark never retries a failed barrier ResultStage, and TorchDistributor and
horovod.spark give up with it. :func:`train_with_restarts` runs the barrier job
again, up to ``maxRestarts`` times, when it failed for a reason outside the
user's code (a lost executor, a killed rank process, a rank that stopped
answering, a collective or rendezvous timeout): it waits for the cluster to
have ``numWorkers`` task slots again and resumes from the newest of two states,
the one rank 0 last handed the driver (:mod:`sparkdl.epoch_state`, every
``driverStateInterval`` epochs) and the newest complete checkpoint in
``checkpointDir``. Resuming at an epoch boundary gives the weights of an
uninterrupted run. A failure in the user's code (the forward pass, the loss, the
backward pass: :class:`~sparkdl.errors.TrainingCodeError`) is never retried.

Example::

    policy = RestartPolicy(max_restarts=3, state_interval=1, timeout_s=600.0)
    run = train_with_restarts(prepared, spec, slots, meet, policy, shapes)
    run.job.weights, run.resume, run.attempts
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import DataFrame

from sparkdl.checkpoints import Resume, latest_checkpoint
from sparkdl.epoch_state import decode_state
from sparkdl.errors import TrainingCodeError, WorkerFailedError
from sparkdl.ml.training_job import JobResult, run_training_job
from sparkdl.session import facts_for
from sparkdl.validation import require_non_negative_int
from sparkdl.worker.spec import TrainSpec

log = logging.getLogger(__name__)

#: Errors that fail the same way on every attempt: the user's code, settings, data,
#: and a fit that was cancelled or whose SparkContext stopped.
_DETERMINISTIC = ("TrainingCodeError", "ConfigError", "SchemaError", "UntrustedCodeError",
                  "ModuleNotFoundError", "PicklingError", "SyntaxError", "cancelled",
                  "SparkContext was shut down", "SparkContext has been shutdown",
                  "bigger than spark.driver.maxResultSize")
#: The state a driver takes when spark.driver.maxResultSize is 0 (no limit).
_UNLIMITED_STATE_BYTES = 1 << 34


@dataclass(frozen=True)
class RestartPolicy:
    """How a fit survives a lost executor.

    Attributes:
        max_restarts: barrier jobs run again after an infrastructure failure (0: none).
        state_interval: epochs between the states rank 0 hands the driver (0: none;
            a restart then resumes from ``checkpointDir`` or the first epoch).
        timeout_s: how long a restart waits for the cluster's task slots to return.
    """

    max_restarts: int = 3
    state_interval: int = 1
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        require_non_negative_int("maxRestarts", self.max_restarts)
        require_non_negative_int("driverStateInterval", self.state_interval)


@dataclass(frozen=True)
class RecoveredRun:
    """The last barrier job's result, the state it resumed from, and every attempt."""

    job: JobResult
    resume: Resume | None
    attempts: list[dict]


class _DriverState:
    """What the ranks report to the driver while a job trains: rank 0's newest
    state, and failures in the user's code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.newest: Resume | None = None
        self.user_failure: str | None = None

    def on_state(self, epoch: int, data: bytes) -> None:
        try:
            state = decode_state(data)
        except ValueError as exc:
            log.warning("sparkdl: ignored a malformed training state from rank 0: %s", exc)
            return
        with self._lock:
            if self.newest is None or state.epoch > self.newest.epoch:
                self.newest = state

    def on_failure(self, rank: int, text: str) -> None:
        with self._lock:
            if self.user_failure is None:
                self.user_failure = f"A training worker failed (rank {rank}):\n{text}"


def max_state_bytes(spark) -> int:
    """The largest state the driver takes: ``spark.driver.maxResultSize``, the cap Spark
    puts on what tasks hand the driver."""
    size = facts_for(spark).max_result_bytes()
    return size if size > 0 else _UNLIMITED_STATE_BYTES


def retryable(message: str) -> bool:
    """Whether a failed barrier job may succeed when run again.

    Example:
        >>> retryable("ExecutorLostFailure (executor 1 exited caused by one of the running tasks)")
        True
        >>> retryable("A training worker failed: sparkdl.errors.TrainingCodeError: ...")
        False
    """
    return not any(name in message for name in _DETERMINISTIC)


def failure_facts(message: str) -> dict:
    """The failed rank and executor named in Spark's barrier-stage error, where given.

    Example:
        >>> failure_facts("Stage failed because barrier task ResultTask(7, 1) finished "
        ...               "unsuccessfully.\\nExecutorLostFailure (executor 3 exited ...)")
        {'failed_rank': 1, 'failed_executor': '3'}
    """
    facts: dict = {}
    task = re.search(r"barrier task \w+Task\(\d+, (\d+)\)", message)
    if task:
        facts["failed_rank"] = int(task.group(1))
    # Spark's own phrasings only: "ExecutorLostFailure (executor 3 exited ...)",
    # "Lost task 0.0 in stage 5.0 (TID 9) (10.0.0.7 executor 3): ...".
    executor = re.search(r"ExecutorLostFailure \(executor (\w+)", message) or \
        re.search(r"\(TID \d+\) \(\S+ executor (\w+)\)", message)
    if executor:
        facts["failed_executor"] = executor.group(1)
    return facts


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _cause(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return next((line for line in reversed(lines) if "Error" in line or "Failure" in line),
                lines[-1] if lines else "")[:500]


def _newer(a: Resume | None, b: Resume | None) -> Resume | None:
    if a is None or (b is not None and b.epoch > a.epoch):
        return b
    return a


def train_with_restarts(prepared: DataFrame, spec: TrainSpec, slots: int, meet: str,
                        policy: RestartPolicy, shapes: dict[str, list[int]],
                        on_progress: Callable[[dict], None] | None = None) -> RecoveredRun:
    """Run the barrier job, running it again from the newest state after an
    infrastructure failure.

    Args:
        prepared: one partition per rank (as :func:`run_training_job` takes it).
        spec: the run; its ``outputs.resume`` is where the first attempt starts.
        slots: the cluster's task slots when the fit started.
        meet: the rendezvous mode.
        policy: restarts, state interval and the wait for slots.
        shapes: the network's parameter shapes (to read ``checkpointDir``).
        on_progress: takes rank 0's live metrics (driver rendezvous only; see
            :class:`~sparkdl.ml.progress.FitProgress`).

    Raises:
        TrainingCodeError: the user's code failed (at once, never retried).
        WorkerFailedError: the restarts ran out, or the failure repeats by nature.
        ClusterCapacityError: the task slots did not come back within ``timeout_s``.
    """
    facts = facts_for(prepared.sparkSession)
    reports = _DriverState()
    resume = spec.outputs.resume
    attempts: list[dict] = []
    # Rank 0 hands its state to the driver's rendezvous only; in barrier mode (always
    # over Spark Connect, whose client ranks may not reach) a restart resumes from
    # checkpointDir or the first epoch.
    interval = policy.state_interval if meet == "driver" else 0
    for attempt in range(policy.max_restarts + 1):
        # A resumed run builds the network from the state's weights: the initial ones
        # would only enlarge every task's closure.
        run = dataclasses.replace(spec, outputs=dataclasses.replace(spec.outputs, resume=resume),
                                  state_interval=interval,
                                  initial_weights=None if resume else spec.initial_weights)
        record = {"attempt": attempt + 1, "started": _now(),
                  "resumed_from_epoch": resume.epoch if resume else 0}
        attempts.append(record)
        if resume is not None and resume.epoch >= spec.epochs:
            record.update(ended=_now(), status="finished")  # the last epoch's state
            return RecoveredRun(JobResult(resume.weights, [], []), resume, attempts)
        try:
            job = run_training_job(prepared, run, slots, meet, on_state=reports.on_state,
                                   max_state_bytes=max_state_bytes(facts.spark) if interval else 0,
                                   on_failure=reports.on_failure, on_progress=on_progress)
        except WorkerFailedError as exc:
            message = str(exc)
            record.update(ended=_now(), status="failed", cause=_cause(message),
                          **failure_facts(message))
            if reports.user_failure is not None:
                raise TrainingCodeError(reports.user_failure) from exc
            if TrainingCodeError.__name__ in message:  # no report: barrier mode
                raise TrainingCodeError(message) from exc
            if facts.is_stopped():
                raise
            if not retryable(message) or attempt == policy.max_restarts:
                if attempt:
                    message += (f"\n(sparkdl ran the barrier job {attempt + 1} times; "
                                f"maxRestarts={policy.max_restarts})")
                raise WorkerFailedError(message) from exc
            log.warning("sparkdl: the training job failed (attempt %d of %d): %s; restarting",
                        attempt + 1, policy.max_restarts + 1, record["cause"])
            slots = facts.wait_for_slots(spec.num_workers, policy.timeout_s)
            resume = _newer(resume, reports.newest)
            if spec.outputs.checkpoints is not None:
                try:
                    resume = _newer(resume, latest_checkpoint(spec.outputs.checkpoints, shapes))
                except OSError as read_error:  # the storage is unreachable now
                    log.warning("sparkdl: cannot read checkpointDir for the restart (%s); "
                                "using the driver's state", read_error)
            log.warning("sparkdl: restarting the training job (attempt %d) from %s",
                        attempt + 2, f"epoch {resume.epoch}" if resume else "the first epoch")
            continue
        record.update(ended=_now(), status="finished")
        return RecoveredRun(job, resume, attempts)
    raise AssertionError("unreachable: the last attempt returns or raises")
