"""``--report mlflow``: one MLflow run per grid-cell run, in the experiment named after the benchmark, with the run's
config as params (dotted keys), ``train/*`` metrics per meta-step, ``val/*`` and ``test/*`` per evaluation, and the JSON
record as the artifact ``record.json``; a run resumed after an interruption continues its MLflow run.

The tracking URI is ``$MLFLOW_TRACKING_URI``, else a local SQLite store ``<out>/mlruns/mlflow.db`` with the artifacts
beside it (MLflow's file store is deprecated). Needs the optional extra ``metabench[mlflow]``; browse with
``mlflow ui --backend-store-uri sqlite:///results/mlruns/mlflow.db``."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from metabench import flat_config
from metabench.plugins.reporters.tracking import Tracker, run_name, scalars

# per-step requests would slow a run against a remote server: metrics go in batches, at the latest every few seconds
FLUSH_EVERY = 200
FLUSH_SECONDS = 5.0


class MlflowRun:
    def __init__(self, spec: Any, options: Any):
        from mlflow.entities import Param  # the optional extra: imported only when enabled
        from mlflow.tracking import MlflowClient

        uri, artifacts = os.environ.get("MLFLOW_TRACKING_URI"), None
        if not uri:
            local = (options.out / "mlruns").resolve()
            local.mkdir(parents=True, exist_ok=True)
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial ... tables"
            uri, artifacts = f"sqlite:///{local / 'mlflow.db'}", (local / "artifacts").as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(spec.benchmark)
        if experiment is None:
            experiment_id = self.client.create_experiment(spec.benchmark, artifact_location=artifacts)
        else:
            experiment_id = experiment.experiment_id
        # a run resumed from its checkpoint goes on in the MLflow run its interrupted attempt left RUNNING
        unfinished = self.client.search_runs(
            [experiment_id],
            f"tags.`metabench.config_hash` = '{spec.config_hash}' and attributes.status = 'RUNNING'",
            max_results=1,
        )
        if unfinished:
            self.run_id = unfinished[0].info.run_id
        else:
            tags = {"metabench.config_hash": spec.config_hash, "metabench.name": run_name(spec)}
            self.run_id = self.client.create_run(experiment_id, run_name=spec.label, tags=tags).info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in flat_config(spec.to_dict()).items()]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 params a request
                self.client.log_batch(self.run_id, params=params[start : start + 100])
        self.pending: list[Any] = []
        self.last_step, self.flushed_at = 0, time.monotonic()

    def _add(self, prefix: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(f"{prefix}/{k}", v, now, step) for k, v in values.items()]

    def _flush(self) -> None:
        pending, self.pending, self.flushed_at = self.pending, [], time.monotonic()
        for start in range(0, len(pending), FLUSH_EVERY):
            self.client.log_batch(self.run_id, metrics=pending[start : start + FLUSH_EVERY])

    def step(self, step: int, metrics: dict[str, float]) -> None:
        self.last_step = step
        self._add("train", metrics, step)
        if len(self.pending) >= FLUSH_EVERY or time.monotonic() - self.flushed_at > FLUSH_SECONDS:
            self._flush()

    def evaluation(self, split: str, scores: dict[str, Any]) -> None:
        self._add(split, scalars(scores), scores.get("step") or self.last_step)
        self._flush()

    def finish(self, record: dict[str, Any]) -> None:
        self._flush()
        self.client.log_dict(self.run_id, record, "record.json")
        self.client.set_tag(self.run_id, "metabench.status", record["status"])
        self.client.set_terminated(self.run_id, "FAILED" if record["status"] == "failed" else "FINISHED")


tracker = Tracker("mlflow", MlflowRun)
