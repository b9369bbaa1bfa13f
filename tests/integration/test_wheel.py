"""The wheel, installed into a clean virtualenv with no source tree, works on its own.

Builds the wheel as ``make dist`` does (the Scala jar reused from ``jvm/target`` when
fresh), installs it with ``--no-deps`` into a new venv, and from a directory outside
the repository runs a script with that venv's Python: it imports sparkdl from the
venv (driver and executors), finds the jar the wheel bundles, and trains and scores with
the Scala estimator from that jar, whose tasks start ``python -m sparkdl.worker`` with
the executors' Python, the clean venv's.

The heavy dependencies (torch, pyspark, pyarrow) are not downloaded: a ``.pth`` file
in the clean venv lists the project's site-packages. Python does not process ``.pth``
files found in a directory added that way, so the project's editable sparkdl install
stays invisible; the script asserts that sparkdl comes from the clean venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import json, os, sys, sysconfig, time

t0 = time.monotonic()
timings = {}
import numpy as np

import sparkdl
import sparkdl.jvm

site = os.path.realpath(sysconfig.get_paths()["purelib"])
assert os.path.realpath(sparkdl.__file__).startswith(site + os.sep), sparkdl.__file__
jar = sparkdl.jvm.jar_path()
assert os.path.realpath(jar).startswith(site + os.sep), jar

from pyspark.sql import DataFrame, SparkSession

from sparkdl.nn import Dense, Input, Sequential

spark = (sparkdl.jvm.with_jar(SparkSession.builder.master("local[2]"))
         .config("spark.pyspark.python", sys.executable)
         .config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "2")
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
timings["session"] = time.monotonic() - t0

# the executors' Python (PySpark's workers) imports sparkdl from the clean venv too
def where(_):
    import sparkdl
    yield sparkdl.__file__
executor_sparkdl = sorted(set(spark.sparkContext.parallelize(range(2), 2)
                              .mapPartitions(where).collect()))

rng = np.random.default_rng(11)
x = rng.normal(size=(64, 5)).astype("float32")
y = rng.integers(0, 3, size=64)
df = spark.createDataFrame([(r.tolist(), int(t)) for r, t in zip(x, y)],
                           "features array<float>, label long").cache()
net = Sequential([Input((5,)), Dense(8, activation="tanh"), Dense(3)])

# the Scala estimator from the bundled jar, through py4j; its tasks start
# `python -m sparkdl.worker` with spark.pyspark.python, the clean venv's
t1 = time.monotonic()
scala = (spark._jvm.sparkdl.ml.TorchEstimator().setNetworkJson(net.to_json())
         .setLoss("cross_entropy").setOptimizer("sgd").setLearningRate(0.5)
         .setFeaturesCol("features").setLabelCol("label").setBatchSize(64)
         .setEpochs(2).setNumWorkers(2).setSeed(3).setBackend("torch")
         .fit(df._jdf))
scala_history = json.loads(scala.historyJson())
scored = DataFrame(scala.transform(df._jdf), spark).select("prediction").collect()
timings["scala_fit_transform"] = time.monotonic() - t1

print("RESULT " + json.dumps({
    "sparkdl": sparkdl.__file__, "jar": jar, "executor_sparkdl": executor_sparkdl,
    "scala_workers": scala_history["num_workers"],
    "scala_epochs": len(scala_history["epochs"]),
    "predictions": sorted({int(r.prediction) for r in scored}), "rows": len(scored),
    "timings": timings,
}))
spark.stop()
'''


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def clean_venv(wheel, tmp_path_factory) -> Path:
    """A new venv holding only the wheel (``--no-deps``), the project's deps by ``.pth``."""
    venv = tmp_path_factory.mktemp("venv") / "clean"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel)])
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
               ).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "sparkdl_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return venv


def test_the_wheel_carries_the_jar(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "sparkdl/jars/sparkdl-jvm_2.13-0.1.0.jar" in names
    assert "sparkdl/schemas/network-v1.schema.json" in names
    assert not any(n.startswith(("jvm/", "tests/")) for n in names)


def test_installed_wheel_trains_with_the_bundled_scala_estimator(clean_venv, tmp_path):
    script = tmp_path / "check_wheel.py"
    script.write_text(SCRIPT)
    python = str(clean_venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "SPARK_HOME")}
    env.update(PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=python)
    done = run([python, str(script)], cwd=tmp_path, env=env, timeout=300)
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    result = json.loads(line[len("RESULT "):])
    venv = os.path.realpath(clean_venv)
    assert result["sparkdl"].startswith(venv) and result["jar"].startswith(venv)
    assert result["jar"].endswith("/sparkdl/jars/sparkdl-jvm_2.13-0.1.0.jar")
    assert [p.startswith(venv) for p in result["executor_sparkdl"]] == [True]
    assert result["scala_workers"] == 2 and result["scala_epochs"] == 2
    assert result["rows"] == 64 and set(result["predictions"]) <= {0, 1, 2}
    print("timings (s):", result["timings"])
