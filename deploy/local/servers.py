"""Local servers for development and tests: Kafka, HDFS and a Spark standalone cluster.

* :class:`KafkaBroker`: Apache Kafka in KRaft mode (broker and controller in one
  process), from the jars ``deploy/local/kafka/pom.xml`` resolves from Maven Central.
* :class:`MiniHDFS`: one NameNode and one DataNode (Hadoop's MiniDFSCluster), with
  WebHDFS, from the jars ``deploy/local/hdfs/pom.xml`` resolves.
* :class:`StandaloneCluster`: a Spark standalone Master and Workers, each its own
  daemon JVM, from the Spark that pyspark ships (nothing to resolve).

All listen on ports the OS picks and keep their data in a temporary directory removed
on stop; Kafka and HDFS resolve their jars with Maven on first use.

Run one by hand (Ctrl-C stops it)::

    .venv/bin/python deploy/local/servers.py kafka
    # -> kafka ready: bootstrap 127.0.0.1:40123 (logs in /tmp/sparkdl-kafka-.../broker.log)
    .venv/bin/python deploy/local/servers.py hdfs
    # -> hdfs ready: hdfs://localhost:36753, WebHDFS http://localhost:34497
    .venv/bin/python deploy/local/servers.py standalone
    # -> standalone ready: spark://127.0.0.1:38211 (2 workers, web UI http://127.0.0.1:41719)

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
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"sparkdl-{self.name.lower()}-"))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=["kafka", "hdfs", "standalone"])
    parser.add_argument("--dir", help="keep config, data and logs here")
    parser.add_argument("--workers", type=int, default=2, help="standalone: Worker daemons")
    parser.add_argument("--cores", type=int, default=1, help="standalone: cores per Worker")
    parser.add_argument("--memory", default="1g", help="standalone: memory per Worker")
    args = parser.parse_args()
    if args.server == "standalone":
        server = StandaloneCluster(args.dir, args.workers, args.cores, args.memory)
    else:
        server = KafkaBroker(args.dir) if args.server == "kafka" else MiniHDFS(args.dir)
    with server:
        if args.server == "kafka":
            print(f"kafka ready: bootstrap {server.bootstrap} (logs in {server.log_path})",
                  flush=True)
        elif args.server == "standalone":
            print(f"standalone ready: {server.master_url} ({server.workers} workers, web UI "
                  f"{server.web_ui}; logs in {server.workdir})", flush=True)
        else:
            print(f"hdfs ready: {server.uri}, WebHDFS {server.webhdfs} "
                  f"(logs in {server.log_path})", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
