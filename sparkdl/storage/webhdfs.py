"""Storage in HDFS through WebHDFS, the NameNode's REST API (plain HTTP, no JVM).

Workers run in Python processes without Hadoop's client libraries, so they talk
to HDFS as WebHDFS clients: ``CREATE`` is answered by the NameNode with a
redirect to a DataNode, which receives the bytes. Authentication is Hadoop's
"simple" mode (``user.name``); a Kerberos-secured cluster is refused on the driver
(:mod:`sparkdl.storage.resolve`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import posixpath
import time
import urllib.parse
import uuid

from sparkdl.errors import SparkDLError
from sparkdl.storage.base import Storage

TIMEOUT_S = 60.0
#: Tries of each step of a write (connection errors and 5xx replies are retried).
RETRIES = 4


class WebHdfsError(SparkDLError, OSError):
    """WebHDFS answered with an error (the NameNode's RemoteException text)."""


class WebHdfsStorage(Storage):
    """Files under an HDFS directory, through WebHDFS.

    Example::

        store = WebHdfsStorage(StorageLocation("webhdfs", "/runs/a", http="http://nn:9870",
                                               user="etl"))
        store.write("epoch-0001/state.json", b"{}")
    """

    def _url(self, relpath: str, op: str, **params: str) -> str:
        path = posixpath.join(self.location.root, relpath) if relpath else self.location.root
        query = urllib.parse.urlencode({"op": op, "user.name": self.location.user, **params})
        return f"{self.location.http}/webhdfs/v1{urllib.parse.quote(path)}?{query}"

    def _request(self, method: str, url: str, body: bytes | None = None,
                 expect: tuple[int, ...] = (200,)) -> tuple[int, bytes, str]:
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if response.status not in expect:
                raise WebHdfsError(f"WebHDFS {method} {_without_user(url)} failed with HTTP "
                                   f"{response.status}: {_remote_message(data)}")
            return response.status, data, response.getheader("Location") or ""
        finally:
            conn.close()

    def write(self, relpath: str, data: bytes) -> None:
        """Upload under a temporary name, then RENAME it into place, so a reader never
        sees half a file; each step is retried on connection errors and 5xx replies."""
        tmp = f"{relpath}.{uuid.uuid4().hex[:12]}.tmp"

        def upload() -> None:
            # CREATE makes missing parents; the NameNode redirects to a DataNode.
            _, _, target = self._request("PUT", self._url(tmp, "CREATE", overwrite="true"),
                                         expect=(307,))
            self._request("PUT", target, body=data, expect=(201,))

        def rename() -> None:
            destination = posixpath.join(self.location.root, relpath)
            if self._length(tmp) is None:
                # A retry after a RENAME whose reply was lost: it happened if the
                # destination now holds these bytes.
                if self._length(relpath) == len(data):
                    return
                raise WebHdfsError(f"WebHDFS lost {tmp} before renaming it to {destination}")
            # RENAME does not replace an existing file (it answers false): delete first.
            self._request("DELETE", self._url(relpath, "DELETE"), expect=(200,))
            _, reply, _ = self._request("PUT", self._url(tmp, "RENAME",
                                                         destination=destination))
            if not json.loads(reply).get("boolean"):
                raise WebHdfsError(f"WebHDFS RENAME of {tmp} to {destination} was refused")

        try:
            _with_retries(upload)
            _with_retries(rename)
        except BaseException:
            with contextlib.suppress(OSError, http.client.HTTPException):
                self._request("DELETE", self._url(tmp, "DELETE"), expect=(200,))
            raise

    def _length(self, relpath: str) -> int | None:
        """The size of the file ``relpath``, or None if it does not exist."""
        status, data, _ = self._request("GET", self._url(relpath, "GETFILESTATUS"),
                                        expect=(200, 404))
        return None if status == 404 else int(json.loads(data)["FileStatus"]["length"])

    def read(self, relpath: str) -> bytes:
        _, _, target = self._request("GET", self._url(relpath, "OPEN"), expect=(307,))
        return self._request("GET", target)[1]

    def list(self, relpath: str) -> list[str]:
        status, data, _ = self._request("GET", self._url(relpath, "LISTSTATUS"),
                                        expect=(200, 404))
        if status == 404:
            return []
        return sorted(f["pathSuffix"] for f in json.loads(data)["FileStatuses"]["FileStatus"])


def _with_retries(step, attempts: int = RETRIES) -> None:
    for attempt in range(attempts):
        try:
            step()
            return
        except (OSError, http.client.HTTPException) as exc:
            transient = not isinstance(exc, WebHdfsError) or " HTTP 5" in str(exc)
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(0.5 * 2 ** attempt)


def _without_user(url: str) -> str:
    return url.split("?")[0]


def _remote_message(body: bytes) -> str:
    try:
        error = json.loads(body)["RemoteException"]
        return f"{error.get('exception')}: {error.get('message')}"
    except (ValueError, KeyError, TypeError):
        return body[:500].decode(errors="replace")
