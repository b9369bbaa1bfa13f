"""The JVM side of sparkdl: its jar, and Spark's Kafka connector by Maven coordinates.

The jar (``sparkdl-jvm_2.13-<version>.jar``) holds the Scala DSL (``import
sparkdl.nn._``) and the Scala Spark ML classes. Add it to a session with
``spark.jars`` (:func:`with_jar`); from Python the same classes are reachable through
py4j (``spark._jvm.sparkdl.nn.Network.fromJson(text)``).

The jar is looked up in the installed package first (``sparkdl/jars/``, where the wheel
carries it), then, as a development fallback, where a source checkout builds it;
:func:`_source_checkout_dir` is the only code that knows the source tree's layout.

Spark's Kafka connector is not bundled: Spark resolves it from its Maven coordinates
(:func:`kafka_packages`, ``spark.jars.packages``, ``spark-submit --packages``), from
Maven's local repository first and then Maven Central (:func:`with_kafka`).

From a shell, for ``spark-submit``::

    spark-submit --jars "$(python -m sparkdl.jvm jar)" \\
                 --packages "$(python -m sparkdl.jvm kafka-packages)" \\
                 --exclude-packages "$(python -m sparkdl.jvm kafka-excludes)" app.py

Example:
    >>> from sparkdl.jvm import jar_name, kafka_packages
    >>> jar_name("0.1.0")
    'sparkdl-jvm_2.13-0.1.0.jar'
    >>> kafka_packages()
    ['org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0']
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path
from xml.sax.saxutils import quoteattr

from sparkdl.errors import ConfigError

SCALA_BINARY = "2.13"
# pyspark 4.3.0's own connector (4.3.0) is not on Maven Central; 4.2.0, the newest there,
# runs on Spark 4.3.0 (the DataSource V2 API it uses is unchanged). Its dependency
# spark-token-provider-kafka 4.2.0 is on Central too. deploy/local/kafka/pom.xml
# (`make kafka-jars`) puts this version into ~/.m2; keep the two in step.
KAFKA_CONNECTOR_VERSION = "4.2.0"
# The connector's transitive dependencies that every Spark already ships in its jars/
# (Hadoop's shaded client, compression codecs, SLF4J, JSR-305, Scala's parallel
# collections). Excluding them keeps Spark's own copies in charge and spares each
# executor a ~60 MB download of duplicate jars.
KAFKA_PROVIDED_BY_SPARK = (
    "org.apache.hadoop:hadoop-client-runtime",
    "org.apache.hadoop:hadoop-client-api",
    "at.yawk.lz4:lz4-java",
    "org.lz4:lz4-java",
    "org.xerial.snappy:snappy-java",
    "com.github.luben:zstd-jni",
    "org.slf4j:slf4j-api",
    "com.google.code.findbugs:jsr305",
    f"org.scala-lang.modules:scala-parallel-collections_{SCALA_BINARY}",
)
_PACKAGE_DIR = Path(__file__).resolve().parent
_INSTALLED_DIR = _PACKAGE_DIR / "jars"


def _source_checkout_dir() -> Path:
    """Development fallback: where a source checkout's ``make jvm`` leaves the jar.

    The one place that names the source tree's layout (``jvm/target``); a wheel carries
    the jar in ``sparkdl/jars/`` instead (``setup.py`` puts it there).
    """
    return _PACKAGE_DIR.parent / "jvm" / "target"


def _search_dirs() -> tuple[Path, Path]:
    """The folders to look in for the sparkdl jar, installed package first."""
    return _INSTALLED_DIR, _source_checkout_dir()


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
    folders = _search_dirs()
    for folder in folders:
        if (folder / name).is_file():
            return str(folder / name)
    raise ConfigError(f"The sparkdl JVM jar {name} was not found in "
                      f"{' or '.join(map(str, folders))}. Install sparkdl from its wheel "
                      "(`make dist` builds dist/sparkdl-*.whl, which carries the jar), or "
                      "build the jar with `make jvm` (Maven) in the sparkdl source tree.")


def with_jar(builder):
    """Add the sparkdl jar to a ``SparkSession.builder`` (before the session starts).

    With :func:`with_kafka` too, call :func:`ship_package_jars` after the session
    starts.

    Example::

        spark = with_jar(SparkSession.builder.master("local[2]")).getOrCreate()
        spark._jvm.sparkdl.nn.Network.fromJson(net.to_json())
    """
    return builder.config("spark.jars", jar_path())


def kafka_packages() -> list[str]:
    """Maven coordinates of Spark's Kafka connector, for ``spark.jars.packages``.

    Spark's own resolution (Ivy) fetches the connector and its dependencies: from Maven's
    local repository (``~/.m2/repository``) when they are there, else Maven Central. The
    same coordinates go to ``spark-submit --packages``.

    Example:
        >>> kafka_packages()
        ['org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0']
    """
    return [f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{KAFKA_CONNECTOR_VERSION}"]


def _local_m2(m2_repository: str | os.PathLike | None) -> Path:
    return Path(m2_repository or Path.home() / ".m2" / "repository").expanduser().resolve()


def _offline_ivy_settings(m2: Path, ivy_dir: Path) -> Path:
    """An Ivy settings file whose only resolver is Maven's local repository ``m2``.

    Spark's default chain also asks Maven Central and spark-packages, even for what
    ``~/.m2`` holds (it looks there for jars of parent POMs); with this file nothing
    leaves the machine. Written under ``ivy_dir`` (rewritten only when it changes).
    """
    text = ("<ivysettings>\n"
            '  <settings defaultResolver="local-m2"/>\n'
            "  <resolvers>\n"
            '    <ibiblio name="local-m2" m2compatible="true" usepoms="true"\n'
            f"             root={quoteattr(m2.as_uri())}/>\n"
            "  </resolvers>\n"
            "</ivysettings>\n")
    path = ivy_dir / "ivysettings-local-m2.xml"
    if not path.is_file() or path.read_text() != text:
        ivy_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: concurrent sessions never read half a file
    return path


def kafka_conf(*, offline: bool = False, m2_repository: str | os.PathLike | None = None,
               ivy_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Spark settings that put the Kafka connector on a session's classpath.

    ``spark.jars.packages`` (:func:`kafka_packages`) and ``spark.jars.excludes`` (the
    dependencies every Spark already ships, :data:`KAFKA_PROVIDED_BY_SPARK`); with
    ``offline=True`` also an Ivy settings file that resolves from Maven's local
    repository alone.

    Args:
        offline: resolve only from ``m2_repository``, never the network (air-gapped
            clusters, tests). It must hold the connector: ``make kafka-jars`` puts it
            there, as does ``mvn dependency:get -Dartifact=<kafka_packages()[0]>``.
        m2_repository: Maven's local repository (default ``~/.m2/repository``).
        ivy_dir: Spark's Ivy directory (``spark.jars.ivy``: its cache and the resolved
            jars). Default: Spark's own (``~/.ivy2.5.2``), or
            ``~/.cache/sparkdl/ivy`` when ``offline``.

    Returns:
        Settings for ``SparkSession.builder.config`` or ``spark-submit --conf``.

    Raises:
        ConfigError: if ``offline`` and the connector is not in ``m2_repository``.

    Example:
        >>> sorted(kafka_conf())
        ['spark.jars.excludes', 'spark.jars.packages']
    """
    conf = {"spark.jars.packages": ",".join(kafka_packages()),
            "spark.jars.excludes": ",".join(KAFKA_PROVIDED_BY_SPARK)}
    if ivy_dir is not None:
        conf["spark.jars.ivy"] = str(Path(ivy_dir).expanduser().resolve())
    if offline:
        m2 = _local_m2(m2_repository)
        pom = (m2 / "org" / "apache" / "spark" / f"spark-sql-kafka-0-10_{SCALA_BINARY}"
               / KAFKA_CONNECTOR_VERSION
               / f"spark-sql-kafka-0-10_{SCALA_BINARY}-{KAFKA_CONNECTOR_VERSION}.pom")
        if not pom.is_file():
            raise ConfigError(
                f"Spark's Kafka connector {kafka_packages()[0]} is not in the local Maven "
                f"repository {m2}, so offline resolution cannot find it. Put it there with "
                "`make kafka-jars` in the sparkdl source tree (or `mvn dependency:get "
                f"-Dartifact={kafka_packages()[0]}`), or use offline=False to let Spark "
                "fetch it from Maven Central.")
        ivy = Path(conf.get("spark.jars.ivy")
                   or Path.home() / ".cache" / "sparkdl" / "ivy").expanduser().resolve()
        conf["spark.jars.ivy"] = str(ivy)
        conf["spark.jars.ivySettings"] = str(_offline_ivy_settings(m2, ivy))
    return conf


def with_kafka(builder, *, offline: bool = False,
               m2_repository: str | os.PathLike | None = None,
               ivy_dir: str | os.PathLike | None = None):
    """Add Spark's Kafka connector to a ``SparkSession.builder`` (before it starts).

    Sets the :func:`kafka_conf` settings; Spark resolves the connector when the session
    starts. They replace any ``spark.jars.packages`` set before: to add packages of
    your own, join them with :func:`kafka_packages` yourself. Combined with
    :func:`with_jar` (``spark.jars``) on a cluster, call :func:`ship_package_jars` once
    the session has started (a pyspark quirk, explained there).

    Args:
        builder: a ``SparkSession.builder``.
        offline: resolve from Maven's local repository alone (see :func:`kafka_conf`).
        m2_repository: Maven's local repository (default ``~/.m2/repository``).
        ivy_dir: Spark's Ivy directory (``spark.jars.ivy``).

    Returns:
        The builder, for chaining.

    Raises:
        ConfigError: if ``offline`` and the connector is not in the local repository.

    Example::

        from pyspark.sql import SparkSession
        from sparkdl.jvm import with_jar, with_kafka

        spark = with_kafka(SparkSession.builder.master("local[2]")).getOrCreate()
        df = (spark.read.format("kafka").option("kafka.bootstrap.servers", "host:9092")
              .option("subscribe", "events").load())
    """
    for key, value in kafka_conf(offline=offline, m2_repository=m2_repository,
                                 ivy_dir=ivy_dir).items():
        builder = builder.config(key, value)
    return builder


def ship_package_jars(spark) -> list[str]:
    """Make executors load the jars Spark resolved from ``spark.jars.packages``.

    With both ``spark.jars`` and ``spark.jars.packages`` set on a
    ``SparkSession.builder`` (say :func:`with_jar` and :func:`with_kafka` together),
    pyspark starts the SparkContext with the builder's ``spark.jars`` in place of the
    list spark-submit merged with the resolved packages: the driver has the packages'
    classes, the executors of a cluster do not (``ClassNotFoundException`` in tasks).
    This adds the missing jars (``SparkContext.addJar``); tasks started afterwards load
    them. Idempotent; nothing to do for ``spark-submit --jars ... --packages ...``.

    Args:
        spark: an active ``SparkSession``.

    Returns:
        The jars it added (empty when the executors had them all).

    Example::

        builder = with_kafka(with_jar(SparkSession.builder.master("spark://host:7077")))
        spark = builder.getOrCreate()
        ship_package_jars(spark)
    """
    sc = spark.sparkContext
    merged = sc._jvm.System.getProperty("spark.jars") or ""  # what spark-submit resolved
    shipped = {url.rsplit("/", 1)[-1] for url in sc._jsc.sc().listJars().mkString("\n").split()}
    added = []
    for jar in filter(None, merged.split(",")):
        if jar.rsplit("/", 1)[-1] not in shipped:
            sc._jsc.sc().addJar(jar)
            added.append(jar)
    return added


def _main(argv: list[str]) -> int:
    """``python -m sparkdl.jvm jar|kafka-packages|kafka-excludes``: values for spark-submit."""
    commands = {"jar": jar_path,
                "kafka-packages": lambda: ",".join(kafka_packages()),
                "kafka-excludes": lambda: ",".join(KAFKA_PROVIDED_BY_SPARK)}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: python -m sparkdl.jvm {{{'|'.join(commands)}}}", file=sys.stderr)
        return 2
    try:
        print(commands[argv[0]]())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
