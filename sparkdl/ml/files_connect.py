"""Saved models through Spark Connect's file APIs (a ``sc://`` session: no py4j).

Spark's own Python ML stages do the same over Connect (``pyspark.ml.connect``):
files are written with ``SparkSession.copyFromLocalToFs`` (streamed to the server
as artifacts, then copied onto its default file system), read back with the
``binaryFile`` source, and the metadata goes through a DataFrame writer, as in a
classic session. An overwrite deletes the old directory first with the helper
Spark's Pipeline writer uses over Connect (``handleOverwrite``).

Connect has no rename, so a save cannot appear at once as a classic one does:
the data files are written into the path, then the metadata last. A save that
fails or is killed leaves a directory without metadata, which loads refuse as an
incomplete save, and the failed save removes it when it can.

Paths take no scheme (``copyFromLocalToFs`` writes on the server's default file
system: ``/models/m``, not ``hdfs://nn/models/m``). A server whose default file
system is its local disk writes there only with
``spark.sql.artifact.copyFromLocalToFs.allowDestLocal=true``.

Example::

    ConnectFiles(spark).read_file("/models/m/weights.safetensors")
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Callable
from urllib.parse import urlparse

from pyspark.errors import AnalysisException, PySparkException

from sparkdl.errors import ConfigError
from sparkdl.ml.files import ModelFiles

#: The server conf that lets ``copyFromLocalToFs`` write to the server's local disk.
ALLOW_LOCAL = "spark.sql.artifact.copyFromLocalToFs.allowDestLocal"
_NOT_FOUND = "PATH_NOT_FOUND"


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _same_file(listed: str, path: str) -> bool:
    """Whether the ``binaryFile`` row ``listed`` (qualified) is the file ``path`` names."""
    want = posixpath.normpath(urlparse(path).path or path)
    got = posixpath.normpath(urlparse(listed).path)
    return got == want or got.endswith("/" + want.lstrip("/")) and not want.startswith("/")


class ConnectFiles(ModelFiles):
    """:class:`~sparkdl.ml.files.ModelFiles` of a Spark Connect session."""

    def _binary(self, path: str):
        return self.spark.read.format("binaryFile").load(path)

    def write_bytes(self, path: str, data: bytes) -> None:
        handle, local = tempfile.mkstemp(prefix="sparkdl-upload-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            self.spark.copyFromLocalToFs(local, path)
        except PySparkException as e:
            if ALLOW_LOCAL in str(e) or "allowDestLocal" in str(e):
                raise ConfigError(
                    f"The Spark Connect server refuses to write {path} to its local disk "
                    f"(copyFromLocalToFs). Save to its distributed file system (HDFS, a "
                    f"cloud store set as fs.defaultFS), or start the server with "
                    f"--conf {ALLOW_LOCAL}=true (a test server only: it lets clients "
                    f"write any file the server can).") from None
            raise OSError(f"Could not write {path} over Spark Connect: "
                          f"{_first_line(e)}") from None
        finally:
            os.unlink(local)

    def read_file(self, path: str) -> bytes:
        try:
            listed = self._binary(path).select("path").collect()
        except AnalysisException as e:
            if e.getCondition() == _NOT_FOUND:
                raise FileNotFoundError(path) from None
            raise OSError(_first_line(e)) from None
        if len(listed) != 1 or not _same_file(listed[0].path, path):
            raise IsADirectoryError(f"{path} is a directory")
        try:
            return bytes(self._binary(path).select("content").first().content)
        except PySparkException as e:
            raise OSError(_first_line(e)) from None

    def exists(self, path: str) -> bool:
        try:
            self._binary(path).select("path").limit(1).collect()
        except AnalysisException as e:
            if e.getCondition() == _NOT_FOUND:
                return False
            raise
        return True

    def delete(self, path: str) -> None:
        """Delete ``path`` and everything under it, on the server (Spark ML's Connect
        helper, which refuses a file system root or the working directory)."""
        import pyspark.sql.connect.proto as pb2
        from pyspark.ml.connect.serialize import serialize
        from pyspark.ml.util import ML_CONNECT_HELPER_ID

        command = pb2.Command()
        command.ml_command.fetch.CopyFrom(pb2.Fetch(
            obj_ref=pb2.ObjectRef(id=ML_CONNECT_HELPER_ID),
            methods=[pb2.Fetch.Method(method="handleOverwrite",
                                      args=serialize(self.spark.client, path, True))]))
        self.spark.client.execute_command(command)

    def save_directory(self, path: str, write: Callable[[str], None],
                       overwrite: bool = False) -> None:
        """Save into ``path`` itself: the old directory deleted first, the new one's
        metadata written last (see the module's docstring)."""
        scheme = urlparse(path).scheme
        if scheme:
            raise ConfigError(
                f"Over Spark Connect a model is saved with copyFromLocalToFs, which takes a "
                f"path on the server's default file system, without a scheme. Received: "
                f"path={path!r}; give {urlparse(path).path!r} (resolved on fs.defaultFS), "
                f"or save from a classic session.")
        if posixpath.normpath(path) in ("/", "."):
            raise ConfigError(f"A model cannot be saved as a file system root. Received: "
                              f"path={path!r}; give a directory below it, such as /models/m")
        self.save_in_place(path, write, overwrite)
