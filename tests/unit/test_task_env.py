"""Without Spark's local directory, shards and spare adverts go to a private directory."""

from __future__ import annotations

import os
import stat

import pytest

from sparkdl.worker.task_env import local_dir, private_dir


def test_without_spark_local_dirs_the_fallback_is_private(monkeypatch, tmp_path):
    monkeypatch.delenv("SPARK_LOCAL_DIRS", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    path = local_dir()
    assert path == str(tmp_path / f"sparkdl-{os.getuid()}")
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()


def test_spark_local_dirs_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARK_LOCAL_DIRS", f"{tmp_path},/elsewhere")
    assert local_dir() == str(tmp_path)


def test_a_shared_or_foreign_directory_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)  # another user could plant adverts or read shards here
    with pytest.raises(PermissionError, match="mode 0700"):
        private_dir(str(shared))
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(PermissionError):
        private_dir(str(link))
