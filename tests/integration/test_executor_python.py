"""``fit`` checks the executors' Python before the barrier job (issue 15).

A user who forgets ``PYSPARK_PYTHON`` gets a ConfigError in seconds naming the
interpreter the executors ran and the settings that fix it, not a raw Py4JJavaError
from inside the barrier job. The main case is an application of its own, submitted
with ``spark-submit --conf spark.pyspark.python=<a Python without sparkdl>`` as a
user would. The other cases reuse the shared session: the interpreter a SparkContext
starts on its executors is ``SparkContext.pythonExec`` (what spark-submit sets from
``spark.pyspark.python``), so pointing it elsewhere for one check is what an
application started with that setting sees, without starting one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import sparkdl
from sparkdl.errors import ConfigError
from sparkdl.ml.executor_python import check_executor_python

pytestmark = [pytest.mark.spark]

#: The interpreter this virtualenv was made from: a real Python without sparkdl or torch.
BASE_PYTHON = str(Path(sys.base_prefix, "bin", "python3"))
needs_base_python = pytest.mark.skipif(not Path(BASE_PYTHON).exists(),
                                       reason="no base interpreter beside this virtualenv")


@contextmanager
def executors_run(spark, python: str):
    """Executors of ``spark`` start ``python`` for the Python work submitted inside."""
    sc = spark.sparkContext
    before, sc.pythonExec = sc.pythonExec, python
    try:
        yield
    finally:
        sc.pythonExec = before


def test_the_check_runs_once_per_application(spark):
    began = time.monotonic()
    first = check_executor_python(spark.sparkContext, tasks=2, horovod=False)
    asked = time.monotonic() - began
    assert {a["python"] for a in first} == {sys.executable}
    assert {a["found"]["sparkdl"] for a in first} == {sparkdl.__version__}
    # Remembered: the same answers, without a job.
    assert check_executor_python(spark.sparkContext, tasks=2, horovod=False) is first
    print(f"first check: {asked:.1f} s")


@needs_base_python
@pytest.mark.slow
def test_a_fit_whose_executors_lack_sparkdl_fails_in_seconds(tmp_path):
    import pyspark

    # As a user who never set PYSPARK_PYTHON; SPARK_HOME so spark-submit need not ask
    # whichever python3 is on PATH where pyspark is.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    env["SPARK_HOME"] = str(Path(pyspark.__file__).parent)
    submit = Path(sys.executable).parent / "spark-submit"
    done = subprocess.run(
        [str(submit), "--master", "local-cluster[2,1,1024]",
         "--conf", f"spark.pyspark.python={BASE_PYTHON}",
         "--conf", f"spark.pyspark.driver.python={sys.executable}",
         "--conf", "spark.ui.enabled=false", "--conf", "spark.ui.showConsoleProgress=false",
         __file__], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["error"] == "ConfigError", result
    message = result["message"]
    assert "executors 0, 1 on " in message, message
    assert f" ran {BASE_PYTHON} (Python " in message
    assert "cannot import sparkdl (ModuleNotFoundError: No module named 'sparkdl')" in message
    assert f"The driver asked for {BASE_PYTHON!r} (spark.pyspark.python" in message
    assert "set spark.pyspark.python to a Python with sparkdl" in message
    assert "--archives sparkdl-env.tar#environment" in message
    # From fit() on a cluster whose executors are up: the schema/stats jobs, then the
    # check, and no barrier job. Seconds on an idle machine; the bound leaves room for
    # a loaded CI host (2 shared cores).
    assert result["seconds"] < 90, result


def _old_sparkdl_env(root: Path) -> str:
    """A virtualenv with sparkdl 0.0.1 installed (a package and its dist-info), as an
    executor that never upgraded has; returns its python."""
    subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=120)
    (site,) = root.glob("lib/python*/site-packages")
    (site / "sparkdl").mkdir()
    (site / "sparkdl" / "__init__.py").write_text('__version__ = "0.0.1"\n')
    info = site / "sparkdl-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sparkdl\nVersion: 0.0.1\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("sparkdl/__init__.py,,\n")
    return str(root / "bin" / "python")


@needs_base_python
def test_an_older_sparkdl_on_the_executors_is_named(spark, tmp_path):
    python = _old_sparkdl_env(tmp_path / "old-env")
    with executors_run(spark, python), pytest.raises(ConfigError) as caught:
        check_executor_python(spark.sparkContext, tasks=2, horovod=False)
    message = str(caught.value)
    assert f" ran {python} (Python " in message
    assert f"sparkdl 0.0.1, the driver has {sparkdl.__version__} (they must be equal)" in message


def test_an_interpreter_that_does_not_exist_is_named(spark, tmp_path):
    python = str(tmp_path / "environment" / "bin" / "python")
    began = time.monotonic()
    with executors_run(spark, python), pytest.raises(ConfigError) as caught:
        check_executor_python(spark.sparkContext, tasks=2, horovod=False)
    message = str(caught.value)
    assert message.startswith(f"The executors could not run {python!r} (spark.pyspark.python "
                              "/ PYSPARK_PYTHON) for the sparkdl check (executor ")
    assert f'Cannot run program "{python}"' in message
    assert time.monotonic() - began < 30


def _fit_with_the_executors_python() -> None:
    """Under spark-submit: a fit on a cluster whose executors are up; prints what it
    raised and how long it took, as JSON."""
    import torch
    from pyspark.sql import SparkSession

    from sparkdl import TorchEstimator
    from sparkdl.cluster import task_slots

    spark = SparkSession.builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    deadline = time.monotonic() + 120
    while task_slots(spark.sparkContext) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    df = spark.createDataFrame([([float(i), 1.0, 2.0, 3.0], i % 3) for i in range(20)],
                               "features array<float>, label long")
    began = time.monotonic()
    try:
        TorchEstimator(model=torch.nn.Linear(4, 3), numWorkers=2, epochs=1,
                       backend="torch").fit(df)
        error, message = None, ""
    except Exception as exc:  # noqa: BLE001 - reported to the test
        error, message = type(exc).__name__, str(exc)
    print(json.dumps({"error": error, "message": message,
                      "seconds": time.monotonic() - began}))
    spark.stop()


if __name__ == "__main__":
    _fit_with_the_executors_python()
