"""Driver side: turn a user's directory URL into a :class:`StorageLocation` that
workers can write to, failing before any job when they could not."""

from __future__ import annotations

import os
import urllib.parse

from sparkdl.errors import ConfigError
from sparkdl.storage.base import StorageLocation

SUPPORTED = "a local path, file:, hdfs:// or webhdfs://"


def resolve_location(spark, url: str, param: str) -> StorageLocation:
    """Where workers write ``url``, with HDFS reached through WebHDFS.

    ``hdfs://`` paths use the NameNode HTTP address from the Hadoop configuration
    Spark has (``dfs.namenode.http-address``, as in ``hdfs-site.xml`` or
    ``spark.hadoop.dfs.namenode.http-address``); ``webhdfs://host:port/path``
    names it directly. A Spark Connect client sees only the ``spark.hadoop.*``
    confs of the application, not the server's ``hdfs-site.xml``.

    Args:
        spark: the active SparkSession.
        url: the directory.
        param: the Param it came from, for messages.

    Raises:
        ConfigError: for a scheme workers cannot write, or a Kerberos-secured HDFS.

    Example::

        resolve_location(spark, "hdfs://nn:8020/runs/a", "checkpointDir")
        # StorageLocation(kind='webhdfs', root='/runs/a', http='http://nn:9870', ...)
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        return StorageLocation("local", os.path.abspath(parts.path or url), url)
    if scheme not in ("hdfs", "webhdfs"):
        raise ConfigError(f"{param}={url!r}: workers write to {SUPPORTED}; "
                          f"{scheme}:// is not supported. Use one of those.")
    from sparkdl.session import facts_for

    facts = facts_for(spark)
    conf = facts.hadoop_conf
    if (conf("hadoop.security.authentication") or "simple").lower() != "simple":
        raise ConfigError(f"{param}={url!r}: this HDFS uses Kerberos, which the workers' "
                          "WebHDFS client does not support. Use a local path.")
    if not parts.hostname:
        default = urllib.parse.urlsplit(conf("fs.defaultFS") or "")
        if default.scheme != "hdfs" or not default.hostname:
            raise ConfigError(f"{param}={url!r} names no NameNode and fs.defaultFS is not "
                              "hdfs://. Write the full hdfs://host:port/path.")
        parts = default._replace(path=parts.path)
    user = facts.hadoop_user()
    root = parts.path or "/"
    if scheme == "webhdfs":
        return StorageLocation("webhdfs", root, url, f"http://{parts.netloc}", user)
    http = (conf(f"dfs.namenode.http-address.{parts.hostname}")
            or conf("dfs.namenode.http-address") or "0.0.0.0:9870")
    host, _, port = http.rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = parts.hostname  # bound to every interface: the NameNode's own host
    return StorageLocation("webhdfs", root, url, f"http://{host}:{port}", user)
