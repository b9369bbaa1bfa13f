"""The interface: how models and estimators reach their files, for either session kind.

A classic session goes through Hadoop's FileSystem in the driver JVM (py4j,
:mod:`sparkdl.ml.files_hadoop`); a Spark Connect client has neither, and goes
through Connect's own file APIs (:mod:`sparkdl.ml.files_connect`). Both write the
same files, so either loads what the other saved, and the Scala classes too.

Example::

    files = files_for(spark)
    files.save_directory("/models/m", lambda tmp: files.write_bytes(f"{tmp}/w", b"..."),
                         overwrite=True)
    files.read_file("/models/m/w")
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable

from sparkdl.errors import PathExistsError

#: Marks the hidden sibling a save writes into (``.<name>._sparkdl-tmp-<uuid>``).
TEMP_MARK = "._sparkdl-tmp-"
#: Marks where an overwritten directory waits while its replacement moves in.
OLD_MARK = "._sparkdl-old-"

_log = logging.getLogger(__name__)


class ModelFiles(ABC):
    """The files of saved models, through one SparkSession."""

    def __init__(self, spark) -> None:
        self.spark = spark

    @abstractmethod
    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` to the file ``path`` (overwriting)."""

    @abstractmethod
    def read_file(self, path: str) -> bytes:
        """The whole file at ``path``.

        Raises:
            FileNotFoundError: nothing is at ``path``.
            IsADirectoryError: ``path`` is a directory.
            OSError: the file system could not read it (the message says why).
        """

    @abstractmethod
    def exists(self, path: str) -> bool:
        """Whether ``path`` exists (a file or a directory)."""

    def read_metadata_line(self, path: str) -> str | None:
        """The first line of Spark ML's ``metadata/`` directory ``path`` (None: empty),
        read as pyspark's ``DefaultParamsReader`` reads it (the session's text source).

        Raises:
            PySparkException, Py4JJavaError, OSError: it cannot be read.
        """
        row = self.spark.read.text(path).first()
        return None if row is None else row[0]

    @abstractmethod
    def delete(self, path: str) -> None:
        """Delete ``path`` and everything under it, if it exists."""

    def save_in_place(self, path: str, write: Callable[[str], None], overwrite: bool) -> None:
        """Save into ``path`` itself, for file systems without a rename: an old
        directory is deleted first (``overwrite``), the new one written (metadata last),
        and a failed write's directory removed."""
        if self.exists(path):  # before any work
            if not overwrite:
                raise path_exists_error(path)
            self.delete(path)
        try:
            write(path)
        except BaseException:
            quietly(self.delete, path)
            raise

    def save_metadata(self, instance, path: str, extra: dict) -> None:
        """Write Spark ML's ``metadata/`` of ``instance`` under ``path`` (pyspark's
        ``DefaultParamsWriter``: a one-line JSON text file, through the session)."""
        from pyspark.ml.util import DefaultParamsWriter

        DefaultParamsWriter.saveMetadata(instance, path, self.spark, extraMetadata=extra)

    @abstractmethod
    def save_directory(self, path: str, write: Callable[[str], None],
                       overwrite: bool = False) -> None:
        """Save a directory whose content ``write(where)`` writes.

        Args:
            path: where the directory goes.
            write: writes the directory's content under the path it is given (data
                files first, the metadata last: a directory without its metadata is
                an incomplete save, whichever the implementation).
            overwrite: replace an existing ``path``; without it, an existing ``path``
                fails before anything is written.

        Raises:
            PathExistsError: ``path`` exists and ``overwrite`` is False.
            ConfigError: ``path`` cannot hold a saved model (a file system root, or a
                path this session cannot write).
        """


def path_exists_error(path: str) -> PathExistsError:
    """Spark ML writers' own words for a save onto an existing path."""
    return PathExistsError(
        f"Path {path} already exists. To overwrite it, please use "
        "write.overwrite().save(path) for Scala and use write().overwrite().save(path) "
        "for Java and Python.")


def quietly(fn, *args) -> None:
    """Best-effort cleanup: a failure is logged, never raised over the real error."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - cleanup must not hide what went wrong
        _log.warning("sparkdl: could not %s %s: %s", fn.__name__, args, e)


def files_for(spark) -> ModelFiles:
    """The :class:`ModelFiles` of ``spark``: Hadoop's FileSystem, or Connect's file APIs.

    Example::

        files_for(SparkSession.builder.remote("sc://127.0.0.1:15002").getOrCreate())
        # ConnectFiles: copyFromLocalToFs to write, the binaryFile source to read
    """
    from sparkdl.session import is_connect

    if is_connect(spark):
        from sparkdl.ml.files_connect import ConnectFiles

        return ConnectFiles(spark)
    from sparkdl.ml.files_hadoop import HadoopFiles

    return HadoopFiles(spark)


def read_user_file(path: str, what: str, param: str) -> bytes:
    """The bytes of a file a user names (a TorchScript archive, a weights file).

    A local path (``/m/model.pt``, ``file:/m/model.pt``) is read from the driver's
    disk, without Spark; any other URI (``hdfs://``, ``s3a://``, ...) through the
    active SparkSession's file system (:func:`files_for`).

    Args:
        path: where the file is.
        what: what the file should be, for messages ("a TorchScript file").
        param: the argument ``path`` was given as, for messages.

    Raises:
        ModelNotFoundError: no file is at ``path``.
        ConfigError: ``path`` is not a string, is a directory, cannot be read, or
            needs a SparkSession and none is active.

    Example:
        >>> read_user_file("/no/such/model.pt", "a TorchScript file", "path")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sparkdl.errors.ModelNotFoundError: No file at /no/such/model.pt: path must name a ...
    """
    import os
    from urllib.parse import urlparse

    from sparkdl.errors import ConfigError, ModelNotFoundError

    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"{param} must be a path (a string). "
                          f"Received: {param}={type(path).__name__}")
    path = os.fspath(path)
    scheme = urlparse(path).scheme
    try:
        if scheme in ("", "file") or len(scheme) == 1:  # a Windows drive letter is local
            local = urlparse(path).path if scheme == "file" else path
            with open(local, "rb") as f:
                return f.read()
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is None:
            raise ConfigError(f"Reading {param}={path!r} needs an active SparkSession (for "
                              "its Hadoop file system). Start one, or copy the file to "
                              "local disk.")
        return files_for(spark).read_file(path)
    except FileNotFoundError:
        raise ModelNotFoundError(f"No file at {path}: {param} must name {what}.") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory: {param} must name {what}.") from None
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({param}): {e}") from None
