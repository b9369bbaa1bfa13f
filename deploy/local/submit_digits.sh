#!/usr/bin/env bash
# Run the digits job through spark-submit on a local 2-executor standalone cluster.
# Executors use the project's .venv, so they can import sparkdl and torch.
set -euo pipefail
# --master spark://127.0.0.1:<port> (first argument) submits to another cluster, e.g. the one
# `.venv/bin/python deploy/local/servers.py standalone` starts; the rest go to the app.
MASTER='local-cluster[2,1,1024]'
if [ "${1:-}" = "--master" ]; then MASTER="$2"; shift 2; fi
cd "$(dirname "$0")/../.."
make setup
PY="$PWD/.venv/bin/python"
export PYSPARK_PYTHON="$PY" PYSPARK_DRIVER_PYTHON="$PY"
# The job gets the master too: it picks local-cluster itself unless told (it cannot see
# spark-submit's --master before its SparkContext starts).
exec .venv/bin/spark-submit --master "$MASTER" \
  --conf spark.pyspark.python="$PY" --conf spark.ui.showConsoleProgress=false \
  python/train_digits.py --master "$MASTER" --output out/digits-submit "$@"
