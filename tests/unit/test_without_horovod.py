"""sparkdl without Horovod: the default falls back to torch, asking for it explains."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import sys
sys.modules["horovod"] = None          # as if Horovod were not installed
from sparkdl.collective import check_backend, default_backend, horovod_available
from sparkdl.errors import ConfigError
assert not horovod_available()
assert default_backend() == "torch", default_backend()
try:
    check_backend("horovod")
except ConfigError as exc:
    print(exc)
else:
    raise SystemExit("no error")
"""


def test_missing_horovod_is_a_config_error_naming_the_recipe():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=120, check=True)
    assert "deploy/horovod/build.sh" in done.stdout
    assert "backend='torch'" in done.stdout
