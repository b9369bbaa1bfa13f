"""The executors' Python check, its parts that need no Spark (issue 15).

The probe runs here in real interpreters: this one, and the base interpreter this
virtualenv was made from, which has neither sparkdl nor torch, loading the probe the
way a Spark executor's Python worker does (pyspark from Spark's ``pyspark.zip``).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pyspark
import pytest
import torch
from pyspark import cloudpickle

import sparkdl
from sparkdl.ml.executor_python import (
    DriverSide,
    describe,
    failed_probe_message,
    failure_cause,
    probe,
    probe_tasks,
    problems_of,
    shipped_probe,
)

DRIVER = DriverSide(sparkdl.__version__, str(torch.__version__), sys.executable,
                    "/usr/bin/python3")
BASE_PYTHON = Path(sys.base_prefix, "bin", "python3")
#: What Spark puts on an executor Python worker's PYTHONPATH: pyspark.zip and py4j's zip.
SPARK_PYTHONPATH = os.pathsep.join(
    str(p) for p in sorted((Path(pyspark.__file__).parent / "python" / "lib").glob("*.zip")))


def answer(executor="1", found=None, missing=None, python="/usr/bin/python3.11"):
    return {"python": python, "python_version": "3.11.2", "executor": executor,
            "host": "node-7", "found": found or {}, "missing": missing or {}}


def healthy(**versions):
    return {"sparkdl": sparkdl.__version__, "torch": "2.15.1+cpu", "pyarrow": "19.0.0",
            **versions}


def test_probe_reports_this_interpreter_and_versions():
    facts = next(probe(("sparkdl", "torch", "no_such_module_sparkdl_test"),
                       imported=("sparkdl",)))
    assert facts["python"] == sys.executable
    assert facts["python_version"] == sys.version.split()[0]
    assert facts["found"]["sparkdl"] == sparkdl.__version__
    # torch's version from its distribution's metadata, which may leave out "+cu132"
    assert str(torch.__version__).startswith(facts["found"]["torch"])
    assert facts["missing"] == {"no_such_module_sparkdl_test": "ModuleNotFoundError: No module "
                                "named 'no_such_module_sparkdl_test'"}
    assert facts["executor"] and facts["host"]


def test_probe_finds_torch_without_importing_it(tmp_path):
    # Importing torch takes seconds and stays in the Python worker Spark reuses. In a
    # fresh process, as on an executor: the shipped probe, unpickled and run.
    blob = cloudpickle.dumps(shipped_probe(("torch", "pyarrow", "sparkdl"), ("sparkdl",)))
    script = ("import pickle, sys; (facts,) = pickle.loads(sys.stdin.buffer.read())(iter([])); "
              "print(sorted(facts['found']), 'torch' in sys.modules, 'pyarrow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], input=blob, capture_output=True,
                          cwd=tmp_path, timeout=120)
    assert done.stdout.decode().split("\n")[0] == \
        "['pyarrow', 'sparkdl', 'torch'] False False", done.stderr.decode()[-2000:]


def test_probe_reports_a_module_that_raises_on_import_as_data(tmp_path, monkeypatch):
    (tmp_path / "broken_sparkdl_test_mod.py").write_text("raise OSError('libfoo.so: cannot "
                                                         "open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    facts = next(probe(("broken_sparkdl_test_mod",), imported=("broken_sparkdl_test_mod",)))
    assert facts["missing"] == {"broken_sparkdl_test_mod": "OSError: libfoo.so: cannot open "
                                                          "shared object file"}


def test_executor_id_comes_from_the_environment_or_the_work_directory(tmp_path, monkeypatch):
    work = tmp_path / "app-20260101-0001" / "3"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("SPARK_EXECUTOR_ID", raising=False)
    assert next(probe(()))["executor"] == "3"
    monkeypatch.setenv("SPARK_EXECUTOR_ID", "exec-9")
    assert next(probe(()))["executor"] == "exec-9"


@pytest.mark.skipif(not BASE_PYTHON.exists(), reason="no base interpreter beside this venv")
def test_the_shipped_probe_runs_in_a_python_without_sparkdl(tmp_path):
    # As an executor's Python worker gets it: pickled on the driver, unpickled by a
    # Python whose only extra modules are pyspark and py4j, from Spark's zips.
    blob = cloudpickle.dumps(shipped_probe(("sparkdl", "torch", "json"), ("sparkdl",)))
    load = ("import pickle, sys; f = pickle.loads(sys.stdin.buffer.read()); "
            "sys.stdout.buffer.write(pickle.dumps(list(f(iter([0])))))")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": SPARK_PYTHONPATH}
    done = subprocess.run([str(BASE_PYTHON), "-c", load], input=blob, capture_output=True,
                          env=env, cwd=tmp_path, timeout=120)  # not beside ./sparkdl
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    (facts,) = pickle.loads(done.stdout)
    assert facts["python"] == str(BASE_PYTHON)
    assert facts["missing"]["sparkdl"] == "ModuleNotFoundError: No module named 'sparkdl'"
    assert facts["missing"]["torch"] == "ModuleNotFoundError: No module named 'torch'"
    assert "json" in facts["found"]


def test_a_healthy_executor_has_no_problems():
    assert problems_of(answer(found=healthy()), DRIVER, horovod=False) == []


def test_torch_must_match_in_major_minor_only():
    assert problems_of(answer(found=healthy(torch="2.15.0")), DRIVER, False) == []
    (problem,) = problems_of(answer(found=healthy(torch="2.4.1")), DRIVER, False)
    assert problem == (f"torch 2.4.1, the driver has {DRIVER.torch} "
                       "(major.minor must be equal)")


def test_sparkdl_must_match_exactly():
    (problem,) = problems_of(answer(found=healthy(sparkdl="0.0.1")), DRIVER, False)
    assert problem.startswith(f"sparkdl 0.0.1, the driver has {sparkdl.__version__}")


def test_horovod_is_required_only_for_the_horovod_backend():
    lacks = answer(found=healthy(), missing={"horovod.torch": "ModuleNotFoundError: No "
                                             "module named 'horovod'"})
    assert problems_of(lacks, DRIVER, horovod=False) == []
    assert problems_of(lacks, DRIVER, horovod=True) == [
        "cannot import horovod.torch (ModuleNotFoundError: No module named 'horovod')"]
    message = describe([lacks], DRIVER, horovod=True)
    assert "backend='horovod' needs horovod.torch there; or set backend='torch'" in message


def test_the_message_names_interpreter_executors_and_settings():
    missing = {"sparkdl": "ModuleNotFoundError: No module named 'sparkdl'"}
    answers = [answer("1", healthy(), missing), answer("2", healthy(), missing),
               answer("3", healthy(), python="/opt/env/bin/python")]
    message = describe(answers, DRIVER, horovod=False)
    assert ("executors 1, 2 on node-7 ran /usr/bin/python3.11 (Python 3.11.2): cannot "
            "import sparkdl (ModuleNotFoundError: No module named 'sparkdl').") in message
    assert "executor 3" not in message  # that one can train
    assert "The driver asked for '/usr/bin/python3' (spark.pyspark.python" in message
    for setting in ("spark.pyspark.python", "PYSPARK_PYTHON", "spark.archives",
                    "--archives sparkdl-env.tar#environment", "make env-archive",
                    "python -m sparkdl.pack_env"):
        assert setting in message
    assert describe(answers[2:], DRIVER, horovod=False) is None


def test_the_message_says_when_spark_pyspark_python_was_not_applied():
    driver = DriverSide("0.1.0", "2.15.0", "/venv/bin/python", "python3", "/opt/env/bin/python")
    message = describe([answer(missing={"torch": "ModuleNotFoundError: x"})], driver, False)
    assert ("spark.pyspark.python='/opt/env/bin/python' is set but this SparkContext starts "
            "'python3'") in message


# Spark's own texts for a probe job that failed before the probe ran (Spark 4.3).
_NO_INTERPRETER = (
    "An error occurred while calling z:org.apache.spark.api.python.PythonRDD.collectAndServe.\n"
    ": org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 0.0 "
    "failed 1 times, most recent failure: Lost task 0.0 in stage 0.0 (TID 0) (192.0.2.2 "
    "executor 0): java.io.IOException: Cannot run program \"/nonexistent/python\": error=2, "
    "No such file or directory\n\tat java.base/java.lang.ProcessBuilder.start(ProcessBuilder"
    ".java:1143)\nCaused by: java.io.IOException: error=2, No such file or directory\n")
_OTHER_MINOR = (
    "An exception was thrown from the Python worker:\nTraceback (most recent call last):\n"
    "  File \".../pyspark.zip/pyspark/worker.py\", line 4174, in invoke_udf\n"
    "    check_python_version(init_info.python_version)\n"
    "pyspark.errors.exceptions.base.PySparkRuntimeError: [PYTHON_VERSION_MISMATCH] Python in "
    "worker has different version: 3.12 than that in driver: 3.11, PySpark cannot run with "
    "different minor versions.\nPlease check environment variables PYSPARK_PYTHON and "
    "PYSPARK_DRIVER_PYTHON are correctly set.\n")
_NO_PYSPARK = (
    "Job aborted due to stage failure: Task 0 in stage 1.0 failed 1 times, most recent failure:"
    " Lost task 0.0 in stage 1.0 (TID 1) (192.0.2.2 executor 0): org.apache.spark."
    "SparkException: \nError from python worker:\n  Traceback (most recent call last):\n"
    "    File \"/usr/lib/python2.7/runpy.py\", line 163, in _run_module_as_main\n"
    "      def since(version: Union[str, float]) -> Callable[[_F], _F]:\n"
    "  SyntaxError: invalid syntax\nPYTHONPATH was:\n  /x/pyspark.zip\n")


@pytest.mark.parametrize("text, executor, cause", [
    (_NO_INTERPRETER, "0", "java.io.IOException: Cannot run program \"/nonexistent/python\": "
                           "error=2, No such file or directory"),
    (_OTHER_MINOR, None, "pyspark.errors.exceptions.base.PySparkRuntimeError: "
                         "[PYTHON_VERSION_MISMATCH] Python in worker has different version: "
                         "3.12 than that in driver: 3.11, PySpark cannot run with different "
                         "minor versions."),
    (_NO_PYSPARK, "0", "SyntaxError: invalid syntax"),
])
def test_failure_cause_keeps_what_went_wrong(text, executor, cause):
    assert failure_cause(text) == (executor, cause)


def test_a_failed_probe_job_becomes_a_message_naming_the_setting():
    driver = DriverSide("0.1.0", "2.15.0", "/venv/bin/python", "/nonexistent/python")
    message = failed_probe_message(RuntimeError(_NO_INTERPRETER), driver)
    assert message.startswith("The executors could not run '/nonexistent/python' "
                              "(spark.pyspark.python / PYSPARK_PYTHON) for the sparkdl check "
                              "(executor 0): java.io.IOException: Cannot run program")
    assert "./environment/bin/python" in message


def test_probe_tasks_asks_every_executor_within_the_slots():
    assert probe_tasks(slots=2, num_workers=2, executors=2) == 2
    assert probe_tasks(slots=8, num_workers=1, executors=4) == 4
    assert probe_tasks(slots=3, num_workers=2, executors=10) == 3
    assert probe_tasks(slots=4, num_workers=2, executors=0) == 2  # local mode
