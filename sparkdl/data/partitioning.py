"""How ``fit`` lays the prepared rows out over the ranks: one partition per rank.

``fit`` hash-partitions on the unique row id (``monotonically_increasing_id``)
instead of calling ``repartition(n)``. Round-robin repartitioning first sorts every
row of every map task (``spark.sql.execution.sortBeforeRepartition``) so that a
retried map task deals out its rows the same way; that sort is the most costly
part of the shuffle (about a sixth of the Parquet-to-tensor time in
``bench/parquet_ingest.py``). Hashing a unique id needs no sort and splits large
data evenly (binomially: 1M rows over 2 ranks differ by a fraction of a percent).
Unequal shards are correct anyway: every rank runs the same number of steps
(:mod:`sparkdl.data.schedule`).

The id depends on each input partition's row order. Spark marks a shuffle on it
as indeterminate, so after a lost map output it reruns the whole barrier stage,
which a barrier stage does on any failure.

Example::

    df = spark.range(10).withColumn("o", F.monotonically_increasing_id())
    one_partition_per_rank(df, 2, "o").rdd.getNumPartitions()  # 2
"""

from __future__ import annotations

from pyspark.sql import DataFrame


def one_partition_per_rank(df: DataFrame, num_workers: int, id_col: str) -> DataFrame:
    """Hash-partition ``df`` on its unique-id column ``id_col`` into ``num_workers`` parts."""
    return df.repartition(num_workers, id_col)
