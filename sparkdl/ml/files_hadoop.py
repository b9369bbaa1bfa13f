"""Saved models through Hadoop's FileSystem API in the driver JVM (a classic session).

Any Spark path works (file:, hdfs:, s3a:, ...). :meth:`HadoopFiles.save_directory`
writes everything into a hidden sibling directory, which is renamed into place
once complete: a save that fails or is killed never leaves a directory that looks
complete at the path, and an overwrite that fails leaves the old one as it was. (A
process killed mid-save cannot clean up: its hidden ``.<name>._sparkdl-tmp-<uuid>``
directory stays beside the path, ignored by loads, and may be deleted.)

Example::

    HadoopFiles(spark).save_directory("/models/digits", writer.saveImpl, overwrite=True)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from py4j.protocol import Py4JJavaError

from sparkdl.errors import ConfigError
from sparkdl.ml.files import OLD_MARK, TEMP_MARK, ModelFiles, path_exists_error, quietly


def _java_message(error: Py4JJavaError) -> str:
    java = getattr(error, "java_exception", None)
    text = java.toString() if java is not None else str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


class HadoopFiles(ModelFiles):
    """:class:`~sparkdl.ml.files.ModelFiles` of a classic session: atomic saves by rename."""

    def __init__(self, spark) -> None:
        super().__init__(spark)
        self.sc = spark.sparkContext

    def _fs_path(self, path: str):
        hpath = self.sc._jvm.org.apache.hadoop.fs.Path(path)
        return hpath.getFileSystem(self.sc._jsc.hadoopConfiguration()), hpath

    def write_bytes(self, path: str, data: bytes) -> None:
        fs, hpath = self._fs_path(path)
        out = fs.create(hpath, True)
        try:
            out.write(bytearray(data))
        finally:
            out.close()

    def read_file(self, path: str) -> bytes:
        fs, hpath = self._fs_path(path)
        if not fs.isFile(hpath):
            if fs.exists(hpath):
                raise IsADirectoryError(f"{path} is a directory")
            raise FileNotFoundError(path)
        try:
            stream = fs.open(hpath)
            try:
                return bytes(stream.readAllBytes())
            finally:
                stream.close()
        except Py4JJavaError as e:
            raise OSError(_java_message(e)) from None

    def exists(self, path: str) -> bool:
        fs, hpath = self._fs_path(path)
        return bool(fs.exists(hpath))

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst``, which must not exist.

        Raises:
            OSError: if the file system refuses (Hadoop's ``rename`` reports it with a
                False result, not an exception).
        """
        fs, source = self._fs_path(src)
        if not fs.rename(source, self.sc._jvm.org.apache.hadoop.fs.Path(dst)):
            raise OSError(f"Could not rename {src} to {dst}")

    def delete(self, path: str) -> None:
        """Delete ``path`` and everything under it, if it exists."""
        fs, hpath = self._fs_path(path)
        fs.delete(hpath, True)

    def save_directory(self, path: str, write: Callable[[str], None],
                       overwrite: bool = False) -> None:
        """Save so that ``path`` holds either the old directory or the complete new one.

        ``write(temp)`` writes everything into ``.<name>._sparkdl-tmp-<uuid>`` beside
        ``path`` (hidden: Spark and Hadoop skip names starting with a dot). Then an
        old directory is moved aside, the new one renamed into place and the old
        deleted; if the rename fails, the old is moved back. Whatever fails, the
        temporary directory is removed and the error raised.

        Raises:
            OSError: if the file system refuses a rename.
        """
        fs, hpath = self._fs_path(path)
        target = hpath.makeQualified(fs.getUri(), fs.getWorkingDirectory())
        parent = target.getParent()
        if parent is None:
            raise ConfigError(f"A model cannot be saved as a file system root. Received: "
                              f"path={path!r}; give a directory below it, such as /models/m")
        if not overwrite and fs.exists(target):  # before any work
            raise path_exists_error(path)
        token = uuid.uuid4().hex
        name = target.getName()
        final = target.toString()
        temp = f"{parent.toString()}/.{name}{TEMP_MARK}{token}"
        try:
            write(temp)
            self._move_into_place(temp, final, f"{parent.toString()}/.{name}{OLD_MARK}{token}",
                                  overwrite)
        except BaseException:
            quietly(self.delete, temp)
            raise

    def _move_into_place(self, temp: str, final: str, aside: str, overwrite: bool) -> None:
        if not self.exists(final):
            self.rename(temp, final)
            return
        if not overwrite:  # created by someone else while this save was writing
            raise OSError(f"Path {final} already exists. To overwrite it, please use "
                          "write().overwrite().save(path).")
        self.rename(final, aside)
        try:
            self.rename(temp, final)
        except BaseException:
            quietly(self.rename, aside, final)
            raise
        quietly(self.delete, aside)
