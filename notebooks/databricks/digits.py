# Databricks notebook source
# MAGIC %md
# MAGIC # sparkdl on Databricks: digits, end to end
# MAGIC
# MAGIC Trains a network data-parallel across the cluster's executors, scores a table and
# MAGIC saves the model to a Unity Catalog volume. Runs on classic clusters and, through Spark
# MAGIC Connect, on shared and serverless compute: the code is the same.
# MAGIC
# MAGIC Import it with **Workspace > Import > File** (this `.py` file). The cluster needs
# MAGIC sparkdl, torch and scikit-learn on its Python (the next cell installs them on a
# MAGIC notebook-scoped environment).

# COMMAND ----------

# MAGIC %pip install sparkdl scikit-learn

# COMMAND ----------

dbutils.widgets.text("model_dir", "/Volumes/main/default/models/sparkdl_digits", "Model directory")
dbutils.widgets.text("workers", "2", "Training workers")
model_dir = dbutils.widgets.get("model_dir")
workers = int(dbutils.widgets.get("workers"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## The data: scikit-learn's 8x8 digits as a DataFrame

# COMMAND ----------

from pyspark.sql import functions as F
from sklearn.datasets import load_digits

digits = load_digits()
rows = [((image / 16.0).tolist(), int(label)) for image, label in zip(digits.data, digits.target)]
df = spark.createDataFrame(rows, "features array<float>, label long")
train, test = df.randomSplit([0.8, 0.2], seed=7)
display(train.limit(5))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Train
# MAGIC `verbose=2` prints a line per epoch (on serverless compute they arrive with the result).

# COMMAND ----------

import torch
from sparkdl import TorchEstimator


def mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 10))


est = TorchEstimator(model=mlp, loss="cross_entropy", optimizer="adam",
                     optimizerParams={"lr": 3e-3}, batchSize=32, epochs=20,
                     numWorkers=workers, seed=42, validationFraction=0.1, verbose=2)
model = est.fit(train)
display(model.history.plot())

# COMMAND ----------

# MAGIC %md
# MAGIC ## Score and evaluate

# COMMAND ----------

scored = model.transform(test)
accuracy = scored.select(F.avg((F.col("prediction") == F.col("label")).cast("double"))).first()[0]
print(f"test accuracy: {accuracy:.4f}")
assert accuracy >= 0.95, accuracy
display(scored.groupBy("label", "prediction").count().orderBy("label", "prediction"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Save to a volume, load it back

# COMMAND ----------

from sparkdl import TorchModel

model.write().overwrite().save(model_dir)
print([f.name for f in dbutils.fs.ls(model_dir)])
reloaded = TorchModel.load(model_dir)
same = (reloaded.transform(test).select("prediction").collect()
        == scored.select("prediction").collect())
print(f"reloaded predictions identical: {same}")
assert same
