"""The rank child's lifecycle: spares are claimed once, exit when idle, when their
executor dies or when the claiming task hangs up; tasks fall back to a fresh child.

The children here run the ``torch`` backend's imports (Horovod's are covered by the
integration tests), with the executor local directory pointed at ``tmp_path``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from sparkdl.errors import WorkerFailedError
from sparkdl.worker import liveness, rank_child, rank_child_main
from sparkdl.worker.frames import FramedSocket
from sparkdl.worker.rank_child import KEY, ChildAddress, RankChild, trusted_peer
from sparkdl.worker.spares import keep_spare, take_child
from sparkdl.worker.task_env import process_start_time


@pytest.fixture
def executor(tmp_path, monkeypatch):
    """A stand-in executor JVM (a sleeping process) owning the spares in tmp_path."""
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp_path / "local"))
    (tmp_path / "local").mkdir()
    monkeypatch.setattr(liveness, "executor_pid", lambda: owner.pid)
    yield owner
    owner.kill()
    owner.wait()
    for marker in glob.glob(str(tmp_path / "local" / "*.json")):
        pid = json.load(open(marker))["pid"]
        _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except OSError:
        pass


def _markers(tmp_path) -> list[str]:
    return glob.glob(str(tmp_path / "local" / "sparkdl-spare-*.json"))


def _wait_dead(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not liveness.is_alive(pid):
            return True
        time.sleep(0.1)
    return False


def _task_dir(tmp_path, name: str) -> str:
    path = tmp_path / name
    path.mkdir()
    return str(path)


def test_a_spare_is_taken_once_and_a_second_taker_starts_its_own(tmp_path, executor):
    keep_spare("torch")
    keep_spare("torch")  # one advertised spare per executor and backend is enough
    [marker] = _markers(tmp_path)
    first = take_child("torch", _task_dir(tmp_path, "a"))
    second = take_child("torch", _task_dir(tmp_path, "b"))
    try:
        assert first._proc is None  # the spare, started by keep_spare
        assert second._proc is not None  # none left: a child of its own
        assert not os.path.exists(marker) and _markers(tmp_path) == []
    finally:
        first.kill()
        second.kill()
    assert _wait_dead(first.pid, 10) and _wait_dead(second.pid, 10)


def test_spares_of_another_executor_or_backend_are_not_taken(tmp_path, executor):
    keep_spare("horovod-like")  # any other backend name
    child = take_child("torch", _task_dir(tmp_path, "a"))
    try:
        assert child._proc is not None
        assert len(_markers(tmp_path)) == 1
    finally:
        child.kill()


def test_an_idle_spare_withdraws_and_exits(tmp_path, executor):
    keep_spare("torch", idle_s=1.0)
    [marker] = _markers(tmp_path)
    pid = json.load(open(marker))["pid"]
    assert _wait_dead(pid, 60)
    assert _markers(tmp_path) == []


def test_a_spare_exits_with_its_executor(tmp_path, executor):
    keep_spare("torch")
    [marker] = _markers(tmp_path)
    pid = json.load(open(marker))["pid"]
    executor.kill()
    executor.wait()
    assert _wait_dead(pid, 60)


def test_a_claimed_child_exits_when_the_task_hangs_up(tmp_path, executor):
    child = RankChild.start("torch", _task_dir(tmp_path, "a"))
    child._open()  # connects and proves the key
    time.sleep(0.5)
    assert child._proc.poll() is None  # claimed, waiting for its work
    child.close()
    assert child._proc.wait(timeout=60) != 0


def test_a_peer_without_the_key_is_dropped_before_the_child_allocates(tmp_path, executor):
    child = RankChild.start("torch", _task_dir(tmp_path, "a"))
    stranger = child._connect(time.monotonic() + 60)
    try:
        stranger.settimeout(60)
        stranger.sendall(struct.pack(">iq", 0, 1 << 40))  # a KEY frame of a terabyte
        assert stranger.recv(1) == b""  # hung up on
    finally:
        stranger.close()
    child._open()  # the task it waits for still gets it
    time.sleep(0.5)
    assert child._proc.poll() is None
    child.close()
    assert child._proc.wait(timeout=60) != 0


def test_a_dead_spare_is_replaced_by_a_fresh_child(tmp_path, executor):
    keep_spare("torch")
    child = take_child("torch", _task_dir(tmp_path, "a"))
    _kill(child.pid)
    assert _wait_dead(child.pid, 10)
    conn = child._connect_or_replace()
    try:
        assert child._proc is not None and child._proc.poll() is None
    finally:
        conn.close()
        child.kill()


def test_a_child_that_cannot_train_fails_the_task_with_its_log(tmp_path, executor):
    child = RankChild.start("torch", _task_dir(tmp_path, "a"))
    with pytest.raises(WorkerFailedError, match=r"Rank 0's training process .*\n(.|\n)*Error"):
        child.train(spec_payload=b"not a pickled spec", shard_path=str(tmp_path / "missing"),
                  rank=0, peers=[], gpus=(), threads=1)


@pytest.fixture
def sleeper():
    """A live process of this user that is not a rank child (a claimed spare's pid)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def _listener(address: str, backlog: int = 4) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(backlog)
    return listener


def test_a_task_sends_nothing_to_another_process_at_its_spares_address(tmp_path, executor,
                                                                        sleeper):
    # The spare exited and this process (not the spare's pid) bound its name.
    address = dataclasses.replace(ChildAddress.new(), pid=sleeper.pid)
    impostor = _listener(address.address)
    child = RankChild("torch", address, os.path.join(_task_dir(tmp_path, "a"), "rank.log"))
    try:
        child._open()  # falls back to a fresh child of its own, and proves the key to it
        assert child._proc is not None and child.pid != sleeper.pid
        impostor.settimeout(10)
        peer, _ = impostor.accept()  # the task's connection, waiting in the backlog
        with peer:
            peer.settimeout(10)
            assert peer.recv(1024) == b""  # hung up on without the key or anything else
        time.sleep(0.5)
        assert child._proc.poll() is None  # the fresh child took the key and waits for work
    finally:
        impostor.close()
        child.kill()


def test_connecting_to_an_address_that_never_accepts_gives_up_at_the_deadline(tmp_path):
    address = dataclasses.replace(ChildAddress.new(), pid=os.getpid())
    listener = _listener(address.address, backlog=0)
    fillers = []
    try:
        while True:  # fill the backlog: a blocking connect would now wait for ever
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            fillers.append(filler)
            filler.setblocking(False)
            try:
                filler.connect(address.address)
            except BlockingIOError:
                break
        child = RankChild("torch", address, str(tmp_path / "rank.log"))
        began = time.monotonic()
        with pytest.raises(TimeoutError, match="did not accept a connection in time"):
            child._connect(time.monotonic() + 0.5)
        assert time.monotonic() - began < 5
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_only_this_users_processes_and_only_the_expected_pid_are_trusted():
    me = os.getuid()
    assert trusted_peer((42, me, 0), me) and trusted_peer((42, me, 0), me, pid=42)
    assert not trusted_peer((42, me + 1, 0), me)
    assert not trusted_peer((42, me + 1, 0), me, pid=42)
    assert not trusted_peer((43, me, 0), me, pid=42)


def test_a_child_drops_a_peer_of_another_user_unread_even_with_the_key(monkeypatch):
    address = ChildAddress.new()
    listener = _listener(address.address)
    key = address.key.encode()
    real = rank_child_main.peer_credentials
    calls = []

    def credentials(conn):  # the first peer looks like another OS user to the child
        pid, uid, gid = real(conn)
        calls.append(uid)
        return (pid, uid + 1, gid) if len(calls) == 1 else (pid, uid, gid)
    monkeypatch.setattr(rank_child_main, "peer_credentials", credentials)
    accepted = []
    accepter = threading.Thread(target=lambda: accepted.append(rank_child_main._accept(
        listener, key, owner=os.getpid(), idle_s=600, marker=None, parent=None)), daemon=True)
    accepter.start()
    stranger = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    task = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        stranger.connect(address.address)
        stranger.settimeout(10)
        try:
            FramedSocket(stranger, "the child").send(KEY, key)
            # Hung up on: a reset if the key was still unread at the close.
            assert stranger.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            pass
        task.connect(address.address)
        FramedSocket(task, "the child").send(KEY, key)
        accepter.join(30)
        assert len(accepted) == 1 and len(calls) == 2  # the second peer, not the first
    finally:
        stranger.close()
        task.close()
        listener.close()
        for framed in accepted:
            framed.close()


def _claimed_spare(tmp_path, pid: int, started: int) -> RankChild:
    address = dataclasses.replace(ChildAddress.new(), pid=pid, started=started)
    return RankChild("torch", address, str(tmp_path / "rank.log"))


def test_killing_a_claimed_spare_never_signals_a_process_that_reused_its_pid(tmp_path,
                                                                              sleeper):
    # The spare exited; its pid now names a process that started at another time.
    started = process_start_time(sleeper.pid)
    _claimed_spare(tmp_path, sleeper.pid, started - 1).kill()
    _claimed_spare(tmp_path, sleeper.pid, 0).kill()  # an advert without a start time
    time.sleep(0.2)
    assert sleeper.poll() is None
    _claimed_spare(tmp_path, sleeper.pid, started).kill()  # still the spare: killed
    assert sleeper.wait(timeout=10) == -9


def test_an_advert_whose_pid_now_names_another_process_is_not_taken(tmp_path, executor,
                                                                     sleeper):
    address = dataclasses.replace(ChildAddress.new(), pid=sleeper.pid,
                                  started=process_start_time(sleeper.pid) - 1)
    marker = tmp_path / "local" / f"sparkdl-spare-torch-{executor.pid}-1-ab12.json"
    marker.write_text(json.dumps(dataclasses.asdict(address)))
    child = take_child("torch", _task_dir(tmp_path, "a"))
    try:
        assert child._proc is not None  # a child of its own, not the impostor pid
        assert _markers(tmp_path) == []  # the advert was consumed
    finally:
        child.kill()
    assert sleeper.poll() is None


def test_a_spares_advert_records_its_start_time(tmp_path, executor):
    keep_spare("torch")
    [marker] = _markers(tmp_path)
    advert = json.load(open(marker))
    assert advert["started"] == process_start_time(advert["pid"]) > 0


def test_a_child_whose_owner_pid_was_reused_exits(tmp_path, monkeypatch, sleeper):
    # The owner executor died and its pid went to another process (the sleeper):
    # the child was told a start time that the process now under that pid lacks.
    real = rank_child.process_start_time
    monkeypatch.setattr(rank_child, "process_start_time",
                        lambda pid: 1 if pid == sleeper.pid else real(pid))
    child = RankChild.start("torch", _task_dir(tmp_path, "a"), owner=sleeper.pid,
                            idle_s=600)
    try:
        assert child._proc.wait(timeout=90) == 0  # it left; the idle timeout is far off
    finally:
        child.kill()
    assert sleeper.poll() is None
