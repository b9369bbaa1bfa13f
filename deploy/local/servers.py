"""Local data servers for development and tests: a real Apache Kafka broker (KRaft).

The broker runs from the jars that ``deploy/local/kafka/pom.xml`` resolves from
Maven Central (built on first use with ``mvn package``), on 127.0.0.1 at ports the
OS picks, with its data in a temporary directory removed on stop.

Run one by hand (Ctrl-C stops it)::

    .venv/bin/python deploy/local/servers.py kafka
    # -> kafka ready: bootstrap 127.0.0.1:40123 (logs in /tmp/sparkdl-kafka-.../broker.log)

or from Python (what the pytest fixture does)::

    with KafkaBroker() as kafka:
        print(kafka.bootstrap)
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
KAFKA_POM = HERE / "kafka" / "pom.xml"
KAFKA_TARGET = HERE / "kafka" / "target"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_kafka_jars() -> Path:
    """The Kafka jars folder, resolved by Maven once (then cached in target/)."""
    marker = KAFKA_TARGET / "broker" / "kafka-clients-4.1.1.jar"
    if not marker.exists():
        subprocess.run(["mvn", "-q", "-B", "-f", str(KAFKA_POM), "package"], check=True)
    return KAFKA_TARGET


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else "java"


class KafkaBroker:
    """A single-node Kafka broker and controller (KRaft) on 127.0.0.1.

    Args:
        workdir: where its config, data and log go; a fresh temporary directory
            (deleted on stop) when ``None``.
        heap: the broker JVM's ``-Xmx``.
    """

    def __init__(self, workdir: str | None = None, heap: str = "512m") -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sparkdl-kafka-"))
        self.heap = heap
        self.port = free_port()
        self.controller_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = self.workdir / "broker.log"
        self._proc: subprocess.Popen | None = None

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
        jars = resolve_kafka_jars() / "broker"
        classpath = f"{jars}/*"
        config = self._config()
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the broker process
        java = [_java(), f"-Xmx{self.heap}", "-cp", classpath]
        subprocess.run([*java, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                        "-c", str(config)], check=True, stdout=log, stderr=log)
        self._proc = subprocess.Popen([*java, "kafka.Kafka", str(config)], stdout=log,
                                      stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"Kafka exited with code {self._proc.returncode}:\n"
                                   f"{self._log_tail()}")
            if self._ready():
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"Kafka was not ready within {timeout_s:g} s:\n{self._log_tail()}")

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

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and delete its temporary directory."""
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

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=["kafka"])
    parser.add_argument("--dir", help="keep config, data and logs here")
    args = parser.parse_args()
    with KafkaBroker(args.dir) as kafka:
        print(f"kafka ready: bootstrap {kafka.bootstrap} (logs in {kafka.log_path})",
              flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
