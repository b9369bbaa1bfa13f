"""MLflow tracking of a fit, all from the driver.

When an MLflow run is active on the driver (``mlflow.start_run()``), or the
estimator's ``mlflowExperiment`` names an experiment (a run is then started in it,
and ended with the fit), ``fit`` logs to that run: the estimator's Params, each
epoch's metrics as they arrive (step = the epoch), and the trained model (an MLflow
``pyfunc`` model, :mod:`sparkdl.ml.mlflow_pyfunc`, plus the sparkdl model directory
as the ``sparkdl_model`` artifact). Executors never talk to the tracking server, so
no tracking credentials go to them.

A tracking failure is logged as a warning and the fit goes on: losing a metric is
better than losing the training.

Example::

    with mlflow.start_run():
        model = est.fit(df)   # params, metrics per epoch, the model
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time

from sparkdl.errors import ConfigError

log = logging.getLogger(__name__)

#: MLflow's limit on a param value's length.
MAX_PARAM_CHARS = 6000


def _mlflow():
    try:
        import mlflow
    except ImportError:
        return None
    return mlflow


def require_mlflow(experiment: str) -> None:
    """Fail before any work if ``mlflowExperiment`` is set but MLflow is missing."""
    if experiment and _mlflow() is None:
        raise ConfigError(f"mlflowExperiment={experiment!r} needs MLflow on the driver: "
                          "pip install 'sparkdl[mlflow]' (or mlflow), or unset it.")


class MlflowRun:
    """One fit's MLflow run (see the module's docstring)."""

    def __init__(self, client, run_id: str, owned: bool) -> None:
        self.client = client
        self.run_id = run_id
        self.owned = owned

    @classmethod
    def start(cls, experiment: str, run_name: str) -> MlflowRun | None:
        """The run to log to: the active one, else a new one in ``experiment``; None
        when there is neither (or MLflow is not installed)."""
        if not experiment and "mlflow" not in sys.modules:
            return None  # no run can be active in a process that never imported MLflow
        mlflow = _mlflow()
        if mlflow is None:
            return None
        from mlflow.tracking import MlflowClient

        active = mlflow.active_run()
        if active is None and not experiment:
            return None
        client = MlflowClient()
        if active is not None:
            return cls(client, active.info.run_id, owned=False)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run = client.create_run(experiment_id, run_name=run_name)
        return cls(client, run.info.run_id, owned=True)

    def log_params(self, params: dict) -> None:
        """The fit's Params (values as text, cut to MLflow's limit)."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):  # MLflow's batch limit on params
            self._quietly("log the params", self.client.log_batch, self.run_id,
                          params=items[start:start + 100])

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        """An epoch's numbers as metrics at step ``epoch`` (an ``onEpochEnd`` callback)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, epoch) for k, v in sorted(metrics.items())
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if items:
            self._quietly(f"log epoch {epoch}'s metrics", self.client.log_batch, self.run_id,
                          metrics=items)

    def log_model(self, model, spark) -> None:
        """The trained model: ``model/`` (MLflow pyfunc) and ``sparkdl_model/``."""
        self._quietly("log the model", self._log_model, model, spark)

    def _log_model(self, model, spark) -> None:
        import mlflow
        import pyarrow
        import torch

        import sparkdl
        from sparkdl.ml import mlflow_model_code
        from sparkdl.ml.files_local import LocalFiles
        from sparkdl.ml.mlflow_pyfunc import ARTIFACT
        from sparkdl.ml.persistence import TorchModelWriter

        with tempfile.TemporaryDirectory(prefix="sparkdl-mlflow-") as where:
            saved = os.path.join(where, ARTIFACT)
            writer = TorchModelWriter(model)
            writer._files = LocalFiles(spark)  # files on this machine, in any session
            writer.files.save_directory(saved, writer.saveImpl)
            served = os.path.join(where, "model")
            mlflow.pyfunc.save_model(
                path=served, python_model=mlflow_model_code.__file__,
                artifacts={ARTIFACT: saved},
                # Given, not inferred: inferring loads the model in a subprocess.
                pip_requirements=[f"sparkdl=={sparkdl.__version__}",
                                  f"torch=={torch.__version__.split('+')[0]}",
                                  f"pyarrow=={pyarrow.__version__}"])
            self.client.log_artifacts(self.run_id, served, "model")
            self.client.log_artifacts(self.run_id, saved, ARTIFACT)

    def end(self, failed: bool = False) -> None:
        """End the run if this fit started it."""
        if self.owned:
            self._quietly("end the run", self.client.set_terminated, self.run_id,
                          "FAILED" if failed else "FINISHED")

    def _quietly(self, what: str, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking never fails the fit
            log.warning("sparkdl: could not %s to MLflow run %s: %s", what, self.run_id, exc)
