"""Which process a rank trains in is the worker's policy, derived from the backend's
name and options; the backend itself holds collectives only."""

from __future__ import annotations

import pytest

from sparkdl.collective.base import Collective
from sparkdl.collective.torch_distributed import TorchDistributedCollective
from sparkdl.errors import ConfigError
from sparkdl.worker.rank_process import DEFAULT_IDLE_S, ProcessPolicy


def test_torch_ranks_train_in_the_task_process():
    assert ProcessPolicy.of("torch") == ProcessPolicy(False, False, DEFAULT_IDLE_S)


def test_horovod_ranks_train_in_fresh_processes_kept_warm_unless_told_otherwise():
    assert ProcessPolicy.of("horovod") == ProcessPolicy(True, True, DEFAULT_IDLE_S)
    assert ProcessPolicy.of("horovod", {"warm_process": False, "compression": "fp16"}) == \
        ProcessPolicy(True, False, DEFAULT_IDLE_S)
    assert ProcessPolicy.of("horovod", {"warm_idle_s": 5}).warm_idle_s == 5.0


def test_bad_process_options_are_refused_with_the_backends_words():
    with pytest.raises(ConfigError, match=r"backendOptions\['warm_idle_s'\] must be > 0"):
        ProcessPolicy.of("horovod", {"warm_idle_s": 0})
    with pytest.raises(ConfigError, match="keep_warm needs fresh_process"):
        ProcessPolicy(fresh_process=False, keep_warm=True)


def test_a_collective_holds_no_process_policy_or_accumulation():
    for name in ("fresh_process", "keep_warm", "warm_idle_s", "backward_passes_per_step"):
        assert not hasattr(Collective, name)
        assert not hasattr(TorchDistributedCollective(), name)
