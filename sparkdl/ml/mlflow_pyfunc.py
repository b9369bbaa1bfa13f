"""The MLflow model a fit logs: a sparkdl model served outside Spark.

``mlflow.pyfunc.load_model(uri).predict(pandas_df)`` scores a pandas DataFrame
whose feature columns are as the model was fitted on (arrays, or numbers for
``featuresCols``), with the scoring code of ``TorchModel.transform``, and returns a
DataFrame of ``prediction`` (and, for classifiers, ``probability`` and
``rawPrediction`` lists). The model's files are the sparkdl model directory
(artifact ``sparkdl_model``), read without Spark.

The MLflow model is logged as code (:mod:`sparkdl.ml.mlflow_model_code`), not as a
cloudpickled object.

Example::

    served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    served.predict(pd.DataFrame({"features": [[0.0] * 64]}))["prediction"]
"""

from __future__ import annotations

#: The artifact key (and logged folder) of the sparkdl model directory.
ARTIFACT = "sparkdl_model"

try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # the class is only built where MLflow is installed
    PythonModel = object


class SparkdlPyfunc(PythonModel):
    """An MLflow ``PythonModel`` around a saved :class:`~sparkdl.TorchModel`."""

    def load_context(self, context) -> None:
        from sparkdl.ml.model import TorchModel
        from sparkdl.ml.persistence import load_local_model

        self.model = load_local_model(TorchModel, context.artifacts[ARTIFACT])
        self.module = self.model.getModel()

    def predict(self, context, model_input, params=None):
        """Score ``model_input`` (a pandas DataFrame) as ``transform`` would."""
        import pandas as pd
        import pyarrow as pa
        import torch

        from sparkdl.errors import SchemaError
        from sparkdl.worker.score_task import score_batch

        spec = self.model._score_spec(())
        frame = model_input if isinstance(model_input, pd.DataFrame) \
            else pd.DataFrame(model_input)
        missing = [c for c in spec.feature_cols if c not in frame.columns]
        if missing:
            raise SchemaError(f"Feature column(s) {missing} not found. Available columns: "
                              f"{list(frame.columns)}")
        batch = pa.RecordBatch.from_pandas(frame[list(spec.feature_cols)], preserve_index=False)
        if batch.num_rows == 0:
            return pd.DataFrame({spec.prediction_col: []})
        columns = score_batch(spec, self.module, torch.device("cpu"), batch)
        return pd.DataFrame({name: column.to_pylist() for name, column in columns.items()})
