"""A Scala fit's driver, as rank 0 reaches it to hand over its training state.

Under the Scala estimator the ranks meet through their JVM tasks, but the state a
restarted fit resumes from (:mod:`sparkdl.epoch_state`) and a failure in the
user's code go from the Python rank straight to the driver's rendezvous
(``sparkdl.ml.DriverRendezvous``), as under the Python estimator: the rank may
be a Horovod child process with no JVM socket of its own, and the state should
not cross the executor JVM's heap. :class:`JvmRendezvousAddress` speaks that
service's protocol (its scaladoc is the reference), so it offers the
``post_state``/``post_failure`` half of :class:`~sparkdl.rendezvous.RendezvousAddress`.

The protocol is the JVM's own, written here by hand because both ends are
sparkdl's and no library speaks it. Every connection has deadlines: the
handshake and the post's head within :data:`HANDSHAKE_S`, the state's body
within that plus its size at :data:`MIN_STATE_BYTES_PER_S`; both ends prove
they hold the fit's key (HMAC-SHA256 over the other end's random challenge, a
label per direction) before anything is posted.

Example::

    address = JvmRendezvousAddress.from_request(request["rendezvous"])
    address.post_state(3, encode_state(resume))   # True: the driver holds it
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import struct
import time
from dataclasses import dataclass

from sparkdl.errors import WorkerFailedError

GATHER, STATE, FAILURE = range(3)
#: Seconds for the handshake and a post's head (the JVM's ``HandshakeTimeoutMs``).
HANDSHAKE_S = 10.0
#: The slowest link a state may cross within its deadline (the JVM's ``MinStateBytesPerS``).
MIN_STATE_BYTES_PER_S = 8 << 20
#: The largest failure text the driver reads (the JVM's ``MaxMessageBytes``).
MAX_MESSAGE_BYTES = 1 << 20
NONCE_BYTES = 32
RANK_LABEL = b"sparkdl-rendezvous rank"
DRIVER_LABEL = b"sparkdl-rendezvous driver"
#: Connections the driver drops before its challenge (too busy) are tried again this long.
RETRY_S = HANDSHAKE_S * 3


@dataclass(frozen=True)
class JvmRendezvousAddress:
    """Where a Scala fit's driver takes rank 0's training state and a rank's failure.

    Attributes:
        host: the driver's address (``spark.driver.host``).
        port: the rendezvous port.
        key: the fit's key, which both ends prove they hold.
        max_state_bytes: the largest state the driver takes (0: it takes none).
    """

    host: str
    port: int
    key: bytes
    max_state_bytes: int

    @classmethod
    def from_request(cls, fields: dict | None) -> JvmRendezvousAddress | None:
        """The address in a JVM training request's ``rendezvous`` field (None: barrier mode).

        Example:
            >>> JvmRendezvousAddress.from_request({"host": "10.0.0.5", "port": 4100,
            ...     "key": "00ff", "max_state_bytes": 1024}).key
            b'\\x00\\xff'
        """
        if not fields:
            return None
        return cls(str(fields["host"]), int(fields["port"]), bytes.fromhex(fields["key"]),
                   int(fields["max_state_bytes"]))

    def gather(self, rank: int, message: str, attempt: int) -> list[str]:
        """Not offered: ranks of a Scala fit meet through their JVM tasks."""
        raise WorkerFailedError("Ranks of a Scala fit meet through their JVM tasks, not "
                                "through the driver's rendezvous directly.")

    def post_state(self, epoch: int, state: bytes) -> bool:
        """Hand the driver rank 0's training state after ``epoch`` epochs.

        Returns:
            Whether the driver stored it: False when it takes no states or this one
            is over its cap (:attr:`max_state_bytes`).

        Raises:
            WorkerFailedError: if the driver cannot be reached or is not this fit's.
            OSError: if the connection breaks or stalls past its deadline.
        """
        if not 0 < len(state) <= self.max_state_bytes:
            return False
        with self._connect() as sock:
            sock.sendall(struct.pack(">iiq", STATE, epoch, len(state)))
            sock.settimeout(HANDSHAKE_S + len(state) / MIN_STATE_BYTES_PER_S)
            sock.sendall(state)
            sock.settimeout(HANDSHAKE_S)
            return _read(sock, 1) == b"\x01"

    def post_failure(self, rank: int, text: str) -> None:
        """Tell the driver that ``rank`` failed in the user's own code (never retried).

        Best effort: the task fails with the same text either way.
        """
        data = text.encode("utf-8", "replace")[-MAX_MESSAGE_BYTES:]
        try:
            with self._connect() as sock:
                sock.sendall(struct.pack(">iii", FAILURE, rank, len(data)) + data)
                _read(sock, 1)
        except (WorkerFailedError, OSError):
            pass

    def _connect(self) -> socket.socket:
        """A connection on which the driver has proved it holds the key, and this rank too."""
        give_up = time.monotonic() + RETRY_S
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=HANDSHAKE_S)
            except OSError as exc:
                raise WorkerFailedError(f"Rank 0 cannot reach the driver's rendezvous at "
                                        f"{self.host}:{self.port}: {exc}") from exc
            try:
                challenge = _read(sock, NONCE_BYTES)
            except EOFError:  # dropped before the challenge: the driver is busy
                sock.close()
                if time.monotonic() > give_up:
                    raise WorkerFailedError(f"The rendezvous at {self.host}:{self.port} kept "
                                            "dropping the connection.") from None
                time.sleep(0.2)
                continue
            except BaseException:
                sock.close()
                raise
            try:
                mine = secrets.token_bytes(NONCE_BYTES)
                sock.sendall(_proof(self.key, RANK_LABEL, challenge) + mine)
                try:
                    answer = _read(sock, NONCE_BYTES)
                except EOFError:
                    raise WorkerFailedError(
                        f"The rendezvous at {self.host}:{self.port} refused this rank's key: "
                        "it is not this fit's driver.") from None
                if not hmac.compare_digest(answer, _proof(self.key, DRIVER_LABEL, mine)):
                    raise WorkerFailedError(
                        f"The rendezvous at {self.host}:{self.port} did not prove it holds this "
                        "fit's key: it is not this fit's driver. Nothing was sent to it.")
            except BaseException:
                sock.close()
                raise
            return sock


def _proof(key: bytes, label: bytes, challenge: bytes) -> bytes:
    return hmac.new(key, label + challenge, hashlib.sha256).digest()


def _read(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes, under the socket's timeout per read.

    Raises:
        EOFError: the peer closed first.
    """
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"the peer closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)
