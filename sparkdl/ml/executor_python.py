"""Can the executors' Python run sparkdl? Asked in one small Spark job before a fit.

The training tasks run in the Python that Spark starts on each executor
(``spark.pyspark.python``, or ``PYSPARK_PYTHON`` when the SparkContext started;
``python3`` from the executor's ``PATH`` when neither is set). When that Python
lacks sparkdl or torch, or has other versions than the driver, the barrier job
would fail late with a raw ``Py4JJavaError``. :func:`check_executor_python` runs
one short, non-barrier job first (a task per executor, within the slots) whose
tasks look for what the training task imports (sparkdl, torch, pyarrow; and
horovod.torch for the Horovod backend) and report, as data, which interpreter ran,
on which executor, and what it lacked or has at another version than the driver. Any problem
becomes a :class:`~sparkdl.errors.ConfigError` naming the interpreter, the executor
and the settings that fix it. A success is remembered per application and
interpreter, so later fits in the same SparkContext pay nothing.

The Scala estimator asks the same question (``sparkdl.ml.ExecutorPython``).

Example::

    from sparkdl.ml.executor_python import check_executor_python

    check_executor_python(spark.sparkContext, tasks=2, horovod=False)
    # ConfigError: The executors' Python cannot run sparkdl: executor 0 on host-1 ran
    # /usr/bin/python3.11 (Python 3.11.2): cannot import sparkdl (ModuleNotFoundError:
    # No module named 'sparkdl'); ... Set spark.pyspark.python ...
"""

from __future__ import annotations

import builtins
import functools
import logging
import threading
import types
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pyspark import SparkContext

from sparkdl.errors import ConfigError

T = TypeVar("T")

log = logging.getLogger(__name__)

#: What every training task imports (the worker runtime, the compute engine, Arrow).
REQUIRED = ("sparkdl", "torch", "pyarrow")
#: Of those, what the check imports (the others it finds, reading their versions from
#: their distributions' metadata: importing torch would take seconds).
IMPORTED = ("sparkdl",)
#: What a task of the Horovod backend imports on top.
HOROVOD = "horovod.torch"
#: How long the check may take before it is cancelled (a cold ``import torch`` on a
#: slow disk takes seconds; a Python that does not answer in minutes is broken).
PROBE_TIMEOUT_S = 120.0

#: Successful checks: (applicationId, interpreter, horovod asked) -> the answers.
_KNOWN: dict[tuple[str, str, bool], list[dict]] = {}
_KNOWN_LOCK = threading.Lock()


def probe(modules: tuple[str, ...], imported: tuple[str, ...] = (),
          _rows: Iterable = ()) -> Iterator[dict]:
    """Runs on an executor: which Python this is, and which of ``modules`` it has.

    Finds each module without importing it (``importlib.util.find_spec``) and
    reads its version from the installed distribution's metadata: ``import torch``
    takes seconds and hundreds of MB in a Python worker that Spark keeps for later
    tasks, and the training ranks import torch in processes of their own anyway.
    The names in ``imported`` are imported too (sparkdl: light, and it proves the
    package is whole). Uses only the standard library, and reports what is missing
    as data (``missing``), never by raising, so that the driver can say which
    interpreter lacked what. Shipped by value (:func:`shipped_probe`): unpickling
    it on the executor does not import sparkdl.

    Args:
        modules: module names, e.g. ``("sparkdl", "torch", "horovod.torch")``.
        imported: those of ``modules`` to import as well.
        _rows: the partition's rows (ignored; it is a ``mapPartitions`` function).

    Yields:
        One dict: ``python`` (``sys.executable``), ``python_version``, ``executor``,
        ``host``, ``found`` (name -> version, ``"unknown"`` without metadata) and
        ``missing`` (name -> error text).

    Example:
        >>> facts = next(probe(("json", "no_such_module_x"), imported=("json",)))
        >>> sorted(facts), facts["missing"]
        (['executor', 'found', 'host', 'missing', 'python', 'python_version'], \
{'no_such_module_x': "ModuleNotFoundError: No module named 'no_such_module_x'"})
    """
    import importlib
    import importlib.metadata
    import importlib.util
    import os
    import socket
    import sys

    found, missing = {}, {}
    for name in modules:
        top = name.split(".")[0]
        try:
            # find_spec imports the parent packages of a dotted name (horovod for
            # horovod.torch), which is what the Scala estimator's check does too.
            if name in imported:
                importlib.import_module(name)
            elif importlib.util.find_spec(name) is None:
                raise ModuleNotFoundError(f"No module named {name!r}")
        except Exception as exc:  # noqa: BLE001 - a broken install may raise anything
            missing[name] = f"{type(exc).__name__}: {exc}".strip()[:300]
            continue
        version = getattr(sys.modules.get(top), "__version__", None) if name in imported \
            else None
        if not version:
            try:
                version = importlib.metadata.version(top)
            except Exception:  # noqa: BLE001 - no metadata (a source tree on the path)
                version = "unknown"
        found[name] = str(version)
    # The executor id is not on Python's TaskContext: Spark names the executor's
    # working directory after it (.../app-xxx/<id>), some managers also set it in env;
    # a Spark Connect session's workers run in <id>/<SPARK_JOB_ARTIFACT_UUID>.
    where = os.getcwd()
    if os.path.basename(where) == os.environ.get("SPARK_JOB_ARTIFACT_UUID"):
        where = os.path.dirname(where)
    executor = os.environ.get("SPARK_EXECUTOR_ID") or os.path.basename(where)
    yield {"python": sys.executable, "python_version": sys.version.split()[0],
           "executor": executor, "host": socket.gethostname(),
           "found": found, "missing": missing}


def shipped_probe(modules: tuple[str, ...],
                  imported: tuple[str, ...] = ()) -> Callable[[Iterable], Iterator[dict]]:
    """:func:`probe` for ``modules``, in a form cloudpickle ships by value.

    A function of an importable module is pickled by reference, so unpickling it
    on an executor imports sparkdl first, and fails where sparkdl is missing,
    which is the very case to report. A copy whose globals hold only the
    builtins (and whose module is not importable) travels as code.

    Example:
        >>> from pyspark import cloudpickle
        >>> blob = cloudpickle.dumps(shipped_probe(("json",)))
        >>> b"sparkdl.ml.executor_python" in blob
        False
    """
    code = types.FunctionType(probe.__code__, {"__builtins__": builtins,
                                               "__name__": "sparkdl_executor_probe"},
                              "probe", probe.__defaults__)
    return functools.partial(code, modules, imported)


@dataclass(frozen=True)
class DriverSide:
    """What the executors are compared with: the driver's versions and setting.

    Attributes:
        sparkdl: the driver's sparkdl version (must be equal on the executors).
        torch: the driver's torch version (major.minor must be equal).
        python: the driver's interpreter (``sys.executable``).
        executor_python: the interpreter the driver tells executors to start
            (``SparkContext.pythonExec``: ``PYSPARK_PYTHON`` when the SparkContext
            started, which spark-submit sets from ``spark.pyspark.python``).
        conf_python: ``spark.pyspark.python`` as configured, or None.
    """

    sparkdl: str
    torch: str
    python: str
    executor_python: str
    conf_python: str | None = None

    @classmethod
    def of(cls, sc: SparkContext) -> DriverSide:
        """The driver's side for ``sc``."""
        import sys

        import torch

        import sparkdl

        return cls(sparkdl.__version__, str(torch.__version__), sys.executable,
                   str(sc.pythonExec), sc.getConf().get("spark.pyspark.python"))


def _major_minor(version: str) -> str:
    """``"2.15.0+cu132"`` -> ``"2.15"``."""
    return ".".join(version.split("+")[0].split(".")[:2])


def problems_of(answer: dict, driver: DriverSide, horovod: bool) -> list[str]:
    """What one executor's answer lacks, or has at another version than the driver.

    Args:
        answer: one dict yielded by :func:`probe`.
        driver: the driver's versions.
        horovod: whether the fit's backend is Horovod (``horovod.torch`` required).

    Returns:
        Problems in words; empty when this executor can train.

    Example:
        >>> d = DriverSide("0.1.0", "2.15.0", "/venv/bin/python", "python3")
        >>> for p in problems_of({"found": {"sparkdl": "0.0.9", "torch": "2.4.1"},
        ...                       "missing": {}}, d, horovod=False):
        ...     print(p)
        sparkdl 0.0.9, the driver has 0.1.0 (they must be equal)
        torch 2.4.1, the driver has 2.15.0 (major.minor must be equal)
        >>> problems_of({"found": {}, "missing": {"sparkdl": "ModuleNotFoundError: x"}}, d,
        ...             horovod=False)
        ['cannot import sparkdl (ModuleNotFoundError: x)']
    """
    found, missing = answer.get("found", {}), answer.get("missing", {})
    out = [f"cannot import {name} ({error})" for name, error in missing.items()
           if name in REQUIRED or horovod]
    if "sparkdl" in found and found["sparkdl"] != driver.sparkdl:
        out.append(f"sparkdl {found['sparkdl']}, the driver has {driver.sparkdl} "
                   "(they must be equal)")
    if "torch" in found and _major_minor(found["torch"]) != _major_minor(driver.torch):
        out.append(f"torch {found['torch']}, the driver has {driver.torch} "
                   "(major.minor must be equal)")
    return out


def _fix(driver: DriverSide) -> str:
    ignored = ""
    if driver.conf_python and driver.conf_python != driver.executor_python:
        ignored = (f"spark.pyspark.python={driver.conf_python!r} is set but this SparkContext "
                   f"starts {driver.executor_python!r}: pyspark applies that setting through "
                   "spark-submit only. ")
    return (f"{ignored}To fix: set spark.pyspark.python to a Python with sparkdl "
            f"{driver.sparkdl} and torch {_major_minor(driver.torch)}.x present on every "
            "executor host (spark-submit --conf spark.pyspark.python=...; a Python process "
            "that starts its own SparkSession reads PYSPARK_PYTHON instead, set it before the "
            "session starts), or ship an environment with the job: pack one with "
            "`python -m sparkdl.pack_env --wheel <sparkdl wheel> --output sparkdl-env.tar` "
            "(`make env-archive` in the source tree), then spark-submit --archives "
            "sparkdl-env.tar#environment --conf spark.pyspark.python=./environment/bin/python "
            f"(spark.archives). The driver runs {driver.python}.")


def describe(answers: list[dict], driver: DriverSide, horovod: bool) -> str | None:
    """The error message for the executors' answers, or None when all can train.

    Executors with the same interpreter and the same problems are named together.

    Example:
        >>> d = DriverSide("0.1.0", "2.15.0", "/venv/bin/python", "/usr/bin/python3")
        >>> a = {"python": "/usr/bin/python3.11", "python_version": "3.11.2", "host": "h",
        ...      "found": {}, "missing": {"sparkdl": "ModuleNotFoundError: No module named "
        ...                                          "'sparkdl'"}}
        >>> message = describe([dict(a, executor="0"), dict(a, executor="1")], d, False)
        >>> ("executors 0, 1 on h ran /usr/bin/python3.11 (Python 3.11.2): cannot import "
        ...  "sparkdl (ModuleNotFoundError: No module named 'sparkdl').") in message
        True
        >>> "set spark.pyspark.python" in message and "--archives sparkdl-env.tar" in message
        True
    """
    groups: dict[tuple, list[str]] = {}
    for answer in answers:
        found = problems_of(answer, driver, horovod)
        if found:
            key = (answer.get("host", "?"), answer.get("python", "?"),
                   answer.get("python_version", "?"), tuple(found))
            groups.setdefault(key, [])
            if answer.get("executor") not in groups[key]:
                groups[key].append(str(answer.get("executor", "?")))
    if not groups:
        return None
    lines = []
    for (host, python, version, found), executors in groups.items():
        who = f"executor{'s' if len(executors) > 1 else ''} {', '.join(sorted(executors))}"
        lines.append(f"{who} on {host} ran {python} (Python {version}): {'; '.join(found)}.")
    hint = ""
    if horovod and any(HOROVOD in "".join(k[3]) for k in groups):
        hint = " (backend='horovod' needs horovod.torch there; or set backend='torch')"
    return (f"The executors' Python cannot run sparkdl: {' '.join(lines)}{hint} "
            f"The driver asked for {driver.executor_python!r} (spark.pyspark.python / "
            f"PYSPARK_PYTHON). {_fix(driver)}")


def failure_cause(text: str) -> tuple[str | None, str]:
    """The executor and the reason in the text of a Spark job that failed in Python's
    start: the Python worker's own error line where there is a traceback, else the
    reason Spark gave for the lost task (e.g. it could not run the interpreter).

    Example:
        >>> failure_cause('Job aborted: ... most recent failure: Lost task 0.0 in stage 0.0 '
        ...               '(TID 0) (10.0.0.7 executor 1): java.io.IOException: Cannot run '
        ...               'program "x": error=2, No such file or directory\\n\\tat java.x')
        ('1', 'java.io.IOException: Cannot run program "x": error=2, No such file or directory')
        >>> failure_cause("Error from python worker:\\n  Traceback (most recent call last):\\n"
        ...               "    File \\"a.py\\", line 1\\n  SyntaxError: invalid syntax\\n")
        (None, 'SyntaxError: invalid syntax')
    """
    import re

    executor = re.search(r"\(TID \d+\) \(\S+ executor (\w+)\)", text)
    lines = [line.strip() for line in text.splitlines()]
    cause = ""
    traceback = max((i for i, line in enumerate(lines) if line.startswith("Traceback (")),
                    default=None)
    if traceback is not None:  # the Python worker's error: its first exception line
        cause = next((line for line in lines[traceback + 1:]
                      if re.match(r"[\w.]*(Error|Exception|Exit|Interrupt)\b", line)), "")
        # pyspark's own errors go on for a line ("Please check ... PYSPARK_PYTHON").
    if not cause:
        lost = re.search(r"most recent failure: Lost task [^\n]*?executor \w+\): ([^\n]+)",
                         text)
        cause = lost.group(1).strip() if lost else next((line for line in lines if line), "")
    return (executor.group(1) if executor else None), cause[:600]


def failed_probe_message(error: BaseException, driver: DriverSide) -> str:
    """The error message when the check's job itself failed: the executors could
    not start the interpreter, or pyspark's worker in it.

    Example:
        >>> d = DriverSide("0.1.0", "2.15.0", "/venv/bin/python", "./env/bin/python")
        >>> message = failed_probe_message(RuntimeError("Error from python worker:\\n  Tr"
        ...     "aceback (most recent call last):\\n  SyntaxError: invalid syntax"), d)
        >>> message.split(" check: ")[1].split(". ")[0]
        'SyntaxError: invalid syntax'
        >>> "'./env/bin/python' (spark.pyspark.python / PYSPARK_PYTHON)" in message
        True
    """
    executor, cause = failure_cause(str(error))
    where = f" (executor {executor})" if executor else ""
    return (f"The executors could not run {driver.executor_python!r} (spark.pyspark.python / "
            f"PYSPARK_PYTHON) for the sparkdl check{where}: {cause or type(error).__name__}. "
            f"{_fix(driver)}")


def probe_tasks(slots: int, num_workers: int, executors: int) -> int:
    """How many probe tasks: one per executor (so each is asked), at least
    ``num_workers``, never more than fit at once.

    Example:
        >>> probe_tasks(slots=16, num_workers=2, executors=4), probe_tasks(2, 2, 1)
        (4, 2)
    """
    return max(1, min(slots, max(num_workers, executors)))


def executor_count(sc: SparkContext) -> int:
    """Executors registered now, the driver not counted (0 in local mode)."""
    return max(0, len(sc._jsc.sc().statusTracker().getExecutorInfos()) - 1)


def check_for_fit(sc: SparkContext, slots: int, num_workers: int, backend: str) -> None:
    """:func:`check_executor_python` as ``fit`` runs it, after the capacity check.

    Example::

        slots = check_capacity(sc, 2)
        check_for_fit(sc, slots, num_workers=2, backend="torch")
    """
    check_executor_python(sc, probe_tasks(slots, num_workers, executor_count(sc)),
                          horovod=backend == "horovod")


def run_with_deadline(job: Callable[[], T], add_tag: Callable[[str], None],
                      remove_tag: Callable[[str], None], cancel_tag: Callable[[str], object],
                      timeout_s: float) -> T:
    """Run ``job`` under a fresh job tag; cancel the tag's jobs after ``timeout_s``.

    The tag calls are a classic SparkContext's (``addJobTag``, ``removeJobTag``,
    ``cancelJobsWithTag``) or a Spark Connect session's (``addTag``, ``removeTag``,
    ``interruptTag``).

    Cancelling ends the job for the driver at once. A task stuck in starting an
    interpreter that never answers keeps its slot until that process exits (Spark
    cannot interrupt the read), which is why the fit stops with a ConfigError rather
    than going on to a barrier job that would wait for the slot.

    Raises:
        TimeoutError: it was cancelled at the deadline.
        Exception: whatever Spark raised when the job failed.
    """
    tag = f"sparkdl-python-check-{uuid.uuid4().hex[:8]}"
    timed_out = threading.Event()

    def cancel() -> None:
        timed_out.set()
        cancel_tag(tag)

    timer = threading.Timer(timeout_s, cancel)
    timer.daemon = True
    add_tag(tag)
    timer.start()
    try:
        return job()
    except Exception:
        if timed_out.is_set():
            raise TimeoutError from None
        raise
    finally:
        timer.cancel()
        remove_tag(tag)


def _run_probe(sc: SparkContext, tasks: int, modules: tuple[str, ...],
               timeout_s: float) -> list[dict]:
    """The probe job on a classic SparkContext, cancelled after ``timeout_s``."""
    description = sc.getLocalProperty("spark.job.description")
    sc.setJobDescription("sparkdl: does the executors' Python import sparkdl and torch?")
    try:
        return run_with_deadline(
            lambda: sc.parallelize(range(tasks), tasks).mapPartitions(
                shipped_probe(modules, IMPORTED)).collect(),
            sc.addJobTag, sc.removeJobTag, sc.cancelJobsWithTag, timeout_s)
    finally:
        sc.setLocalProperty("spark.job.description", description)  # None clears it


def check_executor_python(sc: SparkContext, tasks: int, horovod: bool,
                          timeout_s: float = PROBE_TIMEOUT_S) -> list[dict]:
    """Fail in seconds unless the executors' Python can run sparkdl's training tasks.

    Runs once per application, interpreter and need for Horovod; later calls
    return the remembered answers without a job.

    Args:
        sc: the fit's SparkContext.
        tasks: how many probe tasks (:func:`probe_tasks`).
        horovod: whether the fit's backend is Horovod (so ``horovod.torch`` is needed).
        timeout_s: the deadline for the check's job.

    Returns:
        The executors' answers (dicts of :func:`probe`).

    Raises:
        ConfigError: naming the interpreter the executors ran, on which executor,
            what it lacked or which version differed, and the settings that fix it.

    Example::

        check_executor_python(spark.sparkContext, tasks=2, horovod=False)
    """
    return checked(sc.applicationId, DriverSide.of(sc), tasks, horovod,
                   functools.partial(_run_probe, sc), lambda: sc._jsc.sc().isStopped(),
                   timeout_s)


def checked(app_id: str, driver: DriverSide, tasks: int, horovod: bool,
            run: Callable[[int, tuple[str, ...], float], list[dict]],
            stopped: Callable[[], bool], timeout_s: float = PROBE_TIMEOUT_S) -> list[dict]:
    """The check for either kind of session: ``run`` is its probe job.

    A classic session runs :func:`_run_probe` (an RDD job through py4j), a Spark
    Connect session a DataFrame job (:func:`sparkdl.session.connect.run_probe`); the
    answers, the errors and the cache are the same.

    Args:
        app_id: the application (the cache's key, with the interpreter and ``horovod``).
        driver: what the executors are compared with.
        tasks: how many probe tasks.
        horovod: whether ``horovod.torch`` is needed.
        run: ``run(tasks, modules, timeout_s)`` -> the probe's answers.
        stopped: whether the session stopped (a failed job then is not a Python problem).
        timeout_s: the deadline for the check's job.

    Raises:
        ConfigError: as :func:`check_executor_python` says.

    Example::

        checked("app-1", DriverSide.of(sc), 2, False, functools.partial(_run_probe, sc),
                lambda: False)
    """
    key = (app_id, driver.executor_python, horovod)
    with _KNOWN_LOCK:
        if key in _KNOWN:
            return _KNOWN[key]
    modules = REQUIRED + ((HOROVOD,) if horovod else ())
    try:
        answers = run(tasks, modules, timeout_s)
    except TimeoutError:
        raise ConfigError(
            f"The executors' Python ({driver.executor_python!r}, spark.pyspark.python / "
            f"PYSPARK_PYTHON) did not answer the sparkdl check within {timeout_s:g} s "
            f"({tasks} tasks looking for {', '.join(modules)}). {_fix(driver)}") from None
    except Exception as exc:  # Py4JJavaError / PythonException: the worker did not start
        if stopped():
            raise
        raise ConfigError(failed_probe_message(exc, driver)) from exc
    message = describe(answers, driver, horovod)
    if message:
        raise ConfigError(message)
    log.info("sparkdl: the executors' Python %s has %s", driver.executor_python,
             ", ".join(modules))
    with _KNOWN_LOCK:
        _KNOWN[key] = answers
    return answers
