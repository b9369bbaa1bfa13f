"""Storage on the executor's own file system (``/path`` and ``file:`` URLs)."""

from __future__ import annotations

import contextlib
import os

from sparkdl.storage.base import Storage


class LocalStorage(Storage):
    """Plain files; each write lands under a temporary name, is flushed to disk and
    renamed into place, so a reader never sees half a checkpoint file, even after
    a power loss (a checkpoint's ``state.json``, written last, marks it complete)."""

    def _path(self, relpath: str) -> str:
        return os.path.join(self.location.root, relpath)

    def write(self, relpath: str, data: bytes) -> None:
        path = self._path(relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise
        # The rename itself is durable once the directory is.
        directory = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def read(self, relpath: str) -> bytes:
        with open(self._path(relpath), "rb") as f:
            return f.read()

    def list(self, relpath: str) -> list[str]:
        try:
            return sorted(os.listdir(self._path(relpath)))
        except FileNotFoundError:
            return []
