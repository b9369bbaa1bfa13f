"""A Horovod rank's Spark task never imports torch: it hands the pickled spec on.

Importing torch takes about two seconds in a fresh Spark Python worker (the first
fit of a session, or after Spark replaced its idle workers). A Horovod rank trains
in a child process that has torch imported already, so the task itself only
writes the shard, meets its peers and forwards the spec's bytes. This runs that
task logic (:func:`~sparkdl.worker.rank.train_rank`, one rank, a real
Horovod child) in a clean interpreter and checks what it imported.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from sparkdl.architecture import Architecture, weights_to_bytes
from sparkdl.collective import horovod_available
from sparkdl.data.shard import ShardLayout
from sparkdl.worker.spec import TrainSpec
from sparkdl.worker.train_task import ShippedSpec

pytestmark = pytest.mark.horovod

TASK = """
import json, pickle, sys
import pyarrow as pa
from sparkdl.worker.context import StaticRankContext
from sparkdl.worker.rank import train_rank

shipped = pickle.loads(sys.stdin.buffer.read())
features = pa.array([[float(i), 1.0] for i in range(32)], pa.list_(pa.float32()))
batch = pa.record_batch([features, pa.array([i % 2 for i in range(32)], pa.int64())],
                        names=["features", "label"])
ctx = StaticRankContext(rank=0, hosts=["127.0.0.1"], cpus=1, gpus=(), executor_id="t",
                        gather_fn=lambda message: [message])
rows = [b.to_pylist()[0] for b in train_rank(shipped, iter([batch]), ctx)]
print(json.dumps({"torch_imported": "torch" in sys.modules,
                  "kinds": [r["kind"] for r in rows],
                  "worker": json.loads(rows[0]["payload"])}))
"""


def test_a_horovod_task_trains_through_its_child_without_importing_torch(tmp_path):
    assert horovod_available(), "Horovod is not installed: run deploy/horovod/build.sh"
    model = torch.nn.Linear(2, 2)
    spec = TrainSpec(architecture=Architecture.of(model), initial_weights=weights_to_bytes(model),
                     loss="cross_entropy", optimizer="sgd", optimizer_params={"lr": 0.1},
                     layout=ShardLayout(("features",), "label", True), batch_size=8, epochs=1,
                     seed=0, num_workers=1, backend="horovod", timeout_s=120,
                     backend_options={"warm_process": False})
    env = {**os.environ, "SPARK_LOCAL_DIRS": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", TASK], input=pickle.dumps(ShippedSpec.of(spec)),
                          capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    out = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert out["kinds"] == ["worker", "weights", "history"]
    worker = out["worker"]
    assert worker["backend_size"] == 1 and worker["warm_process"] is False
    assert worker["device"] == "cpu"
    assert set(worker["seconds"]) >= {"shard_write", "meet", "rank", "backend_start", "train"}
    assert out["torch_imported"] is False
