"""``deploy/install.sh``, the script the Kubernetes image is built with, run in a clean
directory: it makes a virtualenv from the wheel, installs Horovod, and checks that the
result imports what the executors' worker imports and finds the bundled jar.

The Docker build downloads the dependencies from PyPI; here they come from the project's
environment instead, so the test stays on this machine: ``PIP_INSTALL_OPTS=--no-deps
--no-index`` and ``PYTHONPATH`` set to a directory of links to the project's
site-packages without sparkdl and Horovod (the script installs those two itself).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
OWN = ("sparkdl", "__editable__", "horovod")  # what the script must install itself


def dependencies_without_sparkdl(where: Path) -> Path:
    """Links to every entry of this environment's site-packages but sparkdl's and Horovod's."""
    site = Path(sysconfig.get_paths()["purelib"])
    where.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith(OWN) and not entry.name.endswith(".pth"):
            (where / entry.name).symlink_to(entry)
    return where


def test_install_script_builds_a_working_environment_from_the_wheel(wheel, tmp_path):
    target = tmp_path / "opt" / "sparkdl"
    deps = dependencies_without_sparkdl(tmp_path / "deps")
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(deps),
           "PIP_INSTALL_OPTS": "--no-deps --no-index", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run([str(ROOT / "deploy" / "install.sh"), str(target), str(wheel)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    site = subprocess.run([str(target / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # sparkdl, its jar and Horovod live in the new environment, not the project's
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(f"sparkdl 0.1.0 installed in {target}: torch "), last
    assert f"jar {site}/sparkdl/jars/sparkdl-jvm_2.13-0.1.0.jar" in last, last
    assert (Path(site) / "horovod" / "torch").is_dir()
    assert not any(p.name.startswith("__editable__") for p in Path(site).iterdir())


def test_install_script_refuses_a_missing_wheel_and_an_existing_environment(wheel, tmp_path):
    script = str(ROOT / "deploy" / "install.sh")
    missing = subprocess.run([script, str(tmp_path / "env"), str(tmp_path / "none.whl")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "build it with `make dist`" in missing.stderr
    (tmp_path / "env" / "bin").mkdir(parents=True)
    (tmp_path / "env" / "bin" / "python").touch()
    taken = subprocess.run([script, str(tmp_path / "env"), str(wheel)],
                           capture_output=True, text=True, timeout=60)
    assert taken.returncode == 2 and "already holds an environment" in taken.stderr
