"""The frame format both Python socket protocols speak, and what a bad peer gets."""

from __future__ import annotations

import socket
import struct
import threading
import time
import tracemalloc

import pytest

from sparkdl.worker.frames import FramedSocket, FrameError, PeerClosed


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_the_wire_format_is_the_jvms(pair):
    # PythonWorker.scala: out.writeInt(kind); out.writeLong(length); out.write(payload)
    a, b = pair
    a.sendall(struct.pack(">i", 2) + struct.pack(">q", 3) + b"abc")
    assert FramedSocket(b, "peer").recv() == (2, b"abc")
    FramedSocket(a, "peer").send(6, b"xy")
    assert b.recv(64) == b"\x00\x00\x00\x06" + b"\x00" * 7 + b"\x02xy"


@pytest.mark.parametrize("stall_s", [60.0, None], ids=["timed", "untimed"])
def test_small_large_and_empty_frames_round_trip(pair, stall_s):
    a, b = pair
    large = bytes(range(256)) * 4096  # 1 MiB: sent as header, then payload
    sender = threading.Thread(target=lambda: [FramedSocket(a, "peer").send(k, p)
                                              for k, p in ((1, b"x"), (2, large), (3, b""))])
    sender.start()
    reader = FramedSocket(b, "peer", stall_s=stall_s)
    assert reader.recv(1) == (1, b"x")
    kind, payload = reader.recv(2, timeout_s=30)
    assert (kind, payload) == (2, large) and type(payload) is bytes
    assert reader.recv(3) == (3, b"")
    sender.join()


def test_a_large_timed_frame_can_be_kept_as_read_without_a_copy(pair):
    a, b = pair
    large = bytes(range(256)) * (32 << 10)  # 8 MiB
    sender = threading.Thread(target=FramedSocket(a, "peer").send, args=(1, large))
    tracemalloc.start()
    try:
        sender.start()
        _, payload = FramedSocket(b, "peer").recv(1, timeout_s=30, as_bytes=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        sender.join()
    assert isinstance(payload, bytearray) and payload == large
    assert peak < 1.5 * len(large)  # one buffer, not that and a bytes copy


def test_a_length_over_the_cap_fails_before_anything_is_allocated(pair):
    a, b = pair
    a.sendall(struct.pack(">iq", 1, 1 << 40))
    tracemalloc.start()
    try:
        with pytest.raises(FrameError, match=r"peer sent a 1099511627776-byte frame \(kind 1\) "
                                             r"over the 1024-byte cap"):
            FramedSocket(b, "peer", max_bytes=1024).recv()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_negative_length_and_a_tighter_per_frame_cap_are_refused(pair):
    a, b = pair
    a.sendall(struct.pack(">iq", 1, -5) + struct.pack(">iq", 1, 100))
    with pytest.raises(FrameError, match="-5-byte frame"):
        FramedSocket(b, "peer").recv()
    with pytest.raises(FrameError, match="over the 10-byte cap"):
        FramedSocket(b, "peer").recv(max_bytes=10)


def test_an_unexpected_kind_is_a_protocol_error(pair):
    a, b = pair
    FramedSocket(a, "peer").send(4, b"hi")
    with pytest.raises(FrameError, match=r"Protocol error: expected frame kind \(1, 2\)"):
        FramedSocket(b, "peer").recv(1, 2)


@pytest.mark.parametrize("stall_s", [60.0, None], ids=["timed", "untimed"])
def test_a_close_between_frames_is_peer_closed_and_mid_frame_is_an_error(pair, stall_s):
    a, b = pair
    FramedSocket(a, "the task").send(1, b"done")
    a.close()
    reader = FramedSocket(b, "the task", stall_s=stall_s)
    assert reader.recv() == (1, b"done")
    with pytest.raises(PeerClosed, match="the task closed the connection."):
        reader.recv()
    c, d = socket.socketpair()
    try:
        c.sendall(struct.pack(">iq", 1, 10) + b"abc")
        c.close()
        with pytest.raises(FrameError, match="closed the connection mid-frame") as info:
            FramedSocket(d, "peer", stall_s=stall_s).recv()
        assert not isinstance(info.value, PeerClosed)
    finally:
        d.close()


def test_a_frame_that_does_not_come_in_time_fails(pair):
    a, b = pair
    began = time.monotonic()
    with pytest.raises(FrameError, match=r"sent no whole frame in time \(0 of 12 header"):
        FramedSocket(b, "peer").recv(timeout_s=0.3)
    assert time.monotonic() - began < 5


def test_a_sender_stalled_mid_frame_fails_after_the_stall_limit(pair):
    a, b = pair
    a.sendall(struct.pack(">iq", 1, 10) + b"abc")
    with pytest.raises(FrameError, match=r"\(3 of 10 payload bytes arrived\)"):
        FramedSocket(b, "peer", stall_s=0.3).recv()


def test_without_a_deadline_a_slow_frame_is_waited_for(pair):
    a, b = pair

    def slowly():
        a.sendall(struct.pack(">iq", 1, 4) + b"ab")
        time.sleep(0.5)
        a.sendall(b"cd")
    sender = threading.Thread(target=slowly)
    sender.start()
    assert FramedSocket(b, "peer", stall_s=None).recv() == (1, b"abcd")
    sender.join()
