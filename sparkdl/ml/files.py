"""Files through Hadoop's FileSystem API, so any Spark path works (file:, hdfs:, ...).

:func:`save_atomically` is how models and estimators are saved: everything is
written into a hidden sibling directory, which is renamed into place once complete.
A save that fails or is killed never leaves a directory that looks complete at the
path, and an overwrite that fails leaves the old one as it was. (A process killed
mid-save cannot clean up: its hidden ``.<name>._sparkdl-tmp-<uuid>`` directory
stays beside the path, ignored by loads, and may be deleted.)

Example::

    save_atomically(spark, "/models/digits", writer.saveImpl, overwrite=True)
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from pyspark import SparkContext
from pyspark.sql import SparkSession

from sparkdl.errors import ConfigError, PathExistsError

#: Marks the hidden sibling a save writes into (``.<name>._sparkdl-tmp-<uuid>``).
TEMP_MARK = "._sparkdl-tmp-"
#: Marks where an overwritten directory waits while its replacement moves in.
OLD_MARK = "._sparkdl-old-"

_log = logging.getLogger(__name__)


def _fs_path(sc: SparkContext, path: str):
    jvm = sc._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(sc._jsc.hadoopConfiguration()), hpath


def write_bytes(sc: SparkContext, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (overwriting)."""
    fs, hpath = _fs_path(sc, path)
    out = fs.create(hpath, True)
    try:
        out.write(bytearray(data))
    finally:
        out.close()


def read_bytes(sc: SparkContext, path: str) -> bytes:
    """Read the whole file at ``path``."""
    fs, hpath = _fs_path(sc, path)
    stream = fs.open(hpath)
    try:
        return bytes(stream.readAllBytes())
    finally:
        stream.close()


def exists(sc: SparkContext, path: str) -> bool:
    """Whether ``path`` exists."""
    fs, hpath = _fs_path(sc, path)
    return bool(fs.exists(hpath))


def is_file(sc: SparkContext, path: str) -> bool:
    """Whether ``path`` exists and is a file (not a directory)."""
    fs, hpath = _fs_path(sc, path)
    return bool(fs.isFile(hpath))


def rename(sc: SparkContext, src: str, dst: str) -> None:
    """Move ``src`` to ``dst``, which must not exist.

    Raises:
        OSError: if the file system refuses (Hadoop's ``rename`` reports it with a
            False result, not an exception).
    """
    fs, source = _fs_path(sc, src)
    if not fs.rename(source, sc._jvm.org.apache.hadoop.fs.Path(dst)):
        raise OSError(f"Could not rename {src} to {dst}")


def delete(sc: SparkContext, path: str) -> None:
    """Delete ``path`` and everything under it, if it exists."""
    fs, hpath = _fs_path(sc, path)
    fs.delete(hpath, True)


def save_atomically(spark: SparkSession, path: str, write: Callable[[str], None],
                    overwrite: bool = False) -> None:
    """Save a directory so that ``path`` holds either the old one or the complete new one.

    ``write(temp)`` writes everything into ``.<name>._sparkdl-tmp-<uuid>`` beside
    ``path`` (hidden: Spark and Hadoop skip names starting with a dot). Then an old
    directory is moved aside, the new one renamed into place and the old deleted;
    if the rename fails, the old is moved back. Whatever fails, the temporary
    directory is removed and the error raised.

    Args:
        spark: the session whose Hadoop configuration resolves ``path``.
        path: where the directory goes (any Hadoop path; relative ones resolve as
            Spark resolves them).
        write: writes the directory's content under the path it is given.
        overwrite: replace an existing ``path``; without it, an existing ``path``
            fails before anything is written.

    Raises:
        PathExistsError: when ``path`` exists and ``overwrite`` is False, with Spark
            ML writers' own words ("Path ... already exists. To overwrite it, ...").
        ConfigError: if ``path`` is a file system root.
        OSError: if the file system refuses a rename.

    Example::

        save_atomically(spark, "hdfs:///models/m", lambda tmp: write_bytes(
            spark.sparkContext, f"{tmp}/weights.safetensors", data), overwrite=True)
    """
    sc = spark.sparkContext
    fs, hpath = _fs_path(sc, path)
    target = hpath.makeQualified(fs.getUri(), fs.getWorkingDirectory())
    parent = target.getParent()
    if parent is None:
        raise ConfigError(f"A model cannot be saved as a file system root. Received: "
                          f"path={path!r}; give a directory below it, such as /models/m")
    if not overwrite and fs.exists(target):  # before any work
        raise PathExistsError(
            f"Path {path} already exists. To overwrite it, please use "
            "write.overwrite().save(path) for Scala and use write().overwrite().save(path) "
            "for Java and Python.")
    token = uuid.uuid4().hex
    name = target.getName()
    final = target.toString()
    temp = f"{parent.toString()}/.{name}{TEMP_MARK}{token}"
    try:
        write(temp)
        _move_into_place(sc, temp, final, f"{parent.toString()}/.{name}{OLD_MARK}{token}",
                         overwrite)
    except BaseException:
        _quietly(delete, sc, temp)
        raise


def _move_into_place(sc: SparkContext, temp: str, final: str, aside: str,
                     overwrite: bool) -> None:
    if not exists(sc, final):
        rename(sc, temp, final)
        return
    if not overwrite:  # created by someone else while this save was writing
        raise OSError(f"Path {final} already exists. To overwrite it, please use "
                      "write().overwrite().save(path).")
    rename(sc, final, aside)
    try:
        rename(sc, temp, final)
    except BaseException:
        _quietly(rename, sc, aside, final)
        raise
    _quietly(delete, sc, aside)


def _quietly(fn, *args) -> None:
    """Best-effort cleanup: a failure is logged, never raised over the real error."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - cleanup must not hide what went wrong
        _log.warning("sparkdl: could not %s %s: %s", fn.__name__, args[1:], e)
