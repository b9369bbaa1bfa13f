"""MLflow's "model from code" for a sparkdl model: run by ``mlflow.pyfunc.load_model``.

Logging the model as this file, rather than a cloudpickled ``PythonModel``, keeps
pickles out of the logged model (:mod:`sparkdl.ml.mlflow_pyfunc`).
"""

from mlflow.models import set_model

from sparkdl.ml.mlflow_pyfunc import SparkdlPyfunc

set_model(SparkdlPyfunc())
