"""Where workers write run outputs (checkpoints, training logs): one interface,
one module per kind of file system.

The driver resolves a user's path (``/tmp/run``, ``file:/tmp/run``,
``hdfs://nn:8020/runs/a``, ``webhdfs://nn:9870/runs/a``) into a picklable
:class:`~sparkdl.storage.base.StorageLocation` with
:func:`sparkdl.storage.resolve.resolve_location`; workers open it with
:func:`open_storage` and write files under it with the same relative layout on
every file system; the driver reads them back with the same client. A local path
is the executor's own disk: on a cluster of several hosts, use a shared mount or HDFS.

Example:
    >>> import tempfile
    >>> from sparkdl.storage.base import StorageLocation
    >>> with tempfile.TemporaryDirectory() as d:
    ...     store = open_storage(StorageLocation("local", d))
    ...     store.write("epoch-0001/state.json", b"{}")
    ...     sorted(store.list(""))
    ['epoch-0001']
"""

from __future__ import annotations

from sparkdl.storage.base import Storage, StorageLocation


def open_storage(location: StorageLocation) -> Storage:
    """The client for ``location``'s kind of file system."""
    if location.kind == "local":
        from sparkdl.storage.local import LocalStorage

        return LocalStorage(location)
    if location.kind == "webhdfs":
        from sparkdl.storage.webhdfs import WebHdfsStorage

        return WebHdfsStorage(location)
    raise ValueError(f"Unknown storage kind {location.kind!r}")


__all__ = ["Storage", "StorageLocation", "open_storage"]
