"""Where logged metrics go (rank 0 only): ``metrics.csv`` always, TensorBoard through
Fabric's logger when it is installed, and the experiment trackers of ``run.trackers``
(:mod:`twinfold.trackers`). A failing logger warns once and is dropped; it never stops
training."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any, Literal

from lightning_fabric.loggers import CSVLogger, Logger

from twinfold.config import RunConfig
from twinfold.errors import ConfigError
from twinfold.trackers import missing_trackers, warn_failed


def tensorboard_available() -> bool:
    from lightning_fabric.loggers import tensorboard

    return bool(tensorboard._TENSORBOARD_AVAILABLE or tensorboard._TENSORBOARDX_AVAILABLE)


def check_installed(cfg: RunConfig) -> None:
    """Refuse a run whose config asks for a sink that is not installed (``run.tensorboard:
    on``, a tracker in ``run.trackers``): exit status 2 before anything is written."""
    problems = missing_trackers(cfg)
    if cfg.run.tensorboard == "on" and not tensorboard_available():
        problems.insert(
            0, ("run.tensorboard", "'on' needs tensorboard: pip install tensorboard, or use 'auto'")
        )
    if problems:
        raise ConfigError(problems)


METRICS_FILE = "metrics.csv"


def rows_until(run_dir: Path, step: int) -> list[dict[str, str]]:
    """The rows of an earlier ``metrics.csv`` logged at or before ``step`` (the step a run
    resumes from), as written; empty cells (keys a row did not log) are left out, and so
    are the ``final/*`` rows: a run resumed at its last step runs its finish again."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as file:
        rows = [{k: v for k, v in row.items() if k and v} for row in csv.DictReader(file)]
    return [
        row
        for row in rows
        if row.get("step", "").isdigit()
        and int(row["step"]) <= step
        and not any(k.startswith("final/") for k in row)
    ]


def default_loggers(
    run_dir: Path, tensorboard: Literal["auto", "on", "off"], resumed_from: int | None = None
) -> list[Logger]:
    """The CSV logger, plus TensorBoard per ``run.tensorboard``. A resumed run keeps the
    CSV rows up to the step it resumes from (the CSV logger would otherwise start a new
    file); rows logged after that step belong to the abandoned attempt and are dropped."""
    warnings.filterwarnings("ignore", message="Experiment logs directory", module=r"lightning")
    kept = rows_until(run_dir, resumed_from) if resumed_from else []
    # flushed at every logged row: a killed run keeps its metrics
    csv_logger = CSVLogger(str(run_dir), name="", version="", flush_logs_every_n_steps=1)
    if kept:
        for row in kept:
            step = int(row.pop("step"))
            csv_logger.experiment.log_metrics(row, step=step)  # type: ignore[arg-type]
        csv_logger.experiment.save()
    loggers: list[Logger] = [csv_logger]
    if tensorboard != "off" and tensorboard_available():  # 'on' was checked before launch
        from lightning_fabric.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(run_dir), name="tensorboard", version=""))
    return loggers


class MetricSinks:
    """Fans metrics (and, at the end, the run's files) out to loggers; a logger that
    raises is reported once and dropped."""

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = list(loggers)
        self.failed: list[str] = []

    def _call(self, what: str, *args: Any, **kwargs: Any) -> None:
        for logger in list(self.loggers):
            method = getattr(logger, what, None)
            if method is None:  # only trackers take files
                continue
            try:
                method(*args, **kwargs)
            except Exception as exc:  # a logger must never stop training
                self._drop(logger, exc)

    def _drop(self, logger: Logger, exc: Exception) -> None:
        self.loggers.remove(logger)
        fix = getattr(logger, "fix", None)
        if fix is not None:  # a tracker: named, with its fix
            self.failed.append(str(logger.name))
            warn_failed(str(logger.name), exc, fix, stacklevel=5)
            return
        name = type(logger).__name__
        self.failed.append(name)
        warnings.warn(
            f"{name} failed ({type(exc).__name__}: {exc}); training goes on without it",
            RuntimeWarning,
            stacklevel=4,
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._call("log_metrics", metrics, step=step)

    def log_artifacts(self, files: list[Path]) -> None:
        """Hand the run's output files to the loggers that keep files (the trackers)."""
        self._call("log_artifacts", files)

    def finalize(self, status: str = "success") -> None:
        self._call("finalize", status)
