"""Experiment trackers (run.trackers): real tiny runs logging to a real local MLflow store
(SQLite) and to W&B in offline mode, read back with each tool's own client or file format;
failing and missing trackers."""

from __future__ import annotations

import csv
import hashlib
import json
import socket
import sqlite3
import struct
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from runner import run_here

import twinfold
from twinfold.trackers import RUN_IDS_FILE, flat_params

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.usefixtures("one_thread", "no_tracker_environment")


@pytest.fixture
def no_tracker_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No tracker settings or W&B credentials from the environment; W&B's own files
    (cache, settings, artifact staging) in ``tmp_path``."""
    for var in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "WANDB_API_KEY",
        "WANDB_MODE",
        "WANDB_PROJECT",
        "WANDB_ENTITY",
        "WANDB_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))


TINY: dict[str, Any] = {
    "preset": "byol-small",
    "data": {"image_size": 16, "batch_size": 64},
    "method": {
        "encoder": {"widths": [8, 16]},
        "projector": {"hidden_dims": [32], "out_dim": 16},
        "predictor": {"hidden_dims": [32], "out_dim": 16},
    },
    "trainer": {
        "accelerator": "cpu",
        "epochs": 1,
        "max_steps": 4,
        "log_every": 1,
        "progress_bar": False,
    },
    "evaluation": {"at_end": False, "every_n_epochs": 0},
}


def tiny(out: Path, name: str, **run: Any) -> twinfold.RunConfig:
    trainer = run.pop("trainer", {})
    cfg = {
        **TINY,
        "trainer": {**TINY["trainer"], **trainer},
        "run": {"output_dir": str(out), "name": name, "tensorboard": "off", "plots": False, **run},
    }
    return twinfold.load_config(cfg)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its tables made (MLflow takes seconds for that), copied
    by each test that wants a fresh one."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def out(tmp_path: Path, empty_store: Path) -> Path:
    """``run.output_dir`` holding a fresh copy of the empty store where the default
    tracking URI (``sqlite:///<output_dir>/mlflow.db``) looks."""
    runs = tmp_path / "runs"
    runs.mkdir()
    with sqlite3.connect(empty_store) as src, sqlite3.connect(runs / "mlflow.db") as dst:
        src.backup(dst)
    return runs


def client(runs: Path) -> Any:
    return mlflow.MlflowClient(f"sqlite:///{runs.resolve() / 'mlflow.db'}")


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def csv_series(run_dir: Path) -> dict[str, dict[int, float]]:
    """``{key: {step: value}}`` of metrics.csv."""
    found: dict[str, dict[int, float]] = defaultdict(dict)
    for row in csv_rows(run_dir):
        for key, value in row.items():
            if key != "step" and value:
                found[key][int(row["step"])] = float(value)
    return dict(found)


def mlflow_series(store: Any, run_id: str, keys: list[str]) -> dict[str, dict[int, float]]:
    """``{key: {step: newest value}}`` of an MLflow run's metric histories."""
    found: dict[str, dict[int, float]] = {}
    for key in keys:
        history = sorted(store.get_metric_history(run_id, key), key=lambda m: m.timestamp)
        found[key] = {m.step: m.value for m in history}
    return found


def test_mlflow_run_gets_params_every_metric_row_and_the_files(out: Path) -> None:
    cfg = tiny(out, "r", trackers=["mlflow"], plots=True, mlflow={"tags": {"team": "ssl"}})
    run_dir = twinfold.train(cfg).run_dir
    run_id = json.loads((run_dir / RUN_IDS_FILE).read_text())["mlflow"]["run_id"]
    store = client(out)
    run = store.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "r"
    assert run.data.tags["team"] == "ssl" and run.data.tags["twinfold.run_dir"] == str(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert run.data.params == flat_params(config)
    assert run.data.params["method.encoder.widths"] == "[8, 16]"
    assert run.data.params["run.trackers"] == '["mlflow"]'
    expected = csv_series(run_dir)
    assert len(expected["loss"]) == 4 and "final/loss" in expected
    assert sorted(run.data.metrics) == sorted(expected)
    assert mlflow_series(store, run_id, list(expected)) == expected
    files = {a.path for a in store.list_artifacts(run_id)}
    assert files == {"config.yaml", "summary.json", "plot_loss.png", "plot_health.png", "backbone"}
    backbone = {a.path: a.file_size for a in store.list_artifacts(run_id, "backbone")}
    assert backbone == {
        "backbone/backbone.safetensors": (run_dir / "backbone.safetensors").stat().st_size,
        "backbone/backbone.json": (run_dir / "backbone.json").stat().st_size,
    }
    copy = store.download_artifacts(run_id, "summary.json", str(out.parent))
    assert Path(copy).read_bytes() == (run_dir / "summary.json").read_bytes()


def test_a_resumed_run_continues_its_mlflow_run(out: Path) -> None:
    first = tiny(
        out, "r", trackers=["mlflow"], resume="auto", checkpoint_every=1, trainer={"stop_after": 2}
    )
    run_dir = twinfold.train(first).run_dir
    run_id = json.loads((run_dir / RUN_IDS_FILE).read_text())["mlflow"]["run_id"]
    store = client(out)
    # what an attempt killed after its checkpoint at step 2 would have logged at step 3
    store.log_metric(run_id, "loss", 123.0, step=3)
    result = twinfold.train(tiny(out, "r", trackers=["mlflow"], resume="auto", checkpoint_every=1))
    assert result.steps == 4
    assert json.loads((run_dir / RUN_IDS_FILE).read_text())["mlflow"]["run_id"] == run_id
    experiment = store.get_experiment_by_name("twinfold").experiment_id
    assert [r.info.run_id for r in store.search_runs([experiment])] == [run_id]
    run = store.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["twinfold.resumed_from_step"] == "2"
    assert run.data.params["trainer.stop_after"] == "2"  # params keep the first start's
    expected = csv_series(run_dir)
    logged = mlflow_series(store, run_id, list(expected))
    assert logged["loss"] == expected["loss"] and sorted(logged["loss"]) == [1, 2, 3, 4]
    assert all(logged[k] == v for k, v in expected.items() if not k.startswith("final/"))
    # the history keeps what earlier attempts logged: the planted point, the first final row
    at_3 = [m.value for m in store.get_metric_history(run_id, "loss") if m.step == 3]
    assert at_3 == [123.0, expected["loss"][3]]
    assert sorted(m.step for m in store.get_metric_history(run_id, "final/loss")) == [2, 4]


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("where", ["server down", "unwritable store"])
def test_a_failing_tracker_warns_once_and_the_run_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the store's folder should be")
    mlflow_settings = {}
    if where == "server down":  # given as MLflow's own variable, honoured when not set
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{unused_port()}")
    else:
        mlflow_settings = {"tracking_uri": f"sqlite:///{blocker}/mlflow.db"}
    cfg = tiny(tmp_path / "runs", "r", trackers=["mlflow"], mlflow=mlflow_settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = twinfold.train(cfg)
    failures = [str(w.message) for w in caught if "tracker mlflow failed" in str(w.message)]
    assert len(failures) == 1, failures
    assert "run.mlflow" in failures[0] and "remove mlflow from run.trackers" in failures[0]
    assert result.steps == 4 and (result.run_dir / "summary.json").is_file()
    assert len(csv_series(result.run_dir)["loss"]) == 4


def test_a_tracker_failing_mid_run_is_dropped_with_one_warning(out: Path) -> None:
    from lightning_fabric.loggers import CSVLogger

    from twinfold.metric_sinks import MetricSinks
    from twinfold.trackers.mlflow_tracker import MlflowTracker

    run_dir = out / "r"
    run_dir.mkdir()
    tracker = MlflowTracker(tiny(out, "r"), run_dir)
    sinks = MetricSinks([tracker, CSVLogger(str(run_dir / "csv"), name="", version="")])
    sinks.log({"loss": 1.0}, step=1)
    client(out).delete_run(tracker.run_id)  # the run is gone from under the tracker
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in (2, 3):
            sinks.log({"loss": float(step)}, step=step)
        sinks.finalize()
    failures = [str(w.message) for w in caught if "tracker mlflow failed" in str(w.message)]
    assert len(failures) == 1 and sinks.failed == ["mlflow"]
    assert [row["loss"] for row in csv_rows(run_dir / "csv")] == ["1.0", "2.0", "3.0"]


def test_a_listed_tracker_that_is_not_installed_exits_2_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # what an environment without it finds
    config = tmp_path / "c.yaml"
    cfg = {**TINY, "run": {"output_dir": "runs", "name": "r", "trackers": ["wandb"]}}
    config.write_text(yaml.safe_dump(cfg))
    code, _, err = run_here("train", str(config), cwd=tmp_path)
    assert code == 2, err
    assert "run.trackers: 'wandb' is not installed: pip install 'twinfold[wandb]'" in err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- Weights & Biases
def wandb_records(run_file: Path) -> list[Any]:
    """The records of an offline W&B run file (``run-<id>.wandb``): a 7-byte header, then
    LevelDB-style 32 KiB blocks of chunks (crc32, length, type: 1 full, 2 first, 3
    middle, 4 last), each record a ``wandb.internal.Record`` protobuf."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending, records = run_file.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(records: list[Any]) -> dict[str, dict[int, Any]]:
    found: dict[str, dict[int, Any]] = defaultdict(dict)
    for record in records:
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                found[key][record.history.step.num] = json.loads(item.value_json)
    return found


def test_wandb_offline_run_gets_config_metrics_plots_and_files(tmp_path: Path) -> None:
    wandb = pytest.importorskip("wandb")  # no API key (no_tracker_environment): offline
    out = tmp_path / "runs"
    run = {
        "trackers": ["wandb"],
        "resume": "auto",
        "checkpoint_every": 1,
        "wandb": {"tags": ["tiny"]},
    }
    run_dir = twinfold.train(tiny(out, "r", trainer={"stop_after": 2}, **run)).run_dir
    twinfold.train(tiny(out, "r", plots=True, **run))  # resumed at step 2
    wandb.teardown()  # the W&B service writes the run files in the background: wait for it
    run_id = json.loads((run_dir / RUN_IDS_FILE).read_text())["wandb"]["id"]
    attempts = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert [p.name.rsplit("-", 1)[1] for p in attempts] == [run_id, run_id]  # one run, resumed
    records = [wandb_records(p / f"run-{run_id}.wandb") for p in attempts]
    last = records[1]
    run = next(r.run for r in last if r.WhichOneof("record_type") == "run")
    assert run.display_name == "r" and list(run.tags) == ["tiny"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["run"]["trackers"] == ["wandb"]
    assert config["method"]["encoder"]["widths"] == [8, 16]
    history = wandb_history(records[0])
    for step_values in wandb_history(last).items():
        history[step_values[0]].update(step_values[1])
    for key, values in csv_series(run_dir).items():
        if not key.startswith("final/"):
            assert history[key] == values, key
    for plot in ("plot_loss", "plot_health"):  # the final images, at the last step
        assert history[f"plots/{plot}/_type"][4] == "image-file"
        digest = hashlib.sha256((run_dir / f"{plot}.png").read_bytes()).hexdigest()
        assert history[f"plots/{plot}/sha256"][4] == digest
    artifact = next(r.artifact for r in last if r.WhichOneof("record_type") == "artifact")
    assert artifact.type == "model" and sorted(e.path for e in artifact.manifest.contents) == [
        "backbone/backbone.json",
        "backbone/backbone.safetensors",
        "config.yaml",
        "plot_health.png",
        "plot_loss.png",
        "summary.json",
    ]
    exits = [r.exit.exit_code for r in last if r.WhichOneof("record_type") == "exit"]
    assert exits == [0]


def test_wandb_mode_auto_is_offline_without_an_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twinfold.trackers.wandb_tracker import resolve_mode

    assert resolve_mode("auto") == "offline"  # no key (no_tracker_environment)
    assert resolve_mode("online") == "online" and resolve_mode("offline") == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password k3y\n")
    assert resolve_mode("auto") == "online"  # what wandb login writes
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("WANDB_API_KEY", "k3y")
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("auto") is None  # W&B reads its own variable
    assert resolve_mode("online") == "online"  # the config, when set, wins
