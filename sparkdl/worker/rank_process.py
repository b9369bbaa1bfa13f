"""One rank's training, in this process or in a fresh child process.

Spark reuses Python workers between tasks. torch.distributed can be started again
in a reused worker, but Horovod cannot: a second ``hvd.init()`` in the same
process crashes. Backends that declare ``fresh_process`` therefore train in a
child interpreter (``python -m sparkdl.worker.rank_process``) started by the task;
the task keeps its shard, its rendezvous and its results, the child gets the
spec, the shard's path and the peers on stdin and returns its result on stdout.
The child dies with its parent (``PR_SET_PDEATHSIG``), so a task that Spark
kills leaves no rank behind, and its stderr goes to the executor log.

Starting a child costs an interpreter, torch and Horovod imports and torch's
lazy imports on the first optimizer (seconds). A task therefore leaves one idle,
fully imported child behind in its Spark Python worker (:func:`keep_spare`),
which the next fit's task on that worker takes (:meth:`RankChild.take`); it has
never run ``hvd.init()``, so it is as fresh as a new one. It exits with the
Python worker, which Spark stops after a minute idle.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import cloudpickle
import torch

from sparkdl.errors import WorkerFailedError


@dataclass(frozen=True)
class RankResult:
    """What a rank hands back: weights (rank 0 only), history, who ran it."""

    weights: bytes | None
    history: list
    backend_size: int
    pid: int


def train_rank(spec, shard, collective, rank, peers, device) -> RankResult:
    """Start the backend, train, and collect the result, in this process."""
    from sparkdl.architecture import weights_to_bytes
    from sparkdl.worker.loop import run_rank

    collective.start(rank, peers, device, spec.timeout_s)
    module, history = run_rank(spec, shard, collective, rank, peers, device)
    weights = weights_to_bytes(module) if rank == 0 else None
    return RankResult(weights, history, collective.size(), os.getpid())


class RankChild:
    """A fresh interpreter for one rank, started early so that its imports (torch,
    the backend) overlap with the task writing its shard and meeting its peers.

    Example::

        child = RankChild()            # at task start
        ...                            # write the shard, rendezvous
        result = child.run(spec, shard.path, rank, peers, device, threads)
    """

    def __init__(self, backend: str) -> None:
        self._err = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sparkdl.worker.rank_process", backend],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err)

    @classmethod
    def take(cls, backend: str) -> RankChild:
        """This worker's spare child for ``backend`` if it is alive, else a new one."""
        spare = _SPARES.pop(backend, None)
        if spare is not None and spare._proc.poll() is None:
            return spare
        if spare is not None:
            spare.kill()
        return cls(backend)

    def run(self, spec, shard_path, rank, peers, device, threads) -> RankResult:
        """Hand the child its work and wait for its result.

        Raises:
            WorkerFailedError: with the child's last stderr lines if it fails.
        """
        request = cloudpickle.dumps((spec, shard_path, rank, peers, str(device), threads))
        out, _ = self._proc.communicate(request)
        self._err.seek(0)
        log = self._err.read().decode(errors="replace")
        self._err.close()
        sys.stderr.write(log)
        if self._proc.returncode != 0:
            tail = "\n".join(log.strip().splitlines()[-20:])
            raise WorkerFailedError(f"Rank {rank}'s training process exited with code "
                                    f"{self._proc.returncode}:\n{tail}")
        return RankResult(**pickle.loads(out))

    def kill(self) -> None:
        """Stop a child that will not be given work (the task failed first)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._err.close()


#: Idle children kept by this Spark Python worker for the next fit, per backend.
_SPARES: dict[str, RankChild] = {}


def keep_spare(backend: str) -> None:
    """Start an idle child for the next fit on this worker, unless one is waiting."""
    spare = _SPARES.get(backend)
    if spare is None or spare._proc.poll() is not None:
        _SPARES[backend] = RankChild(backend)


def _warm_up() -> None:
    # torch imports torch._dynamo (and sympy) lazily on the first optimizer
    # construction: over a second, paid here while the child waits for work.
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=0.1)
    (param * 2).sum().backward()
    optimizer.step()


def _die_with_parent() -> None:
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the collective timeout still ends an orphaned rank


def main() -> None:
    _die_with_parent()
    # The result travels on the original stdout; everything else written to fd 1
    # (Horovod's logs, a print in the user's model) goes to stderr, the executor log.
    result = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    from sparkdl.collective import get_backend
    from sparkdl.data.shard import LocalShard
    from sparkdl.worker import loop  # noqa: F401 - import while the parent is busy

    if sys.argv[1:] == ["horovod"]:
        import horovod.torch  # noqa: F401 - the slowest import, done before work arrives
    _warm_up()
    spec, shard_path, rank, peers, device, threads = pickle.loads(sys.stdin.buffer.read())

    if threads:
        torch.set_num_threads(threads)
    collective = get_backend(spec.backend, spec.backend_options)
    collective.backward_passes_per_step = spec.backward_passes_per_step
    shard = LocalShard(shard_path, spec.layout)
    try:
        trained = train_rank(spec, shard, collective, rank, peers, torch.device(device))
    finally:
        collective.shutdown()
        shard.close()
    # A plain dict: this module runs as __main__ here, so its classes would not
    # unpickle under the same name in the parent.
    with result:
        result.write(pickle.dumps(dataclasses.asdict(trained)))
    # Interpreter teardown with torch and Horovod loaded takes seconds and the
    # task waits for it; everything this process owns is closed already.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
