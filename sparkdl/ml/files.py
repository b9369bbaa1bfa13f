"""Byte files through Hadoop's FileSystem API, so any Spark path works (file:, hdfs:, ...)."""

from __future__ import annotations

from pyspark import SparkContext


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
