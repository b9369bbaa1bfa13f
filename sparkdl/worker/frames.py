"""Framed messages over a stream socket: the one wire format of sparkdl's Python sockets.

A frame is ``[kind: int32][length: int64][payload]``, big-endian. The Scala
estimator's Python worker (:mod:`sparkdl.worker.jvm_worker`) speaks it with the
executor JVM, and a task speaks it with its rank child
(:mod:`sparkdl.worker.rank_child`). Each protocol gives the kinds their meaning.

Reading checks what a peer could get wrong before it costs anything: the
declared length against a cap before the payload is allocated, the kind against
the kinds expected before the payload is read, and, where the protocol says the
peer sends at once, a deadline instead of waiting for ever.

Example:
    >>> import socket
    >>> a, b = socket.socketpair()
    >>> FramedSocket(a, "the test").send(7, b"hello")
    >>> FramedSocket(b, "the test", max_bytes=16).recv(7, timeout_s=5)
    (7, b'hello')
    >>> a.close(); b.close()
"""

from __future__ import annotations

import select
import socket
import struct
import time

from sparkdl.errors import SparkDLError

HEADER = struct.Struct(">iq")

#: Longest silence, once a frame has begun, before the sender counts as stalled.
STALL_S = 60.0

# Small frames leave in one send: header and payload in one segment.
_COALESCE = 64 * 1024


class FrameError(SparkDLError, ConnectionError):
    """A peer broke the frame protocol: a frame over the cap, an unexpected kind, a
    connection closed mid-frame, or a frame that did not arrive by its deadline."""


class PeerClosed(FrameError):
    """The peer closed the connection between frames (an orderly end, for some protocols)."""


class FramedSocket:
    """Frames over a connected stream socket.

    Args:
        sock: a connected stream socket, in blocking mode or with a timeout.
        peer: who is on the other end, as error messages name it ("the JVM task").
        max_bytes: the largest payload accepted; a longer declared length fails
            the read before anything is allocated.
        stall_s: once a frame has begun, the longest wait for its next bytes;
            ``None`` for a sender that may legitimately pause mid-frame.

    Example:
        >>> import socket
        >>> a, b = socket.socketpair()
        >>> FramedSocket(a, "a peer").send(1, b"x" * 64)
        >>> FramedSocket(b, "a peer", max_bytes=16).recv()
        Traceback (most recent call last):
        ...
        sparkdl.worker.frames.FrameError: a peer sent a 64-byte frame (kind 1) over the 16-byte cap.
        >>> a.close(); b.close()
    """

    def __init__(self, sock: socket.socket, peer: str, max_bytes: int = (1 << 31) - 1,
                 stall_s: float | None = STALL_S) -> None:
        self.sock = sock
        self.peer = peer
        self.max_bytes = max_bytes
        self.stall_s = stall_s
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)

    def send(self, kind: int, payload=b"") -> None:
        """Send one frame; ``payload`` is any bytes-like object."""
        header = HEADER.pack(kind, len(payload))
        if len(payload) <= _COALESCE:
            self.sock.sendall(b"".join((header, payload)))
        else:  # no copy of a large payload just to prepend 12 bytes
            self.sock.sendall(header)
            self.sock.sendall(payload)

    def recv(self, *expected: int, timeout_s: float | None = None,
             max_bytes: int | None = None, as_bytes: bool = True) -> tuple[int, bytes]:
        """The next frame as ``(kind, payload)``.

        Args:
            *expected: the kinds allowed here (none given: any kind).
            timeout_s: the whole frame must arrive within this many seconds
                (``None``: wait for it to begin as long as it takes).
            max_bytes: a tighter cap than the socket's for this frame.
            as_bytes: ``False`` lets the payload come back as the ``bytearray`` it
                was read into; converting it to ``bytes`` copies it, doubling the
                peak memory of a large frame. For callers that take any bytes-like
                object (not safetensors' ``load``, which wants ``bytes``).

        Raises:
            PeerClosed: the peer closed the connection before the frame began.
            FrameError: a broken frame or a missed deadline.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        kind, length = HEADER.unpack(self._read(HEADER.size, deadline, begun=False))
        cap = self.max_bytes if max_bytes is None else min(max_bytes, self.max_bytes)
        if not 0 <= length <= cap:
            raise FrameError(f"{self.peer} sent a {length}-byte frame (kind {kind}) "
                             f"over the {cap}-byte cap.")
        if expected and kind not in expected:
            raise FrameError(f"Protocol error: expected frame kind {expected} from "
                             f"{self.peer}, received {kind}")
        payload = self._read(length, deadline, begun=True)
        if as_bytes and isinstance(payload, bytearray):
            payload = bytes(payload)
        return kind, payload

    def _read(self, n: int, deadline: float | None, begun: bool) -> bytes | bytearray:
        if deadline is None and self.stall_s is None:
            return self._read_untimed(n, begun)
        # Timed, the socket is read in parts as they come, into one buffer of the
        # full length; :meth:`recv` decides whether it becomes ``bytes``.
        buffer = bytearray(n)
        view = memoryview(buffer)
        got = 0
        while got < n:
            wait = self._wait_s(deadline, begun or got > 0)
            if wait is not None and not self._poll.poll(max(0.0, wait) * 1000):
                part = "payload" if begun else "header"
                raise FrameError(f"{self.peer} sent no whole frame in time ({got} of {n} "
                                 f"{part} bytes arrived).")
            received = self.sock.recv_into(view[got:])
            if not received:
                raise self._closed(begun or got > 0)
            got += received
        return buffer

    def _read_untimed(self, n: int, begun: bool) -> bytes:
        # Nothing to time: the kernel fills one bytes object of the full length,
        # so a large payload is not copied again (the JVM's Arrow batches).
        chunks, got = [], 0
        while got < n:
            chunk = self.sock.recv(n - got, socket.MSG_WAITALL)
            if not chunk:
                raise self._closed(begun or got > 0)
            chunks.append(chunk)
            got += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _closed(self, begun: bool) -> FrameError:
        if begun:
            return FrameError(f"{self.peer} closed the connection mid-frame.")
        return PeerClosed(f"{self.peer} closed the connection.")

    def _wait_s(self, deadline: float | None, begun: bool) -> float | None:
        """How long the next read may wait: the frame's deadline, and the stall
        limit once the frame has begun; ``None`` for no limit."""
        waits = []
        if deadline is not None:
            waits.append(deadline - time.monotonic())
        if begun and self.stall_s is not None:
            waits.append(self.stall_s)
        return min(waits) if waits else None

    def close(self) -> None:
        """Close the socket (the peer sees the connection end)."""
        self.sock.close()
