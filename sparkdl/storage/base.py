"""The storage interface workers write through, and the location they are given."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class StorageLocation:
    """A directory that workers write into, resolved on the driver.

    Attributes:
        kind: ``"local"`` (a path on the executor's file system) or ``"webhdfs"``.
        root: the directory: a local path, or an absolute path inside HDFS.
        url: the path as the user gave it, for messages and for the driver.
        http: for ``webhdfs``: the NameNode's HTTP address, ``http://host:port``.
        user: for ``webhdfs``: the Hadoop user files are created as (the driver's).
    """

    kind: str
    root: str
    url: str = ""
    http: str = ""
    user: str = ""


class Storage(ABC):
    """Files under one :class:`StorageLocation`, addressed by relative paths."""

    def __init__(self, location: StorageLocation) -> None:
        self.location = location

    @abstractmethod
    def write(self, relpath: str, data: bytes) -> None:
        """Create or overwrite ``relpath`` (parents are created) with ``data``."""

    @abstractmethod
    def read(self, relpath: str) -> bytes:
        """The whole content of ``relpath``."""

    @abstractmethod
    def list(self, relpath: str) -> list[str]:
        """Names directly under the directory ``relpath`` ('' for the root); [] if absent."""
