"""Train on a GPU assigned by Spark (run by test_gpu.py in its own process).

A separate process because GPU scheduling needs its own SparkContext with
``spark.{executor,task}.resource.gpu.*`` set, and a process has one context.
"""

import json
import os
import sys

import torch
from pyspark.sql import SparkSession

from sparkdl import TorchEstimator


def main(discovery: str) -> None:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (SparkSession.builder.master("local-cluster[1,1,4096]")
             .config("spark.ui.enabled", "false")
             .config("spark.worker.resource.gpu.amount", "1")
             .config("spark.worker.resource.gpu.discoveryScript", discovery)
             .config("spark.executor.resource.gpu.amount", "1")
             .config("spark.executor.resource.gpu.discoveryScript", discovery)
             .config("spark.task.resource.gpu.amount", "1").getOrCreate())
    try:
        df = spark.createDataFrame([([float(i % 2), 1.0], i % 2) for i in range(200)],
                                   "features array<float>, label int")
        model = TorchEstimator(model=torch.nn.Linear(2, 2), optimizerParams={"lr": 0.1},
                               epochs=5, numWorkers=1).fit(df)
        acc = model.transform(df).selectExpr("avg(cast(prediction = label as double))").first()[0]
        print(json.dumps({"workers": model.history.workers, "accuracy": acc}))
    finally:
        spark.stop()


if __name__ == "__main__":
    main(sys.argv[1])
