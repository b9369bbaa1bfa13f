"""Training from and saving to a real HDFS (MiniDFSCluster started by the tests)."""

from __future__ import annotations

import json
import urllib.request

import pytest
import torch
from pyspark.sql import functions as F

from sparkdl import TorchEstimator
from sparkdl.ml.model import TorchModel

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def accuracy(df) -> float:
    return df.select(F.avg((F.col("prediction") == F.col("label")).cast("double"))).first()[0]


@pytest.mark.parametrize("fmt", ["parquet", "orc"])
def test_fit_from_hdfs_and_save_the_model_there(spark, hdfs, digits, fmt):
    train, test = digits
    path = f"{hdfs.uri}/data/digits-{fmt}"
    train.write.mode("overwrite").format(fmt).save(path)
    df = spark.read.format(fmt).load(path)
    model = TorchEstimator(model=mlp, optimizerParams={"lr": 1e-2}, batchSize=32, epochs=10,
                           numWorkers=2, seed=1, backend="torch").fit(df)
    assert accuracy(model.transform(test)) >= 0.93

    saved = f"{hdfs.uri}/models/digits-{fmt}"
    model.write().overwrite().save(saved)
    # what the Hadoop FileSystem API wrote is really in HDFS, as WebHDFS lists it
    listing = json.loads(urllib.request.urlopen(
        f"{hdfs.webhdfs}/webhdfs/v1/models/digits-{fmt}?op=LISTSTATUS").read())
    names = {f["pathSuffix"] for f in listing["FileStatuses"]["FileStatus"]}
    assert "weights.safetensors" in names, names
    loaded = TorchModel.load(saved)
    before = [r.prediction for r in model.transform(test).orderBy("features").collect()]
    after = [r.prediction for r in loaded.transform(test).orderBy("features").collect()]
    assert before == after
