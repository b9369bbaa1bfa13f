"""The Scala path vs the Python path: training throughput and the Arrow bridge.

The same ``sparkdl.nn`` MLP (64-128-64-10, Adam, batch 64 per rank, 2 workers,
torch backend, same seed) on the same cached synthetic rows on
``local-cluster[2,1,1024]``, interleaved for several rounds:

* Python: ``sparkdl.TorchEstimator(model=net).fit(df)`` (``mapInArrow`` barrier job).
* Scala: ``sparkdl.ml.TorchEstimator().setNetworkJson(...).fit(df)`` driven through
  py4j: its barrier tasks stream Arrow IPC to ``python -m sparkdl.worker``.

Throughput = rows x epochs / whole ``fit`` wall time (launch, data checks, data
transfer and training all counted), best round, after one warm-up fit per side:
steady state, where PySpark reuses its Python workers and the Scala path takes warm
``python -m sparkdl.worker`` processes from each executor's pool
(``spark.sparkdl.worker.reuse``). Target: Scala / Python >= 0.95.

Bridge: the Scala ``TorchModel.transform`` of a one-layer model over the rows
(JVM -> Arrow IPC -> worker -> Arrow IPC -> JVM), in MB/s of feature data, next
to the Python ``transform`` (mapInArrow) of the same model.

    .venv/bin/python bench/scala_bridge.py [--quick]
"""

from __future__ import annotations

import tempfile
import time

from _common import cli, median, save, spark_session, synthetic, verdict, write_parquet

TARGET = 0.95
FEATURES, CLASSES, BATCH, WORKERS, SEED = 64, 10, 64, 2, 0


def network():
    from sparkdl.nn import Dense, Input, Sequential

    return Sequential([Input((FEATURES,)), Dense(128, activation="relu"),
                       Dense(64, activation="relu"), Dense(CLASSES)])


def python_fit(df, epochs: int, net=None):
    from sparkdl import TorchEstimator

    return TorchEstimator(model=net or network(), loss="cross_entropy", optimizer="adam",
                          optimizerParams={"lr": 1e-3}, batchSize=BATCH, epochs=epochs,
                          numWorkers=WORKERS, seed=SEED, backend="torch").fit(df)


def scala_fit(spark, df, epochs: int, net=None):
    return (spark._jvm.sparkdl.ml.TorchEstimator().setNetworkJson((net or network()).to_json())
            .setLoss("cross_entropy").setOptimizer("adam").setLearningRate(1e-3)
            .setFeaturesCol("features").setLabelCol("label").setBatchSize(BATCH)
            .setEpochs(epochs).setNumWorkers(WORKERS).setSeed(SEED).setBackend("torch")
            .fit(df._jdf))


def timed(call) -> tuple[float, object]:
    began = time.perf_counter()
    out = call()
    return time.perf_counter() - began, out


def main(quick: bool = False) -> dict:
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    from sparkdl.jvm import jar_path
    from sparkdl.nn import Dense, Input, Sequential

    rows, epochs, rounds = (30_000, 2, 2) if quick else (100_000, 3, 3)
    score_rows = rows * 2
    walls: dict[str, list[float]] = {"python": [], "scala": []}
    with tempfile.TemporaryDirectory() as tmp, spark_session(
            "local-cluster[2,1,1024]", "bench-scala-bridge",
            **{"spark.jars": jar_path()}) as spark:
        df = spark.read.parquet(write_parquet(f"{tmp}/train",
                                              *synthetic(rows, FEATURES, CLASSES))).cache()
        df.count()
        # One warm-up fit per side, the same for both: Python workers started and torch
        # imported on both paths, so the rounds measure steady state.
        python_fit(df, 1)
        scala_fit(spark, df, 1)
        for _ in range(rounds):
            for name, call in (("python", lambda: python_fit(df, epochs)),
                               ("scala", lambda: scala_fit(spark, df, epochs))):
                wall, _ = timed(call)
                walls[name].append(wall)
                print(f"[scala_bridge] fit {name:6s} {wall:6.2f}s "
                      f"({rows * epochs / wall:8.0f} samples/s)", flush=True)

        tiny = Sequential([Input((FEATURES,)), Dense(CLASSES)])
        score_df = spark.read.parquet(write_parquet(
            f"{tmp}/score", *synthetic(score_rows, FEATURES, CLASSES), files=4)).cache()
        score_df.count()
        py_model, scala_model = python_fit(df, 1, tiny), scala_fit(spark, df, 1, tiny)
        scoring = {"python": [], "scala": []}
        for _ in range(rounds):
            wall, _ = timed(lambda: py_model.transform(score_df)
                            .agg(F.sum("prediction")).collect())
            scoring["python"].append(wall)
            wall, _ = timed(lambda: DataFrame(scala_model.transform(score_df._jdf), spark)
                            .agg(F.sum("prediction")).collect())
            scoring["scala"].append(wall)
    best = {k: min(v) for k, v in walls.items()}
    rate = {k: rows * epochs / v for k, v in best.items()}
    ratio = rate["scala"] / rate["python"]
    megabytes = score_rows * FEATURES * 4 / 1e6
    bridge = {k: megabytes / min(v) for k, v in scoring.items()}
    print(f"[scala_bridge] training samples/s scala {rate['scala']:.0f} / python "
          f"{rate['python']:.0f} = {ratio:.2f} (target >= {TARGET}: {verdict(ratio >= TARGET)})")
    print(f"[scala_bridge] scoring {megabytes:.0f} MB of features: Scala bridge "
          f"{bridge['scala']:.0f} MB/s, Python mapInArrow {bridge['python']:.0f} MB/s")
    result = {"quick": quick, "master": "local-cluster[2,1,1024]", "rows": rows,
              "epochs": epochs, "rounds": rounds, "fit_wall_seconds": walls,
              "median_fit_seconds": {k: median(v) for k, v in walls.items()},
              "samples_per_s": rate, "scoring_rows": score_rows,
              "scoring_wall_seconds": scoring, "bridge_mb_per_s": bridge,
              "ratios": {"training samples/s scala / python": ratio,
                         "scoring MB/s scala / python": bridge["scala"] / bridge["python"]},
              "ratio": ratio, "target": f">= {TARGET}", "target_met": ratio >= TARGET}
    save("scala_bridge", result)
    return result


if __name__ == "__main__":
    cli(main, __doc__, "fewer rows and rounds")
