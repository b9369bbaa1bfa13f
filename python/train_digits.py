"""Train an MLP and a small CNN on the handwritten digits, across 2 Spark executors.

The digits data set ships inside scikit-learn (1797 8x8 images), so nothing is
downloaded; ``--data`` reads the same rows from Parquet instead (any Spark path, e.g.
on HDFS, so the driver needs no scikit-learn). The job trains both networks
data-parallel on ``local-cluster[2,1,1024]`` (two executor JVMs, one rank each),
prints per-epoch loss and accuracy, scores the held-out test set, writes it to
Parquet, saves the CNN, reloads it and checks that the reloaded model predicts
exactly the same.

Run it with ``make demo``, or::

    .venv/bin/python python/train_digits.py --output out/digits
    .venv/bin/python python/train_digits.py --remote sc://127.0.0.1:15002  # Spark Connect
    spark-submit --master 'local-cluster[2,1,1024]' python/train_digits.py
    spark-submit --master yarn ... python/train_digits.py \
        --data hdfs:///data/digits.parquet --output hdfs:///runs/digits
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkdl import TorchEstimator, TorchModel

MIN_ACCURACY = 0.95


def mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )


def cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 2 * 2, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )


def digits(spark: SparkSession, path: str | None = None) -> DataFrame:
    """The digits as (features array<float>[64], label long): from Parquet at ``path``
    (as deploy/local/submit_scala_digits.sh writes it), else from scikit-learn."""
    if path:
        return spark.read.parquet(path).select(
            F.col("features").cast("array<float>").alias("features"),
            F.col("label").cast("long").alias("label"))
    from sklearn.datasets import load_digits  # only here: a cluster's Python may lack it

    data = load_digits()
    rows = [((image / 16.0).tolist(), int(label))
            for image, label in zip(data.data, data.target)]
    return spark.createDataFrame(rows, "features array<float>, label long")


def accuracy(scored: DataFrame) -> float:
    return scored.select(F.avg((F.col("prediction") == F.col("label")).cast("double"))).first()[0]


def train(name: str, est: TorchEstimator, train_df: DataFrame, test_df: DataFrame):
    print(f"\n== {name}: {est.getOrDefault('numWorkers')} workers ==")
    model = est.fit(train_df)  # verbose=2: a line per epoch as rank 0 reports it
    acc = accuracy(model.transform(test_df))
    print(f"{name} test accuracy: {acc:.4f}  (backend={model.history.backend}, executors="
          f"{[w['executor_id'] for w in model.history.workers]})")
    return model, acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--master", default=None,
                        help="Spark master (default: local-cluster[2,1,1024] unless "
                             "spark-submit set one)")
    parser.add_argument("--output", default="out/digits",
                        help="where results are written (a local directory or any Spark "
                             "path, e.g. hdfs:///runs/digits)")
    parser.add_argument("--data", default=None,
                        help="Parquet of the digits (features, label), any Spark path "
                             "(default: scikit-learn's copy, built on the driver)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--remote", default=None, metavar="sc://HOST:PORT",
                        help="run through this Spark Connect server instead (the same code "
                             "from a thin client; paths are on the server's file system)")
    args = parser.parse_args(argv)

    if args.remote:
        spark = SparkSession.builder.remote(args.remote).getOrCreate()
        return run(spark, args)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.appName("sparkdl-digits").config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false"))
    # Under spark-submit (and in YARN's application master) pyspark joins the JVM that
    # launched it, named by PYSPARK_GATEWAY_PORT, whose --master must win; SparkConf()
    # cannot tell, as it sees no settings before the SparkContext exists.
    if args.master or "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(args.master or "local-cluster[2,1,1024]")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return run(spark, args)


def run(spark: SparkSession, args: argparse.Namespace) -> int:
    """The job, on a classic or a Spark Connect session alike."""
    try:
        train_df, test_df = digits(spark, args.data).randomSplit([0.8, 0.2], seed=7)
        common = dict(loss="cross_entropy", optimizer="adam", batchSize=32,
                      numWorkers=args.workers, seed=42, validationFraction=0.1, verbose=2)
        _, mlp_acc = train("MLP", TorchEstimator(model=mlp, epochs=20,
                                                 optimizerParams={"lr": 3e-3}, **common),
                           train_df, test_df)
        cnn_model, cnn_acc = train("CNN", TorchEstimator(model=cnn, epochs=20,
                                                         featureShape=[1, 8, 8],
                                                         optimizerParams={"lr": 3e-3},
                                                         **common),
                                   train_df, test_df)

        # a URI (hdfs://...) as given; a local directory made absolute for the messages
        output = args.output if "://" in args.output else os.path.abspath(args.output)
        scored_path = f"{output}/test_scored.parquet"
        model_path = f"{output}/cnn_model"
        scored = cnn_model.transform(test_df)
        scored.write.mode("overwrite").parquet(scored_path)
        cnn_model.write().overwrite().save(model_path)
        reloaded = TorchModel.load(model_path)
        before = {tuple(r.features): r.prediction for r in scored.collect()}
        after = {tuple(r.features): r.prediction for r in reloaded.transform(test_df).collect()}
        same = before == after
        print(f"\nscored test set: {scored_path}\nsaved model: {model_path}")
        print(f"reloaded model predictions identical: {same}")
        ok = same and mlp_acc >= MIN_ACCURACY and cnn_acc >= MIN_ACCURACY
        print("DEMO OK" if ok else f"DEMO FAILED (need accuracy >= {MIN_ACCURACY})")
        return 0 if ok else 1
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
