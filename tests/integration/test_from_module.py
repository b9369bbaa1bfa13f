"""Scoring models trained elsewhere (issue 18): ``TorchModel.fromModule``,
``fromTorchScript`` and ``fromSpec`` score a DataFrame on local-cluster as a
fitted model does, and save and load with identical predictions."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from pyspark.ml.linalg import DenseVector, VectorUDT
from pyspark.sql.types import LongType, StructField, StructType
from safetensors.torch import save_file

from sparkdl import TorchModel, UntrustedCodeError
from sparkdl.nn import Dense, Input, Sequential

pytestmark = [pytest.mark.spark]

ROWS = 24


def mlp() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def spec() -> Sequential:
    return Sequential([Input((4,)), Dense(8, activation="tanh"), Dense(3)])


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(ROWS, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def df(spark, features):
    rows = [(i, DenseVector(x.astype(np.float64))) for i, x in enumerate(features)]
    schema = StructType([StructField("id", LongType()), StructField("features", VectorUDT())])
    return spark.createDataFrame(rows, schema).repartition(2)


def build(kind: str, tmp_path) -> tuple[TorchModel, torch.nn.Module]:
    """The model from one constructor, and the torch module it should match."""
    if kind == "module":
        net = mlp()
        return TorchModel.fromModule(net, task="multiclass", batchSize=5), net
    if kind == "torchscript":
        net = mlp()
        path = str(tmp_path / "net.pt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.script(net), path)
        return TorchModel.fromTorchScript(path, featureShape=[4], task="multiclass",
                                          batchSize=5), net
    torch.manual_seed(4)
    net = spec().build()
    save_file({k: v.clone() for k, v in net.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    return TorchModel.fromSpec(spec().to_json(), str(tmp_path / "w.safetensors"),
                               task="multiclass", batchSize=5), net


def scored(model: TorchModel, df) -> dict[int, tuple]:
    return {r.id: (r.prediction, tuple(r.probability), tuple(r.rawPrediction))
            for r in model.transform(df).collect()}


@pytest.mark.parametrize("kind", ["module", "torchscript", "spec"])
def test_scores_like_torch_and_round_trips(spark, df, features, tmp_path, kind):
    model, net = build(kind, tmp_path)
    out = scored(model, df)
    with torch.no_grad():
        logits = net.eval()(torch.from_numpy(features)).numpy().astype(np.float64)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert sorted(out) == list(range(ROWS))
    for i in range(ROWS):
        prediction, probability, raw = out[i]
        assert prediction == float(logits[i].argmax())
        np.testing.assert_allclose(raw, logits[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(probability, probs[i], rtol=1e-5, atol=1e-6)
    assert isinstance(model.transform(df).schema["probability"].dataType, VectorUDT)

    path = str(tmp_path / "saved")
    model.save(path)
    loaded = TorchModel.load(path, trusted=kind != "spec")
    assert loaded._architecture == model._architecture and loaded.version == model.version
    assert loaded.history.epochs == [] and loaded.getBatchSize() == 5
    assert scored(loaded, df) == out


def test_untrusted_loads_refuse_torchscript_and_pickled_modules(spark, tmp_path):
    script, _ = build("torchscript", tmp_path)
    script.save(str(tmp_path / "script"))
    with pytest.raises(UntrustedCodeError, match="torchscript.pt"):
        TorchModel.load(str(tmp_path / "script"), trusted=False)
    assert TorchModel.load(str(tmp_path / "script"))._architecture.kind == "torchscript"
    module, _ = build("module", tmp_path)
    module.save(str(tmp_path / "module"))
    with pytest.raises(UntrustedCodeError, match="architecture.pkl"):
        TorchModel.load(str(tmp_path / "module"), trusted=False)


def test_streaming_scores_as_batch_does(spark, df, tmp_path):
    model, _ = build("torchscript", tmp_path)
    source = str(tmp_path / "in")
    df.write.parquet(source)
    stream = spark.readStream.schema(df.schema).parquet(source)
    query = (model.transform(stream).select("id", "prediction")
             .writeStream.format("memory").queryName("from_module_scored").start())
    try:
        query.processAllAvailable()
    finally:
        query.stop()
    streamed = {r.id: r.prediction for r in spark.table("from_module_scored").collect()}
    assert streamed == {i: v[0] for i, v in scored(model, df).items()}


_GPU_JOB = textwrap.dedent("""
    import json, os, sys
    import torch
    from pyspark.sql import SparkSession
    from sparkdl import TorchModel

    class OnCuda(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, x):
            return self.linear(x) * 0 + float(x.is_cuda)

    os.environ["PYSPARK_PYTHON"] = sys.executable
    discovery = sys.argv[1]
    spark = (SparkSession.builder.master("local-cluster[1,1,4096]")
             .config("spark.ui.enabled", "false")
             .config("spark.worker.resource.gpu.amount", "1")
             .config("spark.worker.resource.gpu.discoveryScript", discovery)
             .config("spark.executor.resource.gpu.amount", "1")
             .config("spark.executor.resource.gpu.discoveryScript", discovery)
             .config("spark.task.resource.gpu.amount", "1").getOrCreate())
    try:
        df = spark.createDataFrame([([1.0, 2.0],)] * 8, "features array<float>")
        model = TorchModel.fromModule(OnCuda(), task="regression")
        print(json.dumps([r.prediction for r in model.transform(df).collect()]))
    finally:
        spark.stop()
""")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_transform_runs_on_the_gpu_spark_assigned(tmp_path):
    discovery = tmp_path / "gpus.sh"
    discovery.write_text('#!/bin/sh\necho \'{"name": "gpu", "addresses": ["0"]}\'\n')
    discovery.chmod(0o755)
    job = tmp_path / "score_on_gpu.py"
    job.write_text(_GPU_JOB)
    done = subprocess.run([sys.executable, str(job), str(discovery)], capture_output=True,
                          text=True, timeout=600, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [1.0] * 8
