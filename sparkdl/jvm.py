"""Where the Scala half of sparkdl (``sparkdl-jvm_2.13-<version>.jar``) lives.

The jar holds the Scala DSL (``import sparkdl.nn._``) and the Scala Spark ML
classes. Add it to a session with ``spark.jars``; from Python the same classes are
reachable through py4j (``spark._jvm.sparkdl.nn.Network.fromJson(text)``).

Jars are looked up in the installed package first (``sparkdl/jars/``, where a wheel
carries them), then, as a development fallback, where a source checkout builds them;
:func:`_source_checkout_dir` is the only code that knows the source tree's layout.

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
_INSTALLED_DIRS = {"sparkdl": _PACKAGE_DIR / "jars", "kafka": _PACKAGE_DIR / "jars" / "kafka"}


def _source_checkout_dir(kind: str) -> Path:
    """Development fallback: where a source checkout's build leaves the jars of ``kind``.

    The one place that names the source tree's layout (``make jvm`` builds into
    ``jvm/target``, ``make kafka-jars`` resolves into ``deploy/local/kafka/target``),
    so packaging the jars into ``sparkdl/jars/`` replaces only this function.

    Args:
        kind: ``"sparkdl"`` (the sparkdl JVM jar) or ``"kafka"`` (Spark's Kafka connector).
    """
    root = _PACKAGE_DIR.parent
    return {"sparkdl": root / "jvm" / "target",
            "kafka": root / "deploy" / "local" / "kafka" / "target" / "spark-kafka"}[kind]


def _search_dirs(kind: str) -> tuple[Path, Path]:
    """The folders to look in for jars of ``kind``, installed package first."""
    return _INSTALLED_DIRS[kind], _source_checkout_dir(kind)


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

    Raises:
        ConfigError: if the jar was not built; the message says how to build it.
    """
    name = jar_name()
    folders = _search_dirs("sparkdl")
    for folder in folders:
        if (folder / name).is_file():
            return str(folder / name)
    raise ConfigError(f"The sparkdl JVM jar {name} was not found in "
                      f"{' or '.join(map(str, folders))}. Build it with `make jvm` (Maven) "
                      "in the sparkdl source tree.")


def with_jar(builder):
    """Add the sparkdl jar to a ``SparkSession.builder`` (before the session starts).

    Example::

        spark = with_jar(SparkSession.builder.master("local[2]")).getOrCreate()
        spark._jvm.sparkdl.nn.Network.fromJson(net.to_json())
    """
    return builder.config("spark.jars", jar_path())


def kafka_jars() -> list[str]:
    """Spark's Kafka connector jars (``spark-sql-kafka-0-10`` and its clients).

    Put them on ``spark.jars`` to read or write Kafka from Spark. In a source
    checkout ``make kafka-jars`` resolves them from Maven Central.

    Raises:
        ConfigError: if they were not resolved; the message says how.
    """
    folders = _search_dirs("kafka")
    for folder in folders:
        jars = sorted(str(p) for p in folder.glob("*.jar")) if folder.is_dir() else []
        if any("spark-sql-kafka" in j for j in jars):
            return jars
    raise ConfigError("Spark's Kafka connector jars are not in "
                      f"{' or '.join(map(str, folders))}. Resolve them with `make kafka-jars` "
                      "(Maven) in the sparkdl source tree.")
