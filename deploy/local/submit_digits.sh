#!/usr/bin/env bash
# Run the digits job through spark-submit on a local 2-executor standalone cluster.
# Executors use the project's .venv, so they can import sparkdl and torch.
set -euo pipefail
cd "$(dirname "$0")/../.."
make setup
PY="$PWD/.venv/bin/python"
export PYSPARK_PYTHON="$PY" PYSPARK_DRIVER_PYTHON="$PY"
exec .venv/bin/spark-submit --master 'local-cluster[2,1,1024]' \
  --conf spark.pyspark.python="$PY" --conf spark.ui.showConsoleProgress=false \
  python/train_digits.py --output out/digits-submit "$@"
