#!/usr/bin/env bash
# Run the Scala example (sparkdl.examples.TrainDigits) through spark-submit on a local
# 2-executor standalone cluster: the JVM job trains through the executors' Python workers.
set -euo pipefail
# --master spark://127.0.0.1:<port> (first argument) submits to another cluster, e.g. the one
# `.venv/bin/python deploy/local/servers.py standalone` starts; the rest go to the app.
MASTER='local-cluster[2,1,1024]'
if [ "${1:-}" = "--master" ]; then MASTER="$2"; shift 2; fi
cd "$(dirname "$0")/../.."
make setup jvm
PY="$PWD/.venv/bin/python"
JAR="$(ls jvm/target/sparkdl-jvm_2.13-*.jar | head -1)"
mkdir -p out
[ -e out/digits.parquet ] || "$PY" deploy/local/digits_parquet.py out/digits.parquet
export PYSPARK_PYTHON="$PY"
exec .venv/bin/spark-submit --master "$MASTER" \
  --conf spark.pyspark.python="$PY" --conf spark.ui.showConsoleProgress=false \
  --class sparkdl.examples.TrainDigits "$JAR" out/digits.parquet "$@"
