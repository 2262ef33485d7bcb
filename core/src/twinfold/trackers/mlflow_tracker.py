"""MLflow as a Fabric logger, on :class:`mlflow.MlflowClient` (``run.trackers: [mlflow]``):
the flattened resolved config as params, every metrics row at its step, and at the end
the run's files as artifacts. A resumed run continues the MLflow run whose id
``trackers.json`` in the run directory holds."""

from __future__ import annotations

import os
import socket
import time
from argparse import Namespace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from lightning_fabric.loggers import Logger

from twinfold.trackers import fix_hint, flat_params, remember_run, remembered_run

if TYPE_CHECKING:
    from twinfold.config import RunConfig
    from twinfold.config.models import MlflowSettings

STATUS = {"success": "FINISHED", "failed": "FAILED", "preempted": "KILLED"}
"""Fabric's finalize status -> MLflow run status."""

BATCH = 100
"""Params per ``log_batch`` call (MLflow's limit)."""


def store(settings: MlflowSettings, output_dir: Path) -> tuple[str, str | None]:
    """The tracking URI and the artifact location for a new experiment: as set, else
    ``MLFLOW_TRACKING_URI``, else beside the run directories,
    ``sqlite:///<output_dir>/mlflow.db`` and ``<output_dir>/mlartifacts``."""
    uri = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, settings.artifact_location
    root = output_dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    artifacts = settings.artifact_location or (root / "mlartifacts").as_uri()
    return f"sqlite:///{root / 'mlflow.db'}", artifacts


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast when an http(s) tracking server does not answer (MLflow's client would
    retry for minutes); fewer retries for the calls that follow, unless set already."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    with socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout):
        pass
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


class MlflowTracker(Logger):
    """One MLflow run per twinfold run (rank 0 only)."""

    fix = fix_hint("mlflow")

    def __init__(self, cfg: RunConfig, run_dir: Path, resumed_from: int = 0) -> None:
        from mlflow import MlflowClient

        settings = cfg.run.mlflow
        uri, artifacts = store(settings, Path(cfg.run.output_dir))
        check_reachable(uri)
        self.client = MlflowClient(tracking_uri=uri)
        self.tracking_uri = uri
        experiment = settings.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
        self.experiment_id = self._experiment(experiment or "twinfold", artifacts)
        self.run_id = self._continued(run_dir, resumed_from) or self._new_run(cfg, run_dir)
        remember_run(run_dir, "mlflow", {"tracking_uri": uri, "run_id": self.run_id})
        self.log_hyperparams(flat_params(cfg.model_dump(mode="json")))

    def _experiment(self, name: str, artifacts: str | None) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifacts)
        except MlflowException:  # created meanwhile by another run
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _continued(self, run_dir: Path, resumed_from: int) -> str | None:
        """The stored MLflow run of a resumed run (same tracking URI, still there)."""
        from mlflow.exceptions import MlflowException

        stored = remembered_run(run_dir, "mlflow") if resumed_from else None
        if not stored or stored.get("tracking_uri") != self.tracking_uri:
            return None
        try:
            run = self.client.get_run(str(stored.get("run_id")))
        except MlflowException:
            return None
        if run.info.lifecycle_stage != "active":
            return None
        self.client.update_run(run.info.run_id, status="RUNNING")
        self.client.set_tag(run.info.run_id, "twinfold.resumed_from_step", str(resumed_from))
        return run.info.run_id

    def _new_run(self, cfg: RunConfig, run_dir: Path) -> str:
        from twinfold.version import __version__

        settings = cfg.run.mlflow
        tags = {"twinfold.run_dir": str(run_dir), "twinfold.version": __version__}
        run = self.client.create_run(
            self.experiment_id,
            run_name=settings.run_name or run_dir.name,
            tags={**tags, **settings.tags},
        )
        return run.info.run_id

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.run_id

    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Log ``params`` (flattened); on a resumed run only keys it has not logged yet
        (MLflow params cannot change; ``config.yaml`` holds the current values)."""
        from mlflow.entities import Param

        values = flat_params(vars(params) if isinstance(params, Namespace) else params)
        logged = self.client.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in values.items() if k not in logged]
        for start in range(0, len(new), BATCH):
            self.client.log_batch(self.run_id, params=new[start : start + BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=rows)

    def log_artifacts(self, files: list[Path]) -> None:
        """The run's files; the exported backbone (safetensors + JSON) under ``backbone/``."""
        for path in files:
            folder = "backbone" if path.stem == "backbone" else None
            self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def finalize(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FINISHED"))
