"""A rank whose partition is bigger than its memory budget trains, spilling to disk.

The budget is enforced, not just observed: the rank runs in its own process inside
a memory cgroup (v1 ``memory.limit_in_bytes`` or v2 ``memory.max``, no swap). The
process joins the cgroup once Python, PyTorch and sparkdl are loaded (those few
hundred MB do not depend on the data), so the limit bounds everything the training
run adds: Arrow batches in flight, the shard's pages in the page cache (the kernel
charges file pages to the cgroup that reads them and reclaims them at the limit),
tensors, gradients. See ``spill_rank.py``.

* The partition is 2.6x the budget, and holding its record batches in memory under
  the same limit gets the process killed: the budget is really smaller than the data.
* The rank that spills writes the whole partition to a local Arrow IPC file, trains
  a full shuffled epoch from it (every row seen, accuracy above chance), and stays
  alive; the cgroup reports it hit its limit, so the kernel had to evict shard pages
  the rank had read.
* Its private memory (``RssAnon``, what the kernel cannot reclaim) grows by far less
  than the data.

Why not a whole ``TorchEstimator.fit``: the cgroup must hold the rank's process
and nothing else, while PySpark forks its workers from one daemon per executor
shared by every job of the session. The rank code here is the one a Spark task runs
(:func:`~sparkdl.worker.rank.train_rank`) on the record batches a Spark
task's Python worker reads, an Arrow IPC stream of 10,000-row batches.

Without a writable memory cgroup (not root, or cgroup v2 without the memory
controller delegated) the test still runs the rank and checks the private-memory
bound, and says in its output that the limit was not enforced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

pytestmark = [pytest.mark.slow]

RUNNER = Path(__file__).with_name("spill_rank.py")
FEATURES = 1024  # 4 KiB per row, a small image
ROWS = 130_000  # 532 MB of features
SPARK_BATCH_ROWS = 10_000  # spark.sql.execution.arrow.maxRecordsPerBatch
BUDGET = 192 * 2**20


class MemoryCgroup:
    """A child memory cgroup of this process's own, with a hard limit and no swap."""

    def __init__(self, path: Path, version: int):
        self.path = path
        self.version = version

    @classmethod
    def create(cls, name: str, limit: int) -> MemoryCgroup | None:
        """Make the cgroup, or return ``None`` where this process may not."""
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            if "memory" in controllers.split(","):
                parent, version = Path("/sys/fs/cgroup/memory") / where.lstrip("/"), 1
                break
        else:
            where = Path("/proc/self/cgroup").read_text().splitlines()[-1].split(":", 2)[2]
            parent, version = Path("/sys/fs/cgroup") / where.lstrip("/"), 2
        path = parent / name
        try:
            path.mkdir()
        except OSError:
            return None
        group = cls(path, version)
        try:
            if version == 1:
                group._write("memory.limit_in_bytes", limit)
                group._write("memory.swappiness", 0)
            else:
                if "memory" not in (path / "cgroup.controllers").read_text().split():
                    raise OSError("memory controller not delegated")
                group._write("memory.max", limit)
                group._write("memory.swap.max", 0)
        except OSError:
            group.remove()
            return None
        return group

    def _write(self, name: str, value: int) -> None:
        (self.path / name).write_text(str(value))

    @property
    def procs(self) -> str:
        return str(self.path / "cgroup.procs")

    def times_limit_hit(self) -> int:
        """How often usage reached the limit and the kernel had to reclaim."""
        if self.version == 1:
            return int((self.path / "memory.failcnt").read_text())
        events = dict(line.split() for line in
                      (self.path / "memory.events").read_text().splitlines())
        return int(events["max"])

    def peak(self) -> int:
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        return int((self.path / name).read_text())

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass  # a v1 cgroup can be busy for a moment after its last process exits


def write_partition(path: Path) -> None:
    """Random features whose label is the sign of feature 0, as Spark streams them."""
    rng = np.random.default_rng(0)
    schema = pa.schema([("features", pa.list_(pa.float32())), ("label", pa.int64())])
    offsets = pa.array(np.arange(0, SPARK_BATCH_ROWS * FEATURES + 1, FEATURES, dtype=np.int32))
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for _ in range(ROWS // SPARK_BATCH_ROWS):
            x = rng.standard_normal((SPARK_BATCH_ROWS, FEATURES), dtype=np.float32)
            writer.write_batch(pa.record_batch(
                [pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1))),
                 pa.array((x[:, 0] > 0).astype(np.int64))], schema=schema))


def run_rank(stream: Path, local_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPARK_LOCAL_DIRS": str(local_dir)}
    return subprocess.run([sys.executable, str(RUNNER), str(stream), str(FEATURES), "256",
                           *extra], env=env, capture_output=True, text=True, timeout=300)


def test_a_partition_larger_than_the_memory_budget_trains(tmp_path):
    stream = tmp_path / "partition.arrows"
    write_partition(stream)
    data_bytes = ROWS * FEATURES * 4
    assert data_bytes > 2.5 * BUDGET and ROWS % SPARK_BATCH_ROWS == 0
    local_dir = tmp_path / "local"
    local_dir.mkdir()

    group = MemoryCgroup.create(f"sparkdl-spill-{os.getpid()}", BUDGET)
    try:
        if group is not None:
            held = run_rank(stream, local_dir, "--cgroup", group.procs, "--hold")
            assert held.returncode == -9, (  # SIGKILL from the cgroup's OOM killer
                f"holding {data_bytes >> 20} MB of batches under a {BUDGET >> 20} MiB limit "
                f"was not killed: rc={held.returncode} {held.stdout} {held.stderr[-2000:]}")
            group.remove()
            group = MemoryCgroup.create(f"sparkdl-spill-{os.getpid()}", BUDGET)
        joined = ("--cgroup", group.procs) if group is not None else ()
        done = run_rank(stream, local_dir, *joined)
        assert done.returncode == 0, f"rc={done.returncode}\n{done.stderr[-4000:]}"
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if group is not None:
            assert group.times_limit_hit() > 0, "the shard fit in the budget after all"
            assert group.peak() <= BUDGET
    finally:
        if group is not None:
            group.remove()

    epoch = result["history"][0]
    added_anon = result["peak_rss_anon"] - result["loaded_rss_anon"]
    print(f"\nshard {result['peak_shard_bytes'] >> 20} MiB, budget "
          f"{'enforced' if group is not None else 'NOT enforced (no memory cgroup)'} "
          f"{BUDGET >> 20} MiB; RssAnon {result['loaded_rss_anon'] >> 20} MiB loaded, peak "
          f"{result['peak_rss_anon'] >> 20} MiB (+{added_anon >> 20}); epoch "
          f"{epoch['seconds']:.1f} s, accuracy {epoch['train_accuracy']:.3f}")
    assert result["peak_shard_bytes"] >= data_bytes  # the whole partition went to disk
    assert epoch["train_rows"] == ROWS
    assert epoch["train_accuracy"] > 0.8  # it learned: the label is one feature's sign
    assert added_anon < data_bytes / 3, f"private memory grew by {added_anon >> 20} MiB"
