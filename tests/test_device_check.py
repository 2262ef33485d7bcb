"""The device check (examples/benchmarks/device_check.py) at toy sizes on the CPU, so it
never rots before a GPU runs it: every section runs and reports numbers, the JSON holds
what was printed, a failing section is reported while the others run, and a spent budget
skips what is left."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

PATH = Path(__file__).resolve().parents[1] / "examples" / "benchmarks" / "device_check.py"


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Toy steps gain nothing from a thread pool; on a shared CPU one is much faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def _check() -> ModuleType:
    key = "device_check_under_test"
    spec = importlib.util.spec_from_file_location(key, PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


def _section(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in report["sections"] if s["name"] == name)


def test_tiny_check_runs_every_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "check.json"
    report = _check().main(["--tiny", "--json", str(out)])
    printed = capsys.readouterr().out
    assert json.loads(out.read_text(encoding="utf-8"))["sections"] == report["sections"]
    names = [s["name"] for s in report["sections"]]
    assert names == ["environment", "gemm", "steps", "optimizers", "views", "jpeg", "train",
                     "compile", "targets"]
    for section in report["sections"]:
        assert section["status"] == "ok", section
        assert all("error" not in row for row in section["rows"]), section
    env = _section(report, "environment")["rows"][0]
    assert env["torch"] == torch.__version__ and env["matmul_precision"] == "highest"
    assert all(r["tflops"] > 0 for r in _section(report, "gemm")["rows"])
    steps = _section(report, "steps")["rows"]
    assert {(r["method"], r["step"], r["precision"]) for r in steps} == {
        (kind, step, precision)
        for kind in ("byol", "simsiam", "barlow-twins", "vicreg")
        for step in ("plain", "twinfold")
        for precision in ("fp32", "bf16 + channels_last")
    }
    for row in steps:  # same modules: the same counted FLOPs in both steps
        assert row["ms"] > 0 and 0 < row["mfu"] and row["gflop"] > 0
    by = {(r["method"], r["step"], r["precision"]): r["gflop"] for r in steps}
    assert by[("vicreg", "plain", "fp32")] == pytest.approx(by[("vicreg", "twinfold", "fp32")])
    optim = _section(report, "optimizers")["rows"]
    assert [r["optimizer"] for r in optim] == ["sgd", "adamw", "lars"]
    assert all(r["max_abs_diff"] < 1e-4 for r in optim)
    assert optim[0]["kernels"] == "{'fused': True}"
    views = _section(report, "views")["rows"]
    assert [r["views"] for r in views] == ["batched on cpu", "batched on cpu vs cpu",
                                           "per-sample in CPU workers"]
    assert views[1] == {"views": "batched on cpu vs cpu", "dtype": "torch.float32",
                        "max_abs_diff_vs_cpu": 0.0}
    assert views[0]["images_per_s"] > 0 and views[2]["images_per_s"] > 0
    jpeg = _section(report, "jpeg")["rows"]
    assert [r["jpeg"] for r in jpeg] == ["decoded in the workers", "decoded on cpu",
                                         "crops on cpu vs cpu"]
    assert jpeg[0]["images_per_s"] > 0 and jpeg[1]["images_per_s"] > 0
    assert jpeg[2]["max_abs_diff_vs_cpu"] == 0.0
    train = _section(report, "train")["rows"][0]
    assert (train["stopped_at"], train["steps"]) == (2, 4)  # checkpoint, then resumed
    assert 0 <= train["knn_top1"] <= 1 and f"kNN top-1: {train['knn_top1']}" in printed
    assert train["backbone_dim"] == 16
    compiled = _section(report, "compile")["rows"]
    assert [(r["method"], r["step"]) for r in compiled] == [("vicreg", "plain"),
                                                           ("vicreg", "twinfold")]
    targets = _section(report, "targets")["rows"]
    assert len(targets) == 4 * 4
    assert all(t["value"] is not None and math.isfinite(t["value"]) for t in targets)


def test_a_failing_section_is_reported_and_the_rest_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = _check()

    def broken(_: Any, rows: list[dict[str, Any]]) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    def cut(_: Any, rows: list[dict[str, Any]]) -> None:
        rows.append({"method": "byol", "ms": 1.0})
        raise check.OutOfTime("the global time budget ran out")

    monkeypatch.setitem(check.SECTIONS, "gemm", broken)
    monkeypatch.setitem(check.SECTIONS, "optimizers", cut)
    out = tmp_path / "check.json"
    report = check.main(["--tiny", "--sections", "environment", "gemm", "optimizers", "views",
                         "--json", str(out)])  # fmt: skip
    status = {s["name"]: (s["status"], s["error"]) for s in report["sections"]}
    assert status["gemm"] == ("error", "RuntimeError: CUDA error: an illegal memory access "
                              "was encountered")  # fmt: skip
    assert status["environment"] == status["views"] == ("ok", None)
    assert status["optimizers"] == ("skipped", "the global time budget ran out")
    assert _section(report, "optimizers")["rows"] == [{"method": "byol", "ms": 1.0}]  # kept
    assert json.loads(out.read_text(encoding="utf-8"))["sections"][1]["status"] == "error"
    # with no gemm peak, no MFU: a row that fails alone is reported in its place
    rows: list[dict[str, Any]] = []
    check.guarded(rows, {"method": "byol"}, lambda: {"ms": 1 / 0})
    assert rows == [{"method": "byol", "error": "ZeroDivisionError: division by zero"}]


def test_a_spent_budget_skips_what_is_left(tmp_path: Path) -> None:
    check = _check()
    report = check.main(["--tiny", "--budget-s", "0", "--json", str(tmp_path / "c.json")])
    skipped = [s for s in report["sections"] if s["name"] != "targets"]
    assert len(skipped) == len(check.SECTION_ORDER) == 8
    assert all(s["status"] == "skipped" for s in skipped)
    assert "budget" in skipped[0]["error"]
    assert _section(report, "targets")["status"] == "ok"  # computed from whatever ran
    assert all(t["value"] is None and t["met"] is None
               for t in _section(report, "targets")["rows"])  # fmt: skip
