"""Where the Scala half of sparkdl (``sparkdl-jvm_2.13-<version>.jar``) lives.

The jar holds the Scala DSL (``import sparkdl.nn._``) and the Scala Spark ML
classes. Add it to a session with ``spark.jars``; from Python the same classes are
reachable through py4j (``spark._jvm.sparkdl.nn.Network.fromJson(text)``).

Example:
    >>> from sparkdl.jvm import jar_name
    >>> jar_name("0.1.0")
    'sparkdl-jvm_2.13-0.1.0.jar'
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from sparkdl.errors import ConfigError

SCALA_BINARY = "2.13"
_PACKAGE_DIR = Path(__file__).resolve().parent


def version() -> str:
    """sparkdl's version; the jar carries the same one."""
    try:
        return metadata.version("sparkdl")
    except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
        return "0.1.0"


def jar_name(ver: str | None = None) -> str:
    """The jar's file name for a sparkdl version (default: this one)."""
    return f"sparkdl-jvm_{SCALA_BINARY}-{ver or version()}.jar"


def jar_path() -> str:
    """Absolute path of the sparkdl JVM jar matching this Python package.

    Looks in the package (``sparkdl/jars/``, where a wheel carries it) and in the
    source tree's Maven output (``jvm/target/``).

    Raises:
        ConfigError: if the jar was not built; the message says how to build it.
    """
    name = jar_name()
    for candidate in (_PACKAGE_DIR / "jars" / name, _PACKAGE_DIR.parent / "jvm" / "target" / name):
        if candidate.is_file():
            return str(candidate)
    raise ConfigError(f"The sparkdl JVM jar {name} was not found in {_PACKAGE_DIR / 'jars'} or "
                      f"{_PACKAGE_DIR.parent / 'jvm' / 'target'}. Build it with `make jvm` "
                      "(Maven) in the sparkdl source tree.")


def with_jar(builder):
    """Add the sparkdl jar to a ``SparkSession.builder`` (before the session starts).

    Example::

        spark = with_jar(SparkSession.builder.master("local[2]")).getOrCreate()
        spark._jvm.sparkdl.nn.Network.fromJson(net.to_json())
    """
    return builder.config("spark.jars", jar_path())


_KAFKA_DIR = _PACKAGE_DIR.parent / "deploy" / "local" / "kafka" / "target" / "spark-kafka"


def kafka_jars() -> list[str]:
    """Spark's Kafka connector jars (``spark-sql-kafka-0-10`` and its clients).

    Resolved from Maven Central by ``make kafka-jars``
    (``deploy/local/kafka/pom.xml``). Put them on ``spark.jars`` to read or write
    Kafka from Spark.

    Raises:
        ConfigError: if they were not resolved; the message says how.
    """
    for folder in (_PACKAGE_DIR / "jars" / "kafka", _KAFKA_DIR):
        jars = sorted(str(p) for p in folder.glob("*.jar")) if folder.is_dir() else []
        if any("spark-sql-kafka" in j for j in jars):
            return jars
    raise ConfigError(f"Spark's Kafka connector jars are not in {_KAFKA_DIR}. Resolve them with "
                      "`make kafka-jars` (Maven) in the sparkdl source tree.")
