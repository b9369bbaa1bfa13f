"""Fixtures shared by every suite: a guard against tests that leak state."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail a test that leaves environment variables or a torch process group behind."""
    env = dict(os.environ)
    yield
    import torch.distributed as dist

    leaked_group = dist.is_available() and dist.is_initialized()
    if leaked_group:
        dist.destroy_process_group()
    changed = {k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)}
    # Set by pytest itself, once by the Spark fixture, and lazily by torch's compiler
    # cache on the first optimizer step: none of them is a test's doing.
    changed -= {"PYTEST_CURRENT_TEST", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON",
                "TORCHINDUCTOR_CACHE_DIR"}
    assert not leaked_group, "test left a torch.distributed process group initialised"
    assert not changed, f"test changed environment variables: {sorted(changed)}"
