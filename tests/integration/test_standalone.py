"""spark-submit to a real Spark standalone cluster (issue 15).

A Master and two Workers run as separate daemon JVMs on 127.0.0.1
(``deploy/local/servers.py``'s :class:`StandaloneCluster`, started once for the
session), and the tests submit to ``spark://127.0.0.1:<port>`` exactly as a user
would: the Python digits job and the Scala app, each an application of its own with
one executor per Worker. Executors are started by the Workers, so their Python is
``spark.pyspark.python`` (the project's ``.venv``; shipping an environment is
tested on YARN).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.spark, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
#: Writes the digits as Parquet, as deploy/local/submit_scala_digits.sh does.
DIGITS_PARQUET = REPO / "deploy" / "local" / "digits_parquet.py"
SUBMIT = Path(sys.executable).parent / "spark-submit"
#: What python/train_digits.py asserts for both networks (it prints DEMO OK above it).
PYTHON_DEMO_ACCURACY = 0.95
#: The Scala example prints its test accuracy without a bar; its MLP reaches ~0.95.
SCALA_DEMO_ACCURACY = 0.9


def _servers():
    """``deploy/local/servers.py``, imported as it says (top-level module ``servers``)."""
    local = str(REPO / "deploy" / "local")
    if local not in sys.path:
        sys.path.append(local)
    import servers

    return servers


@pytest.fixture(scope="session")
def standalone():
    """A Master and two 1-core, 1 GiB Workers, started once for the test session."""
    with _servers().StandaloneCluster(workers=2, cores=1, memory="1g") as cluster:
        yield cluster


def submit(cluster, *args: str, cwd: Path, timeout_s: float = 900) -> str:
    """``spark-submit --master spark://...`` as a user would; returns its stdout.

    The driver binds 127.0.0.1 like the cluster; executors start the .venv's Python.
    """
    import pyspark

    env = {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent),
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    command = [str(SUBMIT), "--master", cluster.master_url,
               "--conf", f"spark.pyspark.python={sys.executable}",
               "--conf", "spark.driver.host=127.0.0.1",
               "--conf", "spark.driver.bindAddress=127.0.0.1",
               "--conf", "spark.ui.enabled=false",
               "--conf", "spark.ui.showConsoleProgress=false", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"spark-submit did not finish within {timeout_s:g} s:\n"
                    f"{(e.stdout or '')[-3000:]}\n{(e.stderr or '')[-3000:]}")
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def final_state(cluster, app_name: str, timeout_s: float = 30.0) -> str:
    """The state the Master gives application ``app_name`` once it completed (the
    Master hears of it shortly after spark-submit returns): proof that the app ran on
    this cluster, not on a cluster of its own."""
    deadline = time.monotonic() + timeout_s
    while True:
        apps = {app["name"]: app["state"] for app in cluster.status()["completedapps"]}
        if app_name in apps:
            return apps[app_name]
        if time.monotonic() > deadline:
            return f"not among the Master's completed applications {apps}"
        time.sleep(0.5)


def test_the_cluster_has_two_alive_workers_on_localhost(standalone):
    status = standalone.status()
    assert standalone.master_url.startswith("spark://127.0.0.1:")
    workers = [w for w in status["workers"] if w["state"] == "ALIVE"]
    assert len(workers) == 2 and {w["host"] for w in workers} == {"127.0.0.1"}
    assert all(w["cores"] == 1 for w in workers)


def test_python_digits_job_reaches_the_demo_accuracy(standalone, tmp_path):
    # The job is told the master as well: it falls back to local-cluster on its own
    # (its SparkConf() is read before the JVM starts, so it misses spark-submit's).
    out = submit(standalone, str(REPO / "python" / "train_digits.py"),
                 "--master", standalone.master_url, "--output", str(tmp_path / "digits"),
                 cwd=tmp_path)
    accuracy = {m.group(1): float(m.group(2))
                for m in re.finditer(r"^(MLP|CNN) test accuracy: ([0-9.]+)", out, re.M)}
    assert set(accuracy) == {"MLP", "CNN"}, out[-3000:]
    assert min(accuracy.values()) >= PYTHON_DEMO_ACCURACY, accuracy
    assert "DEMO OK" in out
    # Both ranks ran on the cluster's two executors (one per Worker), not in the driver.
    executors = re.search(r"CNN test accuracy: .*executors=(\[.*?\])", out).group(1)
    assert sorted(ast.literal_eval(executors)) == ["0", "1"], out[-2000:]
    assert final_state(standalone, "sparkdl-digits") == "FINISHED"


def test_scala_app_reaches_the_demo_accuracy(standalone, tmp_path):
    from sparkdl.jvm import jar_path

    jar = jar_path()  # a ConfigError naming `make jvm` when it was never built
    parquet = tmp_path / "digits.parquet"
    subprocess.run([sys.executable, str(DIGITS_PARQUET), str(parquet)], check=True, timeout=120)
    out = submit(standalone, "--class", "sparkdl.examples.TrainDigits", jar, str(parquet),
                 cwd=tmp_path)
    found = re.search(r"^test accuracy: ([0-9.]+)", out, re.M)
    assert found, out[-3000:]
    assert float(found.group(1)) >= SCALA_DEMO_ACCURACY, out[-3000:]
    assert final_state(standalone, "sparkdl-train-digits") == "FINISHED"
