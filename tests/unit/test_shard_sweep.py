"""Shard directories of killed tasks are swept at the next task's start; a live
owner's, another user's or another machine's never are (issue 13, item 8)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sparkdl.worker.task_env import (
    SHARD_PREFIX,
    new_shard_dir,
    pid_namespace_key,
    process_start_time,
    shard_owner,
    sweep_stale_shards,
)

linux_only = pytest.mark.skipif(not os.path.isdir("/proc/self"),
                                reason="reads process start times from /proc")


@pytest.fixture
def sleeper():
    """A live process that is not this one."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def _dead_pid() -> tuple[int, int]:
    """The pid and start time of a process that has exited (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    started = process_start_time(proc.pid)
    proc.kill()
    proc.wait()
    return proc.pid, started


def _shard(parent, pid: int, started: int, key: str | None = None) -> str:
    path = parent / f"{SHARD_PREFIX}{pid}-{started}-{key or pid_namespace_key()}-ab12cd"
    path.mkdir(mode=0o700)
    (path / "shard.arrow").write_bytes(b"rows")
    return str(path)


@linux_only
def test_the_shard_of_a_dead_task_is_swept(tmp_path):
    stale = _shard(tmp_path, *_dead_pid())
    assert sweep_stale_shards(str(tmp_path)) == [stale]
    assert not os.path.exists(stale)


@linux_only
def test_a_live_owners_shard_is_kept(tmp_path, sleeper):
    live = _shard(tmp_path, sleeper.pid, process_start_time(sleeper.pid))
    mine = new_shard_dir(str(tmp_path))
    assert sweep_stale_shards(str(tmp_path)) == []
    assert os.path.isdir(live) and os.path.isdir(mine)


@linux_only
def test_a_shard_whose_pid_now_names_another_process_is_swept(tmp_path, sleeper):
    # The owner's pid was reused: a process runs under it, started at another time.
    reused = _shard(tmp_path, sleeper.pid, process_start_time(sleeper.pid) - 1)
    assert sweep_stale_shards(str(tmp_path)) == [reused]
    assert sleeper.poll() is None  # the process holding the pid now is untouched


@linux_only
def test_a_task_killed_outright_leaves_a_shard_that_the_next_task_sweeps(tmp_path):
    task = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sparkdl.worker.task_env import "
         "new_shard_dir; print(new_shard_dir(sys.argv[1]), flush=True); time.sleep(600)",
         str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        workdir = task.stdout.readline().strip()
        assert shard_owner(os.path.basename(workdir))[0] == task.pid
        assert sweep_stale_shards(str(tmp_path)) == [] and os.path.isdir(workdir)
    finally:
        task.kill()  # SIGKILL: its cleanup never runs
        task.wait()
        task.stdout.close()
    assert os.path.isdir(workdir)
    fresh = new_shard_dir(str(tmp_path))
    assert not os.path.exists(workdir) and os.path.isdir(fresh)


@linux_only
def test_another_users_shard_is_never_swept(tmp_path, monkeypatch):
    stale = _shard(tmp_path, *_dead_pid())
    if os.getuid() == 0:
        os.chown(stale, 65534, 65534)
    else:  # the directory is ours; make it look like another user's
        monkeypatch.setattr(os, "getuid", lambda uid=os.getuid(): uid + 1)
    assert sweep_stale_shards(str(tmp_path)) == []
    assert os.path.isdir(stale)


@linux_only
def test_shards_of_another_machine_or_pid_namespace_are_kept(tmp_path):
    # Its pid is dead here, but it was recorded on another host or in another
    # container sharing the directory, where it may be alive.
    foreign = _shard(tmp_path, *_dead_pid(), key="0123456789ab")
    assert sweep_stale_shards(str(tmp_path)) == []
    assert os.path.isdir(foreign)


@linux_only
def test_links_and_names_sparkdl_did_not_make_are_left_alone(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "data").write_bytes(b"keep")
    pid, started = _dead_pid()
    link = tmp_path / f"{SHARD_PREFIX}{pid}-{started}-{pid_namespace_key()}-ab12cd"
    link.symlink_to(target)
    legacy = tmp_path / f"{SHARD_PREFIX}kd83nd"  # before owners were recorded
    legacy.mkdir()
    assert sweep_stale_shards(str(tmp_path)) == []
    assert (target / "data").read_bytes() == b"keep" and legacy.is_dir()


def test_a_shard_directory_is_private_and_names_its_owner(tmp_path):
    path = new_shard_dir(str(tmp_path))
    pid, started, key = shard_owner(os.path.basename(path))
    assert (pid, key) == (os.getpid(), pid_namespace_key())
    assert started == (process_start_time(os.getpid()) or 0)
    assert os.stat(path).st_mode & 0o777 == 0o700
