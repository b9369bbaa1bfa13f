"""Listening sockets for rank 0's rendezvous servers, bound to one address.

``torch.distributed.TCPStore`` and Horovod's ``RendezvousServer`` bind every
interface when left to themselves, and neither authenticates its clients. Bound
to the address the other ranks dial (rank 0's executor address), they are at
least not offered on interfaces no rank uses: another network the host is on, or
loopback when the executors talk over a cluster network. SECURITY.md says what
stays exposed.
"""

from __future__ import annotations

import socket

from sparkdl.errors import ConfigError

#: Pending connections the kernel queues: one per rank is all a fit needs.
BACKLOG = 128


def listen_on(host: str, backlog: int = BACKLOG) -> socket.socket:
    """A TCP socket listening on ``host``'s address, on a port the OS picks.

    ``host`` is resolved as the other ranks resolve it; the first of its addresses
    that belongs to this machine is bound.

    Args:
        host: the name or address the other ranks use to reach this one.
        backlog: the listen queue's length.

    Raises:
        ConfigError: if no address of ``host`` belongs to this machine, so no peer
            dialing it could reach a server here.

    Example:
        >>> with listen_on("127.0.0.1") as sock:
        ...     sock.getsockname()[0]
        '127.0.0.1'
    """
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"Cannot resolve rank 0's host {host!r} to bind its rendezvous "
                          f"server: {exc}. Set SPARK_LOCAL_IP on the executors to an "
                          "address the other executors can reach.") from exc
    errors = []
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.bind(address)  # port 0, as asked of getaddrinfo: the OS picks one
            sock.listen(backlog)
            return sock
        except OSError as exc:
            sock.close()
            errors.append(f"{address[0]}: {exc.strerror or exc}")
    raise ConfigError(f"Rank 0's host {host!r} resolves to no address of this machine "
                      f"({'; '.join(errors)}), so its rendezvous server cannot listen "
                      "where the other ranks dial. Set SPARK_LOCAL_IP on the executors to "
                      "an address of their own that the other executors can reach.")
