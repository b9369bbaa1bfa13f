"""spark-submit to a real Hadoop YARN cluster, the environment shipped by --archives (issue 15).

A ResourceManager and a NodeManager run as daemon JVMs on 127.0.0.1 (``deploy/local/
servers.py``'s :class:`MiniYARN`, on the session's :class:`MiniHDFS`), started once for
this module. The NodeManager's containers see a system ``PATH`` and nothing of the
project's ``.venv``: their Python is the packed environment (``sparkdl.pack_env``: sparkdl
from its wheel, torch, pyspark, pyarrow, Horovod), uploaded to HDFS once and shipped with
``--archives hdfs:///...#environment``. It is world-readable there, so YARN localizes it
as a PUBLIC resource: once per NodeManager, shared by both applications, as a real
cluster does with an environment kept on HDFS. Spark's own jars go the same way
(``spark.yarn.archive``), instead of a 460 MB upload per application.

Both applications run in ``--deploy-mode cluster`` (the driver in the application
master's container), at the same time (they share the one localization, and the two
cores of this machine), read the digits from HDFS and save their model to HDFS; the
tests then load both models from HDFS and score them.

It runs with ``make test-yarn`` (``SPARKDL_TEST_YARN=1``), not in ``make test``: with
PyPI's torch (the CUDA build) the packed environment is about 6 GiB, and shipping it
(upload, then the NodeManager's download and unpack) plus two applications in YARN
containers take 15-20 minutes on a 2-core machine, half of CI's time budget.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [pytest.mark.spark, pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("SPARKDL_TEST_YARN") != "1",
                                 reason="ships a ~6 GiB environment through YARN (15-20 min); "
                                        "`make test-yarn` (SPARKDL_TEST_YARN=1) runs it"),
              # building the wheel and the environment archive (cached between runs), its
              # upload and localization, and two applications: more than the default 600 s
              pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
#: Writes the digits as Parquet, as deploy/local/submit_scala_digits.sh does.
DIGITS_PARQUET = REPO / "deploy" / "local" / "digits_parquet.py"
SUBMIT = Path(sys.executable).parent / "spark-submit"
#: What python/train_digits.py asserts for both networks (it prints DEMO OK above it).
PYTHON_DEMO_ACCURACY = 0.95
#: The Scala example prints its test accuracy without a bar; its MLP reaches ~0.95.
SCALA_DEMO_ACCURACY = 0.9
#: Each application's deadline, from submission to its final state.
APP_TIMEOUT_S = 900
#: Where the test's files live on HDFS (world-readable, so YARN's cache is PUBLIC).
ROOT = "/sparkdl-yarn-test"


def _servers():
    """``deploy/local/servers.py``, imported as it says (top-level module ``servers``)."""
    local = str(REPO / "deploy" / "local")
    if local not in sys.path:
        sys.path.append(local)
    import servers

    return servers


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@pytest.fixture(scope="module")
def yarn(hdfs):
    """A ResourceManager and a NodeManager on the session's HDFS, for this module.

    The NodeManager offers room for two applications at once: two application masters
    (a 1 GiB driver each) and four 1 GiB executors, 1408 MiB each with Spark's overhead.
    """
    with _servers().MiniYARN(hdfs, memory_mb=9216, vcores=6) as cluster:
        yield cluster


@dataclass
class Shipped:
    """What the applications use from HDFS, and what it took to put it there."""

    env: str  # hdfs://.../sparkdl-env.tar
    spark_libs: str  # hdfs://.../spark-libs.zip
    digits: str  # hdfs://.../digits.parquet
    seconds: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def shipped(yarn, hdfs, tmp_path_factory) -> Shipped:
    """The packed environment, Spark's jars and the digits, uploaded to HDFS once."""
    from sparkdl.pack_env import build

    seconds = {}
    tmp = tmp_path_factory.mktemp("yarn-ship")
    t0 = time.monotonic()
    # `make dist`'s command (the Scala jar reused from jvm/target when `make test` built it)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "--no-build-isolation", "-w", str(tmp), str(REPO)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, f"building the wheel failed:\n{done.stderr[-4000:]}"
    (wheel,) = tmp.glob("sparkdl-*-py3-none-any.whl")
    seconds["wheel"] = time.monotonic() - t0
    t0 = time.monotonic()
    env = build(wheel)  # cached in ~/.cache/sparkdl/env by the wheel's contents
    seconds["pack_env"] = time.monotonic() - t0

    t0 = time.monotonic()
    # Spark's jars at the archive's root, stored (jars are compressed already), so YARN
    # localizes them once per NodeManager instead of Spark uploading them per application
    libs = tmp / "spark-libs.zip"
    with zipfile.ZipFile(libs, "w", zipfile.ZIP_STORED) as zf:
        for jar in sorted((_spark_home() / "jars").glob("*.jar")):
            zf.write(jar, jar.name)
    digits = tmp / "digits.parquet"
    subprocess.run([sys.executable, str(DIGITS_PARQUET), str(digits)], check=True, timeout=120)
    seconds["stage_local"] = time.monotonic() - t0

    t0 = time.monotonic()
    yarn.fs("-mkdir", "-p", ROOT)
    yarn.fs("-put", str(env), str(libs), str(digits), ROOT)
    seconds["upload"] = time.monotonic() - t0
    listing = yarn.fs("-ls", ROOT)
    # world-readable files in world-executable directories: YARN's PUBLIC visibility
    assert re.search(r"^-rw-r--r-- .* /sparkdl-yarn-test/sparkdl-env.tar$", listing, re.M), \
        listing
    yield Shipped(f"{hdfs.uri}{ROOT}/{env.name}", f"{hdfs.uri}{ROOT}/{libs.name}",
                  f"{hdfs.uri}{ROOT}/{digits.name}", seconds)
    yarn.fs("-rm", "-r", "-f", "-skipTrash", ROOT)  # 6+ GB the session's HDFS need not keep


@dataclass
class App:
    """One finished spark-submit: its YARN application, output and container logs."""

    name: str
    app_id: str
    returncode: int
    client_log: str
    report: dict
    logs: dict[str, str]
    seconds: float

    @property
    def driver_stdout(self) -> str:
        """The driver's stdout (cluster mode: the application master's container)."""
        return next((text for name, text in self.logs.items()
                     if re.search(r"_0*1/stdout$", name)), "")

    def explain(self) -> str:
        """The YARN report and each container log's tail, for assertion messages."""
        parts = [f"{self.name}: {self.app_id} exit code {self.returncode}, state "
                 f"{self.report.get('state')}/{self.report.get('finalStatus')}: "
                 f"{self.report.get('diagnostics', '')[-2000:]}",
                 f"--- spark-submit ---\n{self.client_log[-3000:]}"]
        for name, text in self.logs.items():
            if name.endswith(("stdout", "stderr")) and text:
                parts.append(f"--- {name} ---\n{text[-4000:]}")
        return "\n".join(parts)


def _submit(yarn, shipped: Shipped, name: str, args: list[str], cwd: Path):
    """Start ``spark-submit --master yarn --deploy-mode cluster`` as a user would."""
    # The client's own Python settings are not passed on (YARN's client copies
    # PYSPARK_PYTHON into the application master's environment): the containers' Python
    # is the shipped environment's and nothing else.
    env = {k: v for k, v in yarn.env().items()
           if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYTHONPATH")}
    env["SPARK_HOME"] = str(_spark_home())
    command = [str(SUBMIT), "--master", "yarn", "--deploy-mode", "cluster", "--name", name,
               "--archives", f"{shipped.env}#environment",
               "--conf", "spark.pyspark.python=./environment/bin/python",
               "--conf", f"spark.yarn.archive={shipped.spark_libs}",
               "--driver-memory", "1g", "--executor-memory", "1g",
               "--executor-cores", "1", "--num-executors", "2",
               # a failed driver fails the application, not a second attempt
               "--conf", "spark.yarn.maxAppAttempts=1",
               "--conf", "spark.ui.enabled=false",
               "--conf", "spark.ui.showConsoleProgress=false", *args]
    log = open(cwd / f"{name}.log", "w+")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                            text=True)
    return proc, log, time.monotonic()


def _finish(yarn, name: str, proc, log, started: float) -> App:
    """Wait (bounded) for a spark-submit started by :func:`_submit`; collect the logs."""
    try:
        proc.wait(timeout=max(1.0, started + APP_TIMEOUT_S - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()  # the client only; the application is killed with the cluster
        proc.wait()
    seconds = time.monotonic() - started
    log.seek(0)
    client_log = log.read()
    log.close()
    found = re.search(r"Submitted application (application_\d+_\d+)", client_log)
    if not found:
        pytest.fail(f"{name}: spark-submit never submitted to YARN (exit code "
                    f"{proc.returncode}):\n{client_log[-5000:]}")
    app_id = found.group(1)
    try:
        report = yarn.application(app_id)
    except OSError as e:
        report = {"diagnostics": f"(no report from the ResourceManager: {e})"}
    return App(name, app_id, proc.returncode, client_log, report,
               yarn.container_logs(app_id), seconds)


@pytest.fixture(scope="module")
def apps(yarn, shipped, tmp_path_factory) -> dict[str, App]:
    """The Python digits job and the Scala app, submitted together, run to the end."""
    from sparkdl.jvm import jar_path

    jar = jar_path()  # a ConfigError naming `make jvm` when it was never built
    cwd = tmp_path_factory.mktemp("yarn-submit")
    hdfs_out = shipped.digits.rsplit("/", 1)[0]
    running = {
        "python": _submit(yarn, shipped, "sparkdl-yarn-python", [
            str(REPO / "python" / "train_digits.py"), "--data", shipped.digits,
            "--output", f"{hdfs_out}/python-digits"], cwd),
        "scala": _submit(yarn, shipped, "sparkdl-yarn-scala", [
            "--class", "sparkdl.examples.TrainDigits", jar, shipped.digits,
            f"{hdfs_out}/scala-digits-model"], cwd),
    }
    done = {key: _finish(yarn, name, *handle) for (key, handle), name in
            zip(running.items(), ("sparkdl-yarn-python", "sparkdl-yarn-scala"))}
    timings = {**shipped.seconds,
               **{f"app_{k}": a.report.get("elapsedTime", float("nan")) / 1000
                  for k, a in done.items()},
               "both_apps": max(a.seconds for a in done.values()),
               "localize_env": _localization_seconds(yarn, shipped.env)}
    print("YARN test timings (s):", {k: round(v, 1) for k, v in timings.items()})
    return done


def _localization_seconds(yarn, resource: str) -> float:
    """How long the NodeManager took to download and unpack ``resource`` (from its log:
    'Downloading public resource' to the first container leaving LOCALIZING)."""
    log = (yarn.workdir / "nodemanager" / "nodemanager.log").read_text(errors="replace")
    stamp = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) "
    start = re.search(stamp + r".*Downloading public resource: \{ " + re.escape(resource),
                      log, re.M)
    end = re.search(stamp + r".*transitioned from LOCALIZING to SCHEDULED", log, re.M)
    if not (start and end):
        return float("nan")

    def seconds(m) -> float:
        return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1e3

    return seconds(end) - seconds(start)


def _accuracy(spark, model, digits: str) -> float:
    from pyspark.sql import functions as F

    digits_df = spark.read.parquet(digits).select(
        F.col("features").cast("array<float>").alias("features"), "label")
    scored = model.transform(digits_df)
    return scored.select(F.avg((F.col("prediction") == F.col("label")).cast("double"))
                         ).first()[0]


def test_the_cluster_runs_one_nodemanager_on_localhost(yarn):
    assert yarn.status()["state"] == "STARTED"
    assert yarn.rm_address.startswith("127.0.0.1:")
    (node,) = yarn.nodes()
    assert node["state"] == "RUNNING" and node["nodeHostName"] in ("localhost", "127.0.0.1")
    assert node["totalResource"]["memory"] == 9216


def test_python_digits_job_reaches_the_demo_accuracy(apps, shipped, spark):
    from sparkdl import TorchModel

    app = apps["python"]
    assert app.returncode == 0 and app.report.get("finalStatus") == "SUCCEEDED", app.explain()
    out = app.driver_stdout
    accuracy = {m.group(1): float(m.group(2))
                for m in re.finditer(r"^(MLP|CNN) test accuracy: ([0-9.]+)", out, re.M)}
    assert set(accuracy) == {"MLP", "CNN"}, app.explain()
    assert min(accuracy.values()) >= PYTHON_DEMO_ACCURACY, accuracy
    assert "DEMO OK" in out, app.explain()
    # Both ranks ran in this application's two executor containers.
    executors = re.search(r"CNN test accuracy: .*executors=(\[.*?\])", out).group(1)
    containers = sorted(ast.literal_eval(executors))
    assert len(containers) == 2 and all(
        c.startswith("container_" + app.app_id.removeprefix("application_"))
        for c in containers), out[-2000:]
    # The CNN it saved on HDFS loads here and scores the digits as well.
    model_path = f"{shipped.digits.rsplit('/', 1)[0]}/python-digits/cnn_model"
    assert _accuracy(spark, TorchModel.load(model_path), shipped.digits) >= PYTHON_DEMO_ACCURACY


def test_scala_app_in_cluster_mode_reaches_the_demo_accuracy(apps, shipped, spark):
    from sparkdl import TorchModel

    app = apps["scala"]
    assert app.returncode == 0 and app.report.get("finalStatus") == "SUCCEEDED", app.explain()
    found = re.search(r"^test accuracy: ([0-9.]+)", app.driver_stdout, re.M)
    assert found, app.explain()
    assert float(found.group(1)) >= SCALA_DEMO_ACCURACY, app.explain()
    model_path = f"{shipped.digits.rsplit('/', 1)[0]}/scala-digits-model"
    assert f"saved model: {model_path}" in app.driver_stdout
    assert _accuracy(spark, TorchModel.load(model_path), shipped.digits) >= SCALA_DEMO_ACCURACY


def test_containers_ran_the_shipped_environment_localized_once(yarn, apps, shipped):
    for app in apps.values():
        assert app.report.get("finalStatus") == "SUCCEEDED", app.explain()
    # The NodeManager's own Python (its containers' PATH) has no torch: whatever ran
    # torch in the containers (spark.pyspark.python, in the driver and the executors)
    # came with the application.
    system = subprocess.run(["env", "-i", f"PATH={yarn.SYSTEM_PATH}", "python3", "-c",
                             "import torch"], capture_output=True, cwd="/", timeout=60)
    assert system.returncode != 0
    logs = {app.app_id: sorted(yarn.log_dirs.glob(f"{app.app_id}/container_*"))
            for app in apps.values()}
    # 2 applications x (application master + 2 executors), none lost and restarted
    assert [len(c) for c in logs.values()] == [3, 3], logs
    for containers in logs.values():
        for container in containers:
            script = (container / "launch_container.sh").read_text()
            # ./environment is a link into the NodeManager's PUBLIC cache (filecache/),
            # not a private per-application copy (usercache/.../appcache/)
            assert re.search(r'ln -sf (-- )?"[^"]*/filecache/\d+/sparkdl-env\.tar" '
                             r'"environment"', script), script[-3000:]
            assert str(REPO / ".venv") not in script
    # One copy of the environment for both applications.
    unpacked = list((yarn.local_dirs / "filecache").glob("*/sparkdl-env.tar"))
    assert len(unpacked) == 1, unpacked
    assert (unpacked[0] / "bin" / "python").exists()
