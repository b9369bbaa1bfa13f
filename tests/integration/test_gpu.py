"""GPU executors: the task's Spark-assigned GPU is the rank's device (skips without CUDA)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_trains_on_the_gpu_spark_assigned(tmp_path):
    discovery = tmp_path / "gpus.sh"
    discovery.write_text('#!/bin/sh\necho \'{"name": "gpu", "addresses": ["0"]}\'\n')
    discovery.chmod(0o755)
    job = Path(__file__).with_name("gpu_job.py")
    done = subprocess.run([sys.executable, str(job), str(discovery)], capture_output=True,
                          text=True, timeout=600, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["workers"][0]["device"] == "cuda:0"
    assert result["accuracy"] > 0.95
