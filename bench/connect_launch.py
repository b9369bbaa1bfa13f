"""Launch overhead over Spark Connect: sparkdl vs TorchDistributor, both through ``sc://``.

Starts a Spark Connect server (``deploy/local/servers.py``'s ``ConnectServer``:
``local-cluster[2,1,1024]``, sparkdl's jar, executors on this Python) and, from this
process as a thin client (a Connect session only, no SparkContext), times the same
trivial 2-worker training as ``bench/launch_overhead.py``, interleaved round by round:

* sparkdl ``backend="torch"``: ``TorchEstimator(numWorkers=2, epochs=1).fit(df)``,
  ranks meeting through ``BarrierTaskContext.allGather`` (a Connect client may be
  unreachable from executors, so the driver-hosted rendezvous is not used);
* TorchDistributor: ``TorchDistributor(num_processes=2, local_mode=False,
  use_gpu=False).run(fn)``, which pyspark runs over Connect as a barrier
  ``mapInPandas`` job, ``fn`` taking one gloo DistributedDataParallel step.

Each timed run follows an untimed run of the same launcher (each timed in the warm
state it leaves itself), and the first, cold run is reported as ``first_s``.
It also reports sparkdl's Connect fit against its classic one from
``bench/results/launch_overhead.json`` when that exists (another run: indicative).

Target (medians): TorchDistributor / sparkdl-torch >= 5 over Connect too.

    .venv/bin/python bench/connect_launch.py [--quick]
"""

from __future__ import annotations

import json
import sys

from _common import RESULTS_DIR, cli, local_servers, save, verdict
from launch_overhead import Timer, distributor_run, ratio_line, sparkdl_fit

TARGET = 5.0


def main(quick: bool = False) -> dict:
    import launch_overhead
    from pyspark import cloudpickle
    from pyspark.sql import SparkSession

    from sparkdl.jvm import jar_path

    # bench/ is not importable on the executors: ship what the ranks run by value
    cloudpickle.register_pickle_by_value(launch_overhead)
    rounds = 2 if quick else 3
    servers = local_servers()
    with servers.ConnectServer(python=sys.executable, jars=[jar_path()]) as server:
        spark = SparkSession.builder.remote(server.url).getOrCreate()
        try:
            spark.range(1000).repartition(2).count()  # executors and Python workers up
            timers = [Timer("sparkdl-torch (Connect)", sparkdl_fit(spark, "torch")),
                      Timer("TorchDistributor (Connect)", distributor_run())]
            for t in timers:
                t.run(warmup=True)
            for _ in range(rounds):
                for t in timers:
                    t.run(warmup=True)
                    t.run()
        finally:
            spark.stop()
    ours, dist = timers
    for t in timers:
        if not t.error:
            r = t.result()
            print(f"[connect_launch] {t.name:27s} median {r['median_s']:6.2f}s "
                  f"(all {[round(w, 2) for w in t.walls]}; first, cold: {t.first:.2f}s)")
    cmp = ratio_line(dist, ours)
    result = {"quick": quick, "master": "local-cluster[2,1,1024] behind a Spark Connect server",
              "rounds": rounds, **{t.name: t.result() for t in timers},
              "ratio": cmp["ratio"], "target": f">= {TARGET}x",
              "target_met": cmp["target_met"]}
    classic = RESULTS_DIR / "launch_overhead.json"
    if classic.exists() and not ours.error:
        before = json.loads(classic.read_text()).get("sparkdl-torch", {}).get("median_s")
        if before:
            result["connect_vs_classic_sparkdl_torch"] = ours.result()["median_s"] / before
            print(f"[connect_launch] sparkdl over Connect / classic (earlier run): "
                  f"{result['connect_vs_classic_sparkdl_torch']:.2f}x")
    print(f"[connect_launch] target {result['target']}: {verdict(bool(cmp['target_met']))}")
    save("connect_launch", result)
    return result


if __name__ == "__main__":
    cli(main, __doc__, "fewer repetitions")
