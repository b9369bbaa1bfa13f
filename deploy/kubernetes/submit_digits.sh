#!/usr/bin/env bash
# Train the digits network on Spark on Kubernetes with the image of ./Dockerfile.
#
#   deploy/kubernetes/submit_digits.sh https://<api-server>:6443 <registry>/sparkdl:0.1.0 \
#       s3a://bucket/data/digits.parquet \    # the digits (features, label), as Parquet
#       s3a://bucket/models/digits             # where the model is saved (shared storage)
#
# Two executors, one rank each; the driver runs in the cluster (--deploy-mode cluster), so
# the executors reach its rendezvous through its pod's service. The service account needs
# the rights Spark's driver pod needs (spark.kubernetes.authenticate.driver.serviceAccountName).
# Not run in this project's CI (no Kubernetes there); the image's install script is tested.
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: $0 K8S_API_URL IMAGE DATA_URI OUTPUT_URI" >&2; exit 2; }
api="$1"; image="$2"; data="$3"; output="$4"
exec spark-submit \
  --master "k8s://$api" --deploy-mode cluster --name sparkdl-digits \
  --conf spark.kubernetes.container.image="$image" \
  --conf spark.kubernetes.authenticate.driver.serviceAccountName="${SPARK_SERVICE_ACCOUNT:-spark}" \
  --conf spark.executor.instances=2 --conf spark.executor.cores=1 --conf spark.executor.memory=2g \
  --conf spark.pyspark.python=/opt/sparkdl/bin/python \
  --conf spark.pyspark.driver.python=/opt/sparkdl/bin/python \
  local:///opt/sparkdl/app/train_digits.py --data "$data" --output "$output"
