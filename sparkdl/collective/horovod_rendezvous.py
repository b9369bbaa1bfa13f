"""Horovod's gloo rendezvous server, listening only where the other ranks dial.

Horovod's ``RendezvousServer`` binds every interface (``('', port)``), answers
``HEAD`` with facts about files in the process's working directory (its handler
derives from ``SimpleHTTPRequestHandler``) and reads as many bytes as a ``PUT``
declares. :func:`bound_rendezvous_server` gives the same key-value store bound to
one address (:func:`~sparkdl.collective.listen.listen_on`), refusing ``HEAD`` and
any value over :data:`MAX_VALUE_BYTES`.

Horovod is imported when a server is made, not with this module: sparkdl (and
its doctests) must import without Horovod installed.
"""

from __future__ import annotations

import functools
import socket
from typing import Any

from sparkdl.collective.listen import listen_on

#: Cap on one value a rank stores: gloo's values are a rank's addresses, a few
#: hundred bytes per peer; this leaves room for tens of thousands of ranks.
MAX_VALUE_BYTES = 16 << 20

_BAD_REQUEST, _NOT_ALLOWED, _TOO_LARGE = 400, 405, 413


def bound_rendezvous_server(host: str, verbose: int = 0) -> Any:
    """Horovod's ``RendezvousServer``, to listen on ``host``'s address only.

    Its ``start()`` binds, serves in a daemon thread and returns the port;
    ``stop()`` also closes the listening socket (Horovod's leaves it open).

    Example::

        server = bound_rendezvous_server("10.0.0.5")
        port = server.start()
        server.init(slot_infos)   # before any rank connects
        ...
        server.stop()
    """
    return _server_class()(host, verbose)


@functools.cache
def _server_class() -> type:
    from horovod.runner.http.http_server import (
        RendezvousHandler,
        RendezvousHTTPServer,
        RendezvousServer,
    )
    from horovod.runner.util.threads import in_thread

    class BoundRendezvousHandler(RendezvousHandler):
        """Horovod's handler, less the file serving and the unbounded reads."""

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            # SimpleHTTPRequestHandler's HEAD would report the executor's files.
            self.send_status_code(_NOT_ALLOWED)

        def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_VALUE_BYTES:
                # Answered before a byte of the body is read; the connection
                # closes, so the unread body is not taken for the next request.
                self.close_connection = True
                self.send_status_code(_TOO_LARGE if length > MAX_VALUE_BYTES
                                      else _BAD_REQUEST)
                return
            super().do_PUT()

    class BoundHTTPServer(RendezvousHTTPServer):
        """Horovod's HTTP server on a socket that is already bound and listening."""

        def __init__(self, sock: socket.socket, handler: type, verbose: int) -> None:
            self._bound = sock
            super().__init__(sock.getsockname(), handler, verbose)

        def server_bind(self) -> None:
            # socketserver made a socket of its own to bind: use ours instead. No
            # getfqdn() as HTTPServer.server_bind does: a reverse DNS lookup can
            # hang on a cluster without DNS.
            self.socket.close()
            self.socket = self._bound
            self.server_address = self.socket.getsockname()
            self.server_name, self.server_port = self.server_address[:2]

        def server_activate(self) -> None:
            pass  # listen_on already listens

    class BoundRendezvousServer(RendezvousServer):
        def __init__(self, host: str, verbose: int = 0) -> None:
            super().__init__(verbose)
            self._host = host

        def start(self, handler_cls: type = BoundRendezvousHandler) -> int:
            sock = listen_on(self._host)
            try:
                self._httpd = BoundHTTPServer(sock, handler_cls, self._verbose)
            except BaseException:
                sock.close()
                raise
            self._listen_thread = in_thread(target=self._httpd.serve_forever)
            return self._httpd.server_port

        @property
        def address(self) -> tuple:
            """The address the server listens on: (host, port, ...)."""
            return self._httpd.server_address

        def stop(self) -> None:
            super().stop()
            self._httpd.server_close()

    return BoundRendezvousServer
