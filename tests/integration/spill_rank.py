"""One training rank fed an Arrow stream, run by test_spill.py in its own process.

The rank runs :func:`sparkdl.worker.rank.train_rank`, the code every
Spark training task runs (PySpark and JVM launchers alike), with a one-rank
:class:`~sparkdl.worker.context.StaticRankContext` and the torch backend. Its
input is what a Spark task's Python worker reads from its executor: an Arrow IPC
stream of record batches (here from a file, batch by batch, as PySpark reads its
socket). A separate process so that the test can put it, and nothing else, under
a memory limit, and measure it.

With ``--cgroup PROCS_FILE`` the process joins that memory cgroup once its
interpreter, PyTorch and sparkdl are loaded (a few hundred MB that do not depend
on the data): a cgroup charges a process only for memory it touches after
joining, so the limit bounds exactly what the training run adds, page cache of
the shard file included. With ``--hold`` it instead keeps every record batch in
memory, as a loader without a spill would, to show that the limit is real.

A sampler thread reads ``/proc/self/status`` every few milliseconds: the peak of
``RssAnon`` (private memory the kernel cannot reclaim without swap) and the
largest size the local shard file reached. One JSON line goes to stdout.

    python tests/integration/spill_rank.py DATA.arrows FEATURES BATCH_SIZE \
        [--cgroup /sys/fs/cgroup/.../cgroup.procs] [--hold]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from glob import glob


class Sampler(threading.Thread):
    """Peak ``RssAnon`` of this process and peak size of the shard file, sampled."""

    def __init__(self, shard_glob: str, every_s: float = 0.005):
        super().__init__(daemon=True)
        self.shard_glob = shard_glob
        self.every_s = every_s
        self.peak_rss_anon = 0
        self.peak_shard_bytes = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    kib = int(line.split()[1])
                    self.peak_rss_anon = max(self.peak_rss_anon, kib * 1024)
        for path in glob(self.shard_glob):
            try:
                self.peak_shard_bytes = max(self.peak_shard_bytes, os.path.getsize(path))
            except OSError:  # removed between glob and stat at the end of the task
                pass

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            time.sleep(self.every_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()


def vm_hwm() -> int:
    """Peak resident set (anonymous and file-backed pages together), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main(stream: str, width: int, batch_size: int, cgroup: str | None = None,
         hold: bool = False) -> dict:
    sampler = Sampler(os.path.join(os.environ["SPARK_LOCAL_DIRS"], "sparkdl-shard-*",
                                   "shard.arrow"))
    sampler.start()
    import pyarrow as pa
    import torch

    from sparkdl.architecture import Architecture, weights_to_bytes
    from sparkdl.data.shard import ShardLayout
    from sparkdl.worker.context import StaticRankContext
    from sparkdl.worker.rank import train_rank
    from sparkdl.worker.spec import TrainSpec
    from sparkdl.worker.train_task import ShippedSpec

    torch.manual_seed(0)
    model = torch.nn.Linear(width, 2)
    torch.optim.SGD(model.parameters(), lr=0.1)  # the first optimizer imports torch._dynamo
    sampler.sample()
    loaded_rss_anon = sampler.peak_rss_anon
    if cgroup:
        with open(cgroup, "w") as procs:
            procs.write(str(os.getpid()))
    source = pa.ipc.open_stream(pa.OSFile(stream))
    if hold:
        held = list(source)
        return {"held_bytes": sum(b.nbytes for b in held)}
    spec = TrainSpec(architecture=Architecture.of(model), initial_weights=weights_to_bytes(model),
                     loss="cross_entropy", optimizer="sgd", optimizer_params={"lr": 0.05},
                     layout=ShardLayout(("features",), "label", True), batch_size=batch_size,
                     epochs=1, seed=0, num_workers=1, backend="torch", timeout_s=120)
    ctx = StaticRankContext(rank=0, hosts=["127.0.0.1"], cpus=1, gpus=(), executor_id="spill",
                            gather_fn=lambda message: [message])
    began = time.perf_counter()
    results = {}
    for batch in train_rank(ShippedSpec.of(spec), source, ctx):
        row = batch.to_pylist()[0]
        results[row["kind"]] = json.loads(row["payload"]) if row["kind"] != "weights" else None
    seconds = time.perf_counter() - began
    sampler.stop()
    return {"history": results["history"], "worker": results["worker"], "seconds": seconds,
            "loaded_rss_anon": loaded_rss_anon, "peak_rss_anon": sampler.peak_rss_anon,
            "vm_hwm": vm_hwm(), "peak_shard_bytes": sampler.peak_shard_bytes}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stream")
    parser.add_argument("features", type=int)
    parser.add_argument("batch_size", type=int)
    parser.add_argument("--cgroup", help="cgroup.procs file to join once loaded")
    parser.add_argument("--hold", action="store_true", help="keep all batches in memory")
    args = parser.parse_args()
    print(json.dumps(main(args.stream, args.features, args.batch_size, args.cgroup, args.hold)),
          flush=True)
