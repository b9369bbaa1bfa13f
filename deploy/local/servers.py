"""Local servers for development and tests: Kafka, HDFS, Spark standalone, YARN, Connect.

* :class:`KafkaBroker`: Apache Kafka in KRaft mode (broker and controller in one
  process), from the jars ``deploy/local/kafka/pom.xml`` resolves from Maven Central.
* :class:`MiniHDFS`: one NameNode and one DataNode (Hadoop's MiniDFSCluster), with
  WebHDFS, from the jars ``deploy/local/hdfs/pom.xml`` resolves.
* :class:`StandaloneCluster`: a Spark standalone Master and Workers, each its own
  daemon JVM, from the Spark that pyspark ships (nothing to resolve).
* :class:`ConnectServer`: a Spark Connect server (``sc://``) whose application runs on
  ``local-cluster``, from the Spark that pyspark ships.
* :class:`MiniYARN`: a YARN ResourceManager and NodeManager, each its own daemon JVM,
  on a :class:`MiniHDFS`, from the same Hadoop jars.

All listen on ports the OS picks and keep their data in a temporary directory removed
on stop; Kafka and HDFS resolve their jars with Maven on first use.

Run one by hand (Ctrl-C stops it)::

    .venv/bin/python deploy/local/servers.py kafka
    # -> kafka ready: bootstrap 127.0.0.1:40123 (logs in /tmp/sparkdl-kafka-.../broker.log)
    .venv/bin/python deploy/local/servers.py hdfs
    # -> hdfs ready: hdfs://localhost:36753, WebHDFS http://localhost:34497
    .venv/bin/python deploy/local/servers.py standalone
    # -> standalone ready: spark://127.0.0.1:38211 (2 workers, web UI http://127.0.0.1:41719)
    .venv/bin/python deploy/local/servers.py yarn
    # -> yarn ready: ResourceManager 127.0.0.1:40231 (web UI http://127.0.0.1:45163), ...
    #      export HADOOP_CONF_DIR=/tmp/sparkdl-yarn-.../conf
    .venv/bin/python deploy/local/servers.py connect
    # -> connect ready: sc://127.0.0.1:41877 (executors on .../.venv/bin/python; logs in ...)

or from Python::

    with KafkaBroker() as kafka, MiniHDFS() as hdfs, StandaloneCluster() as spark:
        kafka.create_topic("events", partitions=3)
        print(kafka.bootstrap, hdfs.uri, spark.master_url)

This file is a script beside its poms, not part of the ``sparkdl`` package. It is
imported one way, the way ``kafka_stream_demo.py`` beside it does: with this directory
on ``sys.path``, as the top-level module ``servers`` (so a process loads it once). The
pytest fixtures (``tests/integration/conftest.py``) and the benchmarks
(``bench/_common.py``) do exactly this::

    sys.path.append(str(repo_root / "deploy" / "local"))
    import servers
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_jars(server: str, marker: str) -> Path:
    """``deploy/local/<server>/target``, resolved by Maven once (then cached there).

    ``marker`` is a jar path below target/ whose presence means it is done.
    """
    target = HERE / server / "target"
    if not (target / marker).exists():
        subprocess.run(["mvn", "-q", "-B", "-f", str(HERE / server / "pom.xml"), "package"],
                       check=True)
    return target


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else "java"


class _JavaServer:
    """A server JVM with its own work directory and log, stopped with its process group.

    Subclasses build the command line and say when the server is ready.
    """

    name = ""

    def __init__(self, workdir: str | None, heap: str, log_name: str) -> None:
        self._own_dir = workdir is None
        slug = "-".join(self.name.lower().split())  # "Spark Connect": no space in paths
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"sparkdl-{slug}-"))
        self.heap = heap
        self.log_path = self.workdir / log_name
        self._proc: subprocess.Popen | None = None

    def _launch(self, command: list[str], timeout_s: float, ready) -> None:
        """Start ``command`` in workdir, logging to ``log_path``; wait until ``ready()``.

        Raises:
            RuntimeError: if the process exits or is not ready within ``timeout_s``
                (with the tail of its log).
        """
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(command, cwd=self.workdir, stdout=log, stderr=log,
                                          start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self._proc.returncode}:\n"
                                   f"{self._log_tail()}")
            if ready():
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {timeout_s:g} s:\n"
                           f"{self._log_tail()}")

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and delete its temporary directory."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start(self, timeout_s: float):
        raise NotImplementedError

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class KafkaBroker(_JavaServer):
    """A single-node Kafka broker and controller (KRaft) on 127.0.0.1.

    Args:
        workdir: where its config, data and log go; a fresh temporary directory
            (deleted on stop) when ``None``.
        heap: the broker JVM's ``-Xmx``.
    """

    name = "Kafka"

    def __init__(self, workdir: str | None = None, heap: str = "512m") -> None:
        super().__init__(workdir, heap, "broker.log")
        self.port = free_port()
        self.controller_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._classpath = ""  # the broker's jars, known once start() resolved them

    def _config(self) -> Path:
        data = self.workdir / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
                         f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
        }
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def start(self, timeout_s: float = 120.0) -> KafkaBroker:
        """Format the storage, start the broker, and wait until it accepts clients.

        Raises:
            RuntimeError: if the broker exits or is not ready within ``timeout_s``
                (with the tail of its log).
        """
        classpath = f"{resolve_jars('kafka', 'broker/kafka-tools-4.1.1.jar') / 'broker'}/*"
        self._classpath = classpath
        config = self._config()
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        java = [_java(), f"-Xmx{self.heap}", "-cp", classpath]
        with open(self.log_path, "ab") as log:
            # "--cluster-id=": a base64 id may begin with "-", which "-t <id>" takes for a flag
            subprocess.run([*java, "kafka.tools.StorageTool", "format",
                            f"--cluster-id={cluster_id}", "-c", str(config)],
                           check=True, stdout=log, stderr=log)
        self._launch([*java, "kafka.Kafka", str(config)], timeout_s, self._ready)
        return self

    def create_topic(self, name: str, partitions: int = 1, timeout_s: float = 60.0) -> None:
        """Create topic ``name`` with ``partitions`` partitions (replication factor 1).

        Runs Kafka's own ``kafka-topics`` tool (``TopicCommand``, a client of the Admin
        API) from the broker's jars, so Kafka's client speaks the protocol.

        Raises:
            RuntimeError: if the broker is not started, or the tool fails (e.g. the
                topic exists) or does not finish within ``timeout_s``; with its output.
        """
        if not self._classpath:
            raise RuntimeError(f"start the broker before creating topic {name!r}")
        # A short-lived client JVM: a small heap and the C1 compiler start it fastest.
        command = [_java(), "-Xmx128m", "-XX:TieredStopAtLevel=1", "-cp", self._classpath,
                   "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", self.bootstrap,
                   "--create", "--topic", name, "--partitions", str(partitions),
                   "--replication-factor", "1"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            output = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part
                             for part in (e.stdout, e.stderr) if part)
            raise RuntimeError(f"kafka-topics did not create topic {name!r} within "
                               f"{timeout_s:g} s:\n{output}") from None
        if done.returncode != 0:
            raise RuntimeError(f"kafka-topics could not create topic {name!r} (exit code "
                               f"{done.returncode}):\n{done.stdout}{done.stderr}")

    def _ready(self) -> bool:
        # A broker answers on its port only once it has joined the KRaft quorum and
        # registered; the API versions request is the cheapest real Kafka round trip.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                # ApiVersions v0: size, api_key=18, version=0, correlation_id=1, client_id=""
                s.sendall(bytes.fromhex("0000000a" "0012" "0000" "00000001" "0000"))
                s.settimeout(2)
                return len(s.recv(4)) == 4
        except OSError:
            return False


class MiniHDFS(_JavaServer):
    """A one-NameNode, one-DataNode HDFS on this machine, WebHDFS enabled.

    Args:
        workdir: where its data, config and log go; a fresh temporary directory
            (deleted on stop) when ``None``.
        heap: the JVM's ``-Xmx``.

    Attributes:
        uri: ``hdfs://localhost:<port>``, the file system's root for Spark paths.
        webhdfs: ``http://localhost:<port>``, the NameNode's HTTP (WebHDFS) address.
    """

    name = "HDFS"

    def __init__(self, workdir: str | None = None, heap: str = "768m") -> None:
        super().__init__(workdir, heap, "hdfs.log")
        self.uri = self.webhdfs = ""

    def start(self, timeout_s: float = 180.0) -> MiniHDFS:
        """Format and start the cluster; wait until the NameNode has written its address.

        Raises:
            RuntimeError: if it exits or is not up within ``timeout_s`` (with its log).
        """
        import json
        import re

        jars = resolve_jars("hdfs", "server/hadoop-client-minicluster-3.5.0.jar") / "server"
        details, conf = self.workdir / "details.json", self.workdir / "conf.xml"

        def ready() -> bool:
            if not (details.exists() and conf.exists()):
                return False
            try:
                port = json.loads(details.read_text())["namenode_port"]
                http = re.search(r"<name>dfs.namenode.http-address</name><value>([^<]+)<",
                                 conf.read_text())
            except (ValueError, KeyError):
                return False  # still being written
            if http:
                self.uri = f"hdfs://localhost:{port}"
                self.webhdfs = f"http://{http.group(1)}"
            return bool(http)

        # MiniDFSCluster keeps its blocks under ./build/test/data, and _launch runs in workdir.
        self._launch([_java(), f"-Xmx{self.heap}", "-cp", f"{jars}/*",
                      "org.apache.hadoop.mapreduce.MiniHadoopClusterManager", "-nomr", "-format",
                      "-nnport", "0", "-nnhttpport", "0", "-writeConfig", str(conf),
                      "-writeDetails", str(details)], timeout_s, ready)
        return self


class ConnectServer(_JavaServer):
    """A Spark Connect server on 127.0.0.1 (``SparkConnectServer``, started by
    ``spark-submit`` from the Spark inside pyspark) whose application runs on
    ``master`` with sparkdl's jar, executors on ``python``.

    Clients reach it as ``sc://127.0.0.1:<port>`` (:attr:`url`). It is a development
    server: gRPC without TLS or authentication, bound to 127.0.0.1 only, and
    ``copyFromLocalToFs`` may write to its local disk
    (``spark.sql.artifact.copyFromLocalToFs.allowDestLocal``), which is how models
    are saved over Connect when the default file system is the local one.

    Args:
        workdir: where its log goes; a fresh temporary directory (deleted on stop)
            when ``None``.
        master: the application's master (``local-cluster[2,1,1024]``: two executor JVMs).
        python: the executors' Python (``spark.pyspark.python``).
        jars: jars for the application (sparkdl's, ``jvm/target/sparkdl-jvm_*.jar``).
        heap: the server (driver) JVM's ``--driver-memory``.
        confs: more ``--conf`` settings of the application.

    Attributes:
        port: the gRPC port. url: ``sc://127.0.0.1:<port>``.

    Example::

        with ConnectServer(python=".venv/bin/python") as server:
            spark = SparkSession.builder.remote(server.url).getOrCreate()
    """

    name = "Spark Connect"

    def __init__(self, workdir: str | None = None, master: str = "local-cluster[2,1,1024]",
                 python: str | None = None, jars: list[str] | None = None,
                 heap: str = "1g", confs: dict[str, str] | None = None) -> None:
        import sys

        super().__init__(workdir, heap, "connect.log")
        self.master, self.jars = master, list(jars or [])
        self.confs = {"spark.sql.artifact.copyFromLocalToFs.allowDestLocal": "true",
                      **(confs or {})}
        self.python = python or sys.executable
        self.port = free_port()
        self.url = f"sc://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> ConnectServer:
        """Start the server; wait until it logs that it listens.

        Raises:
            RuntimeError: if it exits or is not ready within ``timeout_s`` (with the
                tail of its log).
        """
        home = StandaloneCluster.spark_home()
        command = [str(home / "bin" / "spark-submit"), "--class",
                   "org.apache.spark.sql.connect.service.SparkConnectServer",
                   "--master", self.master, "--driver-memory", self.heap,
                   "--conf", f"spark.connect.grpc.binding.port={self.port}",
                   "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
                   "--conf", f"spark.pyspark.python={self.python}",
                   "--conf", "spark.ui.enabled=false"]
        for key, value in self.confs.items():
            command += ["--conf", f"{key}={value}"]
        if self.jars:
            command += ["--jars", ",".join(self.jars)]
        self.workdir.mkdir(parents=True, exist_ok=True)
        # spark-submit reads PYSPARK_PYTHON for the server's own Python workers;
        # SPARK_HOME so that it does not ask whichever python3 is on PATH for it.
        env = ["env", f"PYSPARK_PYTHON={self.python}", f"SPARK_HOME={home}"]
        self._launch([*env, *command, "spark-internal"], timeout_s, self._ready)
        return self

    def _ready(self) -> bool:
        try:
            return "Spark Connect server started at" in self.log_path.read_text(
                errors="replace")
        except OSError:
            return False


class StandaloneCluster:
    """A Spark standalone cluster on 127.0.0.1: a Master and ``workers`` Workers, each a
    daemon JVM of its own started with ``spark-class`` as Spark's ``sbin`` scripts do.

    Submit to :attr:`master_url` (``spark-submit --master spark://127.0.0.1:<port>``)
    or build a SparkSession on it. Executors run on this machine, so the project's
    ``.venv`` Python serves them (``spark.pyspark.python``). It is a development
    cluster: it binds 127.0.0.1 and enables no authentication (``spark.authenticate``),
    so any local user can submit to it while it runs.

    Args:
        workdir: where the daemons' logs and the workers' application directories go;
            a fresh temporary directory (deleted on stop) when ``None``.
        workers: how many Worker daemons.
        cores: ``--cores`` of each Worker (task slots it offers).
        memory: ``--memory`` of each Worker (what its executors may take in all).
        heap: each daemon JVM's own heap (``SPARK_DAEMON_MEMORY``).

    Attributes:
        master_url: ``spark://127.0.0.1:<port>``.
        web_ui: ``http://127.0.0.1:<port>``, the Master's web UI (``/json/`` for status).

    Example::

        with StandaloneCluster(workers=2) as cluster:
            subprocess.run([".venv/bin/spark-submit", "--master", cluster.master_url,
                            "--conf", "spark.pyspark.python=.venv/bin/python",
                            "python/train_digits.py"], check=True)
    """

    name = "Spark standalone"

    def __init__(self, workdir: str | None = None, workers: int = 2, cores: int = 1,
                 memory: str = "1g", heap: str = "512m") -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sparkdl-standalone-"))
        self.workers, self.cores, self.memory, self.heap = workers, cores, memory, heap
        self.port, self.web_port = free_port(), free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self.web_ui = f"http://127.0.0.1:{self.web_port}"
        self._daemons: list[_JavaServer] = []

    @staticmethod
    def spark_home() -> Path:
        """``SPARK_HOME``, else the Spark inside the installed pyspark."""
        if os.environ.get("SPARK_HOME"):
            return Path(os.environ["SPARK_HOME"])
        import pyspark

        return Path(pyspark.__file__).resolve().parent

    def _daemon(self, name: str, args: list[str], timeout_s: float, ready) -> None:
        daemon = _JavaServer(str(self.workdir / name), self.heap, f"{name}.log")
        daemon.name = f"Spark {name}"
        daemon.workdir.mkdir(parents=True, exist_ok=True)
        self._daemons.append(daemon)
        home = self.spark_home()
        # SPARK_HOME: spark-class would otherwise ask whichever python3 is on PATH where
        # pyspark lives. SPARK_LOCAL_IP: the daemons and their executors bind 127.0.0.1.
        # `env` sets them for this daemon only (it execs spark-class, which execs java).
        # SPARK_MASTER_OPTS: no REST submission server (a fixed port, 6066, and no
        # authentication); spark-submit talks to the Master's RPC port.
        settings = [f"SPARK_HOME={home}", "SPARK_LOCAL_IP=127.0.0.1",
                    f"SPARK_DAEMON_MEMORY={self.heap}",
                    "SPARK_MASTER_OPTS=-Dspark.master.rest.enabled=false"]
        daemon._launch(["env", *settings, str(home / "bin" / "spark-class"), *args],
                       timeout_s, ready)

    def status(self) -> dict:
        """The Master's ``/json/`` status (workers, their state, cores, applications)."""
        import json
        import urllib.request

        with urllib.request.urlopen(f"{self.web_ui}/json/", timeout=2) as reply:
            return json.loads(reply.read())

    def alive_workers(self) -> int:
        """Workers registered with the Master and ALIVE (0 while it does not answer)."""
        try:
            return sum(w.get("state") == "ALIVE" for w in self.status().get("workers", []))
        except (OSError, ValueError):
            return 0

    def start(self, timeout_s: float = 120.0) -> StandaloneCluster:
        """Start the Master, then the Workers; wait until every Worker is ALIVE.

        Raises:
            RuntimeError: if a daemon exits, or the cluster is not up within
                ``timeout_s`` (with the tail of the daemon's log).
        """
        deadline = time.monotonic() + timeout_s
        try:
            self._daemon("master", ["org.apache.spark.deploy.master.Master", "--host",
                                    "127.0.0.1", "--port", str(self.port), "--webui-port",
                                    str(self.web_port)], timeout_s, self._master_ready)
            for i in range(self.workers):
                work = self.workdir / f"worker-{i}" / "work"
                work.mkdir(parents=True, exist_ok=True)
                self._daemon(f"worker-{i}", [
                    "org.apache.spark.deploy.worker.Worker", self.master_url, "--host",
                    "127.0.0.1", "--cores", str(self.cores), "--memory", self.memory,
                    "--webui-port", str(free_port()), "--work-dir", str(work)],
                    max(1.0, deadline - time.monotonic()), lambda: True)
            while self.alive_workers() < self.workers:
                for daemon in self._daemons:
                    if daemon._proc is None or daemon._proc.poll() is not None:
                        raise RuntimeError(f"{daemon.name} exited:\n{daemon._log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.alive_workers()} of {self.workers} Spark workers registered "
                        f"with {self.master_url} within {timeout_s:g} s:\n"
                        f"{self._daemons[-1]._log_tail()}")
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        return self

    def _master_ready(self) -> bool:
        try:
            return self.status().get("status") == "ALIVE"
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        """Stop the Workers (their executors with them), then the Master; delete the
        temporary directory."""
        for daemon in reversed(self._daemons):
            daemon.stop()  # SIGTERM to its process group, then SIGKILL after 20 s
        self._daemons = []
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()



def _xml_config(path: Path, props: dict[str, object]) -> None:
    """Write a Hadoop ``*-site.xml`` holding ``props``."""
    from xml.sax.saxutils import escape

    body = "".join(f"  <property><name>{escape(k)}</name><value>{escape(str(v))}</value>"
                   "</property>\n" for k, v in props.items())
    path.write_text(f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n')


class MiniYARN:
    """A Hadoop YARN cluster on 127.0.0.1: a ResourceManager and one NodeManager, each a
    daemon JVM of its own (the main classes ``yarn resourcemanager`` and ``yarn
    nodemanager`` run), from the Hadoop 3.5.0 jars ``deploy/local/hdfs/pom.xml`` resolves.

    Its default file system is ``hdfs`` (a started :class:`MiniHDFS`), where Spark stages
    applications and containers read their files. Point ``spark-submit --master yarn`` at
    it with ``HADOOP_CONF_DIR=<conf_dir>`` (:meth:`env`). The NodeManager's containers are
    real processes started by its ``DefaultContainerExecutor``, with a system ``PATH``
    and no Python of the project's: ship one (``--archives env.tar#environment``).

    It is a development cluster: simple authentication (any local user may submit, as
    anyone), no TLS, 127.0.0.1 only, and the capacity scheduler with a single ``default``
    queue. Container logs stay in the NodeManager's log directory
    (:meth:`container_logs`), not aggregated.

    Args:
        hdfs: the started :class:`MiniHDFS` YARN uses as its default file system.
        workdir: where the config, NodeManager's local and log directories and the
            daemons' logs go; a fresh temporary directory (deleted on stop) when ``None``.
        memory_mb: memory the NodeManager offers containers (an application master and
            two 1 GiB executors take ~4.2 GiB with Spark's overheads).
        vcores: virtual cores it offers (accounting only: the scheduler counts them).
        heap: each daemon JVM's own ``-Xmx``.

    Attributes:
        conf_dir: ``HADOOP_CONF_DIR`` / ``YARN_CONF_DIR`` for clients (core-site.xml,
            hdfs-site.xml, yarn-site.xml, capacity-scheduler.xml, log4j.properties).
        rm_address: ``127.0.0.1:<port>``, the ResourceManager's client RPC address.
        web_ui: ``http://127.0.0.1:<port>``, the ResourceManager's web UI and REST API.
        log_dirs: the NodeManager's container log directory
            (``<app id>/<container id>/{stdout,stderr,...}``).

    Example::

        with MiniHDFS() as hdfs, MiniYARN(hdfs) as yarn:
            subprocess.run([".venv/bin/spark-submit", "--master", "yarn",
                            "--deploy-mode", "cluster", ...], env=yarn.env(), check=True)
    """

    name = "YARN"
    #: A system PATH for the NodeManager and so its containers (YARN passes PATH on), so
    #: nothing finds the project's .venv there.
    SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    def __init__(self, hdfs: MiniHDFS, workdir: str | None = None, memory_mb: int = 6144,
                 vcores: int = 4, heap: str = "512m") -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sparkdl-yarn-"))
        self.hdfs, self.memory_mb, self.vcores, self.heap = hdfs, memory_mb, vcores, heap
        self.conf_dir = self.workdir / "conf"
        self.local_dirs = self.workdir / "nm-local"
        self.log_dirs = self.workdir / "nm-logs"
        self.rm_address = f"127.0.0.1:{free_port()}"
        self.web_ui = f"http://127.0.0.1:{free_port()}"
        self.nm_address = f"127.0.0.1:{free_port()}"
        self._daemons: list[_JavaServer] = []
        self._classpath = ""

    @staticmethod
    def java_home() -> str:
        """``JAVA_HOME``, else the JDK of the ``java`` on PATH (containers need it)."""
        if os.environ.get("JAVA_HOME"):
            return os.environ["JAVA_HOME"]
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("YARN needs Java: set JAVA_HOME or put java on PATH")
        return str(Path(java).resolve().parent.parent)

    def _configure(self) -> None:
        if not self.hdfs.uri:
            raise RuntimeError("start the MiniHDFS before MiniYARN (its default file system)")
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for d in (self.local_dirs, self.log_dirs):
            d.mkdir(parents=True, exist_ok=True)
        _xml_config(self.conf_dir / "core-site.xml", {"fs.defaultFS": self.hdfs.uri})
        _xml_config(self.conf_dir / "hdfs-site.xml", {
            # sparkdl's workers reach hdfs:// checkpoints through WebHDFS at this address
            "dfs.namenode.http-address": self.hdfs.webhdfs.removeprefix("http://"),
            "dfs.replication": 1,  # one DataNode: clients must not ask for 3 replicas
        })
        rm = "yarn.resourcemanager."
        nm = "yarn.nodemanager."
        _xml_config(self.conf_dir / "yarn-site.xml", {
            # every RPC and HTTP endpoint on 127.0.0.1, on ports chosen here (a port 0
            # would leave clients without the address)
            f"{rm}hostname": "127.0.0.1",
            f"{rm}address": self.rm_address,
            f"{rm}scheduler.address": f"127.0.0.1:{free_port()}",
            f"{rm}resource-tracker.address": f"127.0.0.1:{free_port()}",
            f"{rm}admin.address": f"127.0.0.1:{free_port()}",
            f"{rm}webapp.address": self.web_ui.removeprefix("http://"),
            f"{nm}hostname": "127.0.0.1",
            f"{nm}address": self.nm_address,
            f"{nm}localizer.address": f"127.0.0.1:{free_port()}",
            f"{nm}webapp.address": f"127.0.0.1:{free_port()}",
            # the NodeManager registers within a second of the ResourceManager listening,
            # not after the default 30 s retry interval
            f"{rm}connect.retry-interval.ms": 500,
            f"{nm}local-dirs": str(self.local_dirs),
            f"{nm}log-dirs": str(self.log_dirs),
            f"{nm}resource.memory-mb": self.memory_mb,
            f"{nm}resource.cpu-vcores": self.vcores,
            "yarn.scheduler.minimum-allocation-mb": 128,
            "yarn.scheduler.maximum-allocation-mb": self.memory_mb,
            "yarn.scheduler.maximum-allocation-vcores": self.vcores,
            # Python workers and torch outgrow a JVM's container estimate; nothing to police
            # on a development machine
            f"{nm}pmem-check-enabled": "false",
            f"{nm}vmem-check-enabled": "false",
            # a full-ish /tmp must not mark the only node's disks bad (it would go UNHEALTHY
            # and take no containers)
            f"{nm}disk-health-checker.max-disk-utilization-per-disk-percentage": "100.0",
            f"{nm}disk-health-checker.min-free-space-per-disk-mb": 0,
            # localized files (a packed Python environment is GBs) stay cached between
            # applications up to this size, not the default 10 GiB
            f"{nm}localizer.cache.target-size-mb": 65536,
            # Containers inherit these from the NodeManager unless the application sets
            # them: the defaults, and SPARK_LOCAL_IP (set to 127.0.0.1 for the daemon), so
            # Spark's drivers and executors bind and advertise 127.0.0.1. Unset, Spark
            # picks a non-loopback interface when the host name resolves to 127.0.0.1,
            # and nothing here is to reach outside the machine. (Not admin-env: the NM
            # appends that to a value the application passes, and Spark's AM passes its
            # SPARK_* variables on to executors: "127.0.0.1:127.0.0.1".)
            f"{nm}env-whitelist": "JAVA_HOME,HADOOP_COMMON_HOME,HADOOP_HDFS_HOME,"
                                  "HADOOP_CONF_DIR,CLASSPATH_PREPEND_DISTCACHE,HADOOP_YARN_HOME,"
                                  "HADOOP_HOME,PATH,LANG,TZ,SPARK_LOCAL_IP",
            "yarn.log-aggregation-enable": "false",
            f"{rm}recovery.enabled": "false",
        })
        # CapacityScheduler, as production clusters run it: one queue taking everything.
        # Application masters may hold half of it (the default 10% is less than one Spark
        # driver in cluster mode on a small node).
        _xml_config(self.conf_dir / "capacity-scheduler.xml", {
            "yarn.scheduler.capacity.root.queues": "default",
            "yarn.scheduler.capacity.root.default.capacity": 100,
            "yarn.scheduler.capacity.root.default.maximum-capacity": 100,
            "yarn.scheduler.capacity.maximum-am-resource-percent": 0.5,
        })
        (self.conf_dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO,console\n"
            "log4j.appender.console=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n\n")

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) with ``HADOOP_CONF_DIR`` and ``YARN_CONF_DIR``
        naming this cluster, for ``spark-submit --master yarn``."""
        return {**(os.environ if base is None else base),
                "HADOOP_CONF_DIR": str(self.conf_dir), "YARN_CONF_DIR": str(self.conf_dir)}

    def _daemon(self, name: str, main_class: str, timeout_s: float, ready) -> None:
        daemon = _JavaServer(str(self.workdir / name), self.heap, f"{name}.log")
        daemon.name = f"YARN {name}"
        daemon.workdir.mkdir(parents=True, exist_ok=True)
        self._daemons.append(daemon)
        # `env -i`: the daemon (and the NodeManager's containers, which inherit PATH,
        # JAVA_HOME and SPARK_LOCAL_IP from it) sees a system PATH and none of this
        # process's Python settings (VIRTUAL_ENV, PYTHONPATH, PYSPARK_PYTHON, ...).
        settings = [f"PATH={self.SYSTEM_PATH}", f"JAVA_HOME={self.java_home()}",
                    f"HOME={os.environ.get('HOME', '/tmp')}", "LANG=C.UTF-8",
                    f"HADOOP_CONF_DIR={self.conf_dir}", f"YARN_CONF_DIR={self.conf_dir}",
                    "SPARK_LOCAL_IP=127.0.0.1"]
        daemon._launch(["env", "-i", *settings, str(Path(self.java_home()) / "bin" / "java"),
                        f"-Xmx{self.heap}", "-cp", self._classpath, main_class],
                       timeout_s, ready)

    def _get(self, path: str) -> dict:
        import json
        import urllib.request

        with urllib.request.urlopen(f"{self.web_ui}/ws/v1/cluster{path}", timeout=5) as reply:
            return json.loads(reply.read())

    def status(self) -> dict:
        """The ResourceManager's ``/ws/v1/cluster/info`` (``state`` is ``STARTED`` when up)."""
        return self._get("/info")["clusterInfo"]

    def nodes(self) -> list[dict]:
        """The NodeManagers the ResourceManager knows (``/ws/v1/cluster/nodes``)."""
        return (self._get("/nodes").get("nodes") or {}).get("node") or []

    def running_nodes(self) -> int:
        """NodeManagers RUNNING (0 while the ResourceManager does not answer)."""
        try:
            return sum(n.get("state") == "RUNNING" for n in self.nodes())
        except (OSError, ValueError):
            return 0

    def application(self, app_id: str) -> dict:
        """An application's report (``state``, ``finalStatus``, ``diagnostics``, ...)."""
        return self._get(f"/apps/{app_id}")["app"]

    def applications(self) -> list[dict]:
        """Every application's report, oldest first."""
        apps = (self._get("/apps").get("apps") or {}).get("app") or []
        return sorted(apps, key=lambda a: a["id"])

    def container_logs(self, app_id: str, max_chars: int = 20000) -> dict[str, str]:
        """``{"<container id>/<file>": text}`` of an application's container logs on the
        NodeManager (its driver's stdout is the first container's, in cluster mode);
        each text is the last ``max_chars`` characters of its file."""
        logs = {}
        for file in sorted((self.log_dirs / app_id).glob("*/*")):
            if file.is_file():
                text = file.read_text(errors="replace")
                logs[f"{file.parent.name}/{file.name}"] = text[-max_chars:]
        return logs

    def fs(self, *args: str, timeout_s: float = 600.0) -> str:
        """Run Hadoop's file system shell (``hadoop fs <args>``) against this cluster's
        default file system; returns its stdout.

        Raises:
            RuntimeError: if it fails or runs past ``timeout_s``, with its output.
        """
        if not self._classpath:
            raise RuntimeError("start MiniYARN before using its file system shell")
        command = [_java(), "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", self._classpath,
                   "org.apache.hadoop.fs.FsShell", *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                                  env={**os.environ, "HADOOP_CONF_DIR": str(self.conf_dir)})
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"hadoop fs {' '.join(args)} did not finish within "
                               f"{timeout_s:g} s") from None
        if done.returncode != 0:
            raise RuntimeError(f"hadoop fs {' '.join(args)} failed (exit code "
                               f"{done.returncode}):\n{done.stdout}{done.stderr[-3000:]}")
        return done.stdout

    def start(self, timeout_s: float = 180.0) -> MiniYARN:
        """Write the config, start the ResourceManager and the NodeManager; wait until the
        NodeManager is RUNNING in the ResourceManager.

        Raises:
            RuntimeError: if a daemon exits, or the cluster is not up within
                ``timeout_s`` (with the tail of the daemon's log).
        """
        target = resolve_jars("hdfs", "yarn/slf4j-reload4j-1.7.36.jar")
        # conf first: the daemons and FsShell read *-site.xml and log4j.properties from it
        self._classpath = f"{self.conf_dir}:{target / 'server'}/*:{target / 'yarn'}/*"
        deadline = time.monotonic() + timeout_s
        try:
            self._configure()
            # Both at once: the NodeManager retries its registration every 0.5 s until the
            # ResourceManager listens (each JVM takes seconds to start).
            self._daemon("resourcemanager",
                         "org.apache.hadoop.yarn.server.resourcemanager.ResourceManager",
                         timeout_s, lambda: True)
            self._daemon("nodemanager", "org.apache.hadoop.yarn.server.nodemanager.NodeManager",
                         timeout_s, lambda: True)
            while self.running_nodes() < 1:
                for daemon in self._daemons:
                    if daemon._proc is None or daemon._proc.poll() is not None:
                        raise RuntimeError(f"{daemon.name} exited:\n{daemon._log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the NodeManager did not register with the ResourceManager within "
                        f"{timeout_s:g} s:\n{self._daemons[-1]._log_tail()}\n"
                        f"{self._daemons[0]._log_tail()}")
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the NodeManager (its containers with it), then the ResourceManager; delete
        the temporary directory."""
        for daemon in reversed(self._daemons):
            daemon.stop()  # SIGTERM to its process group, then SIGKILL after 20 s
        self._daemons = []
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> MiniYARN:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _serve_yarn(workdir: str | None) -> None:
    """``servers.py yarn``: an HDFS and a YARN cluster on it, until Ctrl-C."""
    hdfs_dir = yarn_dir = None
    if workdir:
        hdfs_dir, yarn_dir = f"{workdir}/hdfs", f"{workdir}/yarn"
        for d in (hdfs_dir, yarn_dir):
            Path(d).mkdir(parents=True, exist_ok=True)
    with MiniHDFS(hdfs_dir) as hdfs, MiniYARN(hdfs, yarn_dir) as yarn:
        print(f"yarn ready: ResourceManager {yarn.rm_address} (web UI {yarn.web_ui}), "
              f"HDFS {hdfs.uri} (WebHDFS {hdfs.webhdfs}); container logs in "
              f"{yarn.log_dirs}\n  export HADOOP_CONF_DIR={yarn.conf_dir}\n"
              f"  spark-submit --master yarn --deploy-mode cluster ...", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=["kafka", "hdfs", "standalone", "yarn", "connect"])
    parser.add_argument("--dir", help="keep config, data and logs here")
    parser.add_argument("--workers", type=int, default=2, help="standalone: Worker daemons")
    parser.add_argument("--cores", type=int, default=1, help="standalone: cores per Worker")
    parser.add_argument("--memory", default="1g", help="standalone: memory per Worker")
    args = parser.parse_args()
    if args.server == "yarn":
        _serve_yarn(args.dir)
        return
    if args.server == "standalone":
        server = StandaloneCluster(args.dir, args.workers, args.cores, args.memory)
    elif args.server == "connect":
        jar = sorted((HERE.parents[1] / "jvm" / "target").glob("sparkdl-jvm_*.jar"))
        server = ConnectServer(args.dir, jars=[str(j) for j in jar[-1:]])
    else:
        server = KafkaBroker(args.dir) if args.server == "kafka" else MiniHDFS(args.dir)
    with server:
        if args.server == "kafka":
            print(f"kafka ready: bootstrap {server.bootstrap} (logs in {server.log_path})",
                  flush=True)
        elif args.server == "standalone":
            print(f"standalone ready: {server.master_url} ({server.workers} workers, web UI "
                  f"{server.web_ui}; logs in {server.workdir})", flush=True)
        elif args.server == "connect":
            print(f"connect ready: {server.url} (executors on {server.python}; logs in "
                  f"{server.log_path})", flush=True)
        else:
            print(f"hdfs ready: {server.uri}, WebHDFS {server.webhdfs} "
                  f"(logs in {server.log_path})", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
