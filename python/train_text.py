"""Classify variable-length token sequences with an LSTM and a TransformerEncoder,
across 2 Spark executors, from a ragged ``array<int>`` column.

The data is synthetic, so nothing is downloaded: sequences of 3-200 token ids from a
vocabulary of 50, labelled 1 when token 1 occurs in them. Each batch is padded to its
longest row (``padding``) and the networks get ``forward(tokens, lengths)``: the LSTM
packs the batch (its last *valid* step is used), the TransformerEncoder masks the
padding. Both train data-parallel, print their validation accuracy, score held-out
rows (padded per scoring batch too) and save the better model.

Run it with::

    .venv/bin/python python/train_text.py --output out/text
    spark-submit --master 'local-cluster[2,1,1024]' python/train_text.py
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkdl import TorchEstimator
from sparkdl.nn import (
    LSTM,
    Dense,
    Embedding,
    Input,
    SequencePooling,
    Sequential,
    TransformerEncoder,
)

VOCAB = 50
MIN_ACCURACY = 0.95


def sequences(spark: SparkSession, rows: int, seed: int = 0) -> DataFrame:
    """(tokens array<int> of 3-200 ids, label long, test boolean): half the rows hold
    token 1 somewhere (label 1), a fifth are held out."""
    rng = np.random.default_rng(seed)
    data = []
    for i in range(rows):
        length = int(rng.integers(3, 201))
        ids = rng.integers(2, VOCAB, size=length)
        if i % 2:
            ids[rng.integers(0, length)] = 1
        data.append((ids.tolist(), i % 2, i % 5 == 0))
    return spark.createDataFrame(data, "tokens array<int>, label long, test boolean")


def networks() -> dict:
    return {
        "lstm": Sequential([Input((None,), dtype="int64"), Embedding(VOCAB, 16), LSTM(32),
                            Dense(2)]),
        "transformer": Sequential([Input((None,), dtype="int64"), Embedding(VOCAB, 32),
                                   TransformerEncoder(num_heads=2, ff_dim=64),
                                   SequencePooling("max"), Dense(2)]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default=None, help="where to save the better model")
    parser.add_argument("--master", default=None,
                        help="Spark master (default: local-cluster[<workers>,1,1024] unless "
                             "run by spark-submit)")
    args = parser.parse_args(argv)

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("sparkdl-text").config("spark.ui.enabled", "false")
    # Under spark-submit pyspark joins the JVM that launched it (PYSPARK_GATEWAY_PORT),
    # whose --master must win.
    if args.master or "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(args.master or f"local-cluster[{args.workers},1,1024]")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    data = sequences(spark, args.rows)
    train, test = data.filter(~F.col("test")), data.filter(F.col("test"))
    best, best_accuracy = None, -1.0
    for name, net in networks().items():
        est = TorchEstimator(model=net, inputCols=["tokens"],
                             padding={"value": 0, "maxLength": 256, "bucketing": True},
                             optimizerParams={"lr": 3e-3}, batchSize=16, epochs=args.epochs,
                             numWorkers=args.workers, validationFraction=0.1,
                             earlyStopping={"monitor": "val_accuracy", "patience": 2},
                             verbose=2, seed=1)
        model = est.fit(train)
        accuracy = model.transform(test).select(
            F.avg((F.col("prediction") == F.col("label")).cast("double"))).first()[0]
        print(f"{name}: test accuracy {accuracy:.3f} after {len(model.history)} epochs")
        if accuracy > best_accuracy:
            best, best_accuracy = model, accuracy
    if args.output:
        best.write().overwrite().save(os.path.join(args.output, "model"))
        print(f"saved the better model to {args.output}/model")
    spark.stop()
    if best_accuracy < MIN_ACCURACY:
        print(f"accuracy {best_accuracy:.3f} is below {MIN_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
