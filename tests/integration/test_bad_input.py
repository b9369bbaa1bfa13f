"""Bad input fails before the barrier job starts, with a message that says what to fix."""

from __future__ import annotations

import pytest
import torch
from pyspark import SparkConf

from sparkdl import (
    ClusterCapacityError,
    ConfigError,
    SchemaError,
    TorchEstimator,
    WorkerFailedError,
)
from sparkdl.cluster import check_no_dynamic_allocation

pytestmark = [pytest.mark.spark]


def est(**kw):
    params = dict(model=torch.nn.Linear(2, 3), epochs=1, numWorkers=2)
    params.update(kw)
    return TorchEstimator(**params)


@pytest.fixture(scope="module")
def good(spark):
    return spark.createDataFrame([([1.0, 2.0], 0), ([3.0, 4.0], 2), ([5.0, 6.0], 1)] * 4,
                                 "features array<double>, label int")


def no_jobs_since(spark, before):
    """True when no Spark job ran after ``before`` (the status tracker's job ids)."""
    return set(spark.sparkContext.statusTracker().getJobIdsForGroup()) == before


def test_missing_column_lists_existing_ones(spark, good):
    with pytest.raises(SchemaError, match=r"'featurs' does not exist.*\['features', 'label'\]"):
        est(featuresCol="featurs").fit(good)
    with pytest.raises(SchemaError, match=r"label column 'target' does not exist"):
        est(labelCol="target").fit(good)


def test_unsupported_column_type(spark):
    df = spark.createDataFrame([("a", 0)], "features string, label int")
    with pytest.raises(SchemaError, match=r"'features' has unsupported type string.*Supported"):
        est().fit(df)


def test_nulls_in_features_and_labels_are_counted(spark):
    df = spark.createDataFrame([([1.0, 2.0], 0), (None, 1), (None, 1)],
                               "features array<double>, label int")
    with pytest.raises(SchemaError, match=r"'features' has 2 null value\(s\) out of 3 rows"):
        est().fit(df)
    df = spark.createDataFrame([([1.0, 2.0], 0), ([1.0, 2.0], None)],
                               "features array<double>, label int")
    with pytest.raises(SchemaError, match=r"'label' has 1 null value\(s\)"):
        est().fit(df)
    df = spark.createDataFrame([([1.0, None], 0)], "features array<double>, label int")
    with pytest.raises(SchemaError, match=r"null array elements"):
        est().fit(df)


def test_ragged_arrays_name_the_lengths(spark):
    df = spark.createDataFrame([([1.0, 2.0], 0), ([1.0, 2.0, 3.0], 1)],
                               "features array<double>, label int")
    with pytest.raises(SchemaError, match=r"ragged arrays: lengths range from 2 to 3"):
        est().fit(df)
    df = spark.createDataFrame([([[1.0], [2.0]], 0), ([[1.0, 2.0], [3.0, 4.0]], 1)],
                               "features array<array<double>>, label int")
    with pytest.raises(SchemaError, match=r"from 1 to 2 at nesting level 2"):
        est().fit(df)


def test_label_out_of_range_for_the_model(spark):
    df = spark.createDataFrame([([1.0, 2.0], 0), ([1.0, 2.0], 3)],
                               "features array<double>, label int")
    with pytest.raises(SchemaError, match=r"values from 0 to 3, but the model outputs 3 classes"):
        est().fit(df)
    df = spark.createDataFrame([([1.0, 2.0], 0.5)], "features array<double>, label double")
    with pytest.raises(SchemaError, match=r"non-integer"):
        est().fit(df)


def test_regression_target_size_must_match_output(spark):
    df = spark.createDataFrame([([1.0, 2.0], [1.0, 2.0])],
                               "features array<double>, label array<double>")
    with pytest.raises(SchemaError, match=r"2 value\(s\) per row but the model outputs 3"):
        est(loss="mse").fit(df)


def test_empty_dataframe(spark, good):
    with pytest.raises(SchemaError, match="empty"):
        est().fit(good.limit(0))


def test_model_that_cannot_take_the_features(spark, good):
    with pytest.raises(ConfigError, match=r"cannot take features of shape \[2\].*featureShape"):
        est(model=torch.nn.Linear(7, 3)).fit(good)
    with pytest.raises(SchemaError, match=r"featureShape=\[3\] holds 3 values per row"):
        est(featureShape=[3]).fit(good)


def test_bad_params(spark, good):
    with pytest.raises(ConfigError, match=r"batchSize must be >= 1. Received: batchSize=0"):
        est(batchSize=0).fit(good)
    with pytest.raises(ConfigError, match=r"Unknown loss 'hinge'"):
        est(loss="hinge").fit(good)
    with pytest.raises(ConfigError, match=r"Unknown optimizer 'adamm'"):
        est(optimizer="adamm").fit(good)
    with pytest.raises(ConfigError, match=r"Unknown backend 'mpi'"):
        est(backend="mpi").fit(good)
    with pytest.raises(ConfigError, match=r"validationFraction must be in \[0, 1\)"):
        est(validationFraction=1.5).fit(good)
    with pytest.raises(ConfigError, match=r"No model"):
        TorchEstimator().fit(good)
    with pytest.raises(ConfigError, match="torch.nn.Module, a zero-argument callable .* or a "
                       "sparkdl.nn.Network. Received: model=int"):
        TorchEstimator(model=42)


def test_unknown_rendezvous_mode_fails_before_any_job(spark, good):
    before = set(spark.sparkContext.statusTracker().getJobIdsForGroup())
    spark.conf.set("spark.sparkdl.rendezvous", "zookeeper")
    try:
        with pytest.raises(ConfigError, match=r"spark.sparkdl.rendezvous must be one of "
                           r"\['driver', 'barrier'\]. Received: 'zookeeper'"):
            est().fit(good)
    finally:
        spark.conf.unset("spark.sparkdl.rendezvous")
    assert no_jobs_since(spark, before)


def test_more_workers_than_slots_fails_fast(spark, good):
    with pytest.raises(ClusterCapacityError,
                       match=r"numWorkers=3 needs 3 concurrent task slots but the cluster "
                             r"has 2.*spark.executor.cores"):
        est(numWorkers=3).fit(good)


def test_dynamic_allocation_is_refused():
    conf = SparkConf(loadDefaults=False).set("spark.dynamicAllocation.enabled", "true")
    with pytest.raises(ConfigError, match="spark.dynamicAllocation.enabled=false"):
        check_no_dynamic_allocation(conf, "spark://host:7077", 2)
    check_no_dynamic_allocation(conf, "local[4]", 2)  # Spark ignores it in local mode


def test_output_column_clash_on_transform(spark, good):
    model = est(numWorkers=1).fit(good)
    with pytest.raises(SchemaError, match=r"\['label'\] already exist"):
        model.setPredictionCol("label").transform(good)
    with pytest.raises(SchemaError, match=r"'nope' does not exist"):
        model.setPredictionCol("prediction").setFeaturesCol("nope").transform(good)


def test_a_crashing_worker_fails_the_job_with_its_error(spark, good):
    class Boom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 3)

        def forward(self, x):
            if self.training:
                raise RuntimeError("boom in training step")
            return self.lin(x)

    with pytest.raises(WorkerFailedError, match="boom in training step"):
        est(model=Boom()).fit(good)
