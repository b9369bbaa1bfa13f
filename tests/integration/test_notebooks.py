"""The notebooks under ``notebooks/``, each run as its platform would run it.

* ``quickstart.ipynb``: executed cell by cell by nbclient on a real Jupyter kernel of
  this environment (outputs regenerated; an error fails the test).
* ``databricks/digits.py`` (Databricks source format): its Python cells run in order
  with ``spark`` a Spark Connect session, as on shared and serverless compute, and
  small stand-ins for ``display`` and ``dbutils`` (magic cells, ``%md``/``%pip``, are
  what Databricks itself runs, so they are skipped).
* ``zeppelin/sparkdl_digits.zpln``: its ``%spark.pyspark`` paragraphs run in order in
  one Python namespace with ``spark`` (as Zeppelin's pyspark interpreter does), its
  ``%spark`` paragraph in a real Scala REPL (``spark-shell -i`` with sparkdl's jar)
  between them, on the same file system. Zeppelin runs both languages in one
  SparkContext; here they are two applications of ``local-cluster`` on this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

pytestmark = [pytest.mark.spark, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


def test_quickstart_notebook_runs_on_a_jupyter_kernel(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs) + "".join(
        o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "test accuracy: 0.9" in text and "reloaded predictions identical: True" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # history.plot()
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for o in outputs)  # the live bar, a widget in Jupyter


def databricks_cells(path: Path) -> list[str]:
    """The Python cells of a Databricks source-format notebook, in order."""
    header = "# Databricks notebook source\n"
    text = path.read_text()
    assert text.startswith(header), f"{path} is not in Databricks source format"
    cells = []
    for cell in text[len(header):].split("\n# COMMAND ----------\n"):
        lines = cell.strip("\n").splitlines()
        if all(line.startswith("# MAGIC") or not line.strip() for line in lines):
            continue  # %md, %pip: Databricks' own
        cells.append("\n".join(lines))
    return cells


FileInfo = namedtuple("FileInfo", "path name size modificationTime")


class DbUtils:
    """What the notebook uses of Databricks' ``dbutils``, on local paths."""

    def __init__(self, widgets: dict[str, str]) -> None:
        self.values = dict(widgets)
        self.widgets = self
        self.fs = self

    def text(self, name: str, default: str, label: str = "") -> None:
        self.values.setdefault(name, default)

    def get(self, name: str) -> str:
        return self.values[name]

    def ls(self, path: str) -> list[FileInfo]:
        return [FileInfo(f"file:{path}/{n}", n + ("/" if os.path.isdir(f"{path}/{n}") else ""),
                         os.path.getsize(f"{path}/{n}"), 0) for n in sorted(os.listdir(path))]


def test_databricks_notebook_runs_over_spark_connect(connect, remote_mode, tmp_path):
    shown = []
    namespace = {"spark": connect, "display": shown.append,
                 "dbutils": DbUtils({"model_dir": str(tmp_path / "model"), "workers": "2"})}
    path = NOTEBOOKS / "databricks" / "digits.py"
    with remote_mode():
        for index, cell in enumerate(databricks_cells(path)):
            exec(compile(cell, f"{path}:cell {index + 1}", "exec"), namespace)  # noqa: S102
    assert namespace["accuracy"] >= 0.95 and namespace["same"] is True
    assert len(shown) == 3 and type(shown[1]).__name__ == "Figure"
    assert (tmp_path / "model" / "weights.safetensors").exists()


def test_zeppelin_note_runs_its_python_and_scala_paragraphs(spark, tmp_path, monkeypatch):
    from sparkdl.jvm import jar_path

    note = json.loads((NOTEBOOKS / "zeppelin" / "sparkdl_digits.zpln").read_text())
    monkeypatch.setenv("SPARKDL_NOTE_DIR", str(tmp_path))
    namespace = {"spark": spark, "sc": spark.sparkContext}
    kinds = []
    for paragraph in note["paragraphs"]:
        interpreter, _, body = paragraph["text"].partition("\n")
        kinds.append(interpreter)
        if interpreter == "%spark.pyspark":
            exec(compile(body, paragraph["id"], "exec"), namespace)  # noqa: S102
        elif interpreter == "%spark":
            script = tmp_path / "paragraph.scala"
            script.write_text(body + "\n")
            shell = Path(sys.executable).parent / "spark-shell"
            run = subprocess.run(
                [str(shell), "--master", "local-cluster[2,1,1024]", "--jars", str(jar_path()),
                 "--conf", f"spark.pyspark.python={sys.executable}",
                 "--conf", "spark.ui.enabled=false", "-i", str(script)],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
                env={**os.environ, "PYSPARK_PYTHON": sys.executable})
            assert "scala test accuracy: 0.9" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
            assert "error:" not in run.stdout, run.stdout[-3000:]
    assert kinds == ["%md", "%spark.pyspark", "%spark", "%spark.pyspark"]
    assert namespace["accuracy"] >= 0.9 and namespace["scala_accuracy"] >= 0.9


def test_data_sources_notebook_trains_from_hdfs_and_scores_kafka(hdfs, kafka, tmp_path,
                                                                 monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    topic = f"notebook-digits-{os.getpid()}"
    kafka.create_topic(topic, partitions=2)
    monkeypatch.setenv("SPARKDL_HDFS", hdfs.uri)
    monkeypatch.setenv("SPARKDL_WEBHDFS", hdfs.webhdfs)
    monkeypatch.setenv("KAFKA_BOOTSTRAP", kafka.bootstrap)
    monkeypatch.setenv("KAFKA_TOPIC", topic)
    notebook = nbformat.read(NOTEBOOKS / "data_sources.ipynb", as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for o in cell.outputs)
    assert "training rows from hdfs://" in text and "records from Kafka, accuracy 0.9" in text
