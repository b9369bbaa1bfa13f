"""Unit-suite setup (no Spark, no JVM)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _torch_warm():
    """Take torch's one-time global side effects before any test runs.

    The first ``optimizer.step()`` of a process imports torch._dynamo, which sets
    ``TORCHINDUCTOR_CACHE_DIR`` in ``os.environ``. Doing that here keeps the
    environment guard of ``tests/conftest.py`` from blaming whichever test
    happens to step an optimizer first.
    """
    param = torch.nn.Parameter(torch.zeros(1))
    param.grad = torch.ones(1)
    torch.optim.SGD([param], lr=0.1).step()
