"""The benchmarks compare like with like and their new code paths run: step.py's
hand-written plain-PyTorch losses, written from the papers' formulas, equal twinfold's on
the same modules and inputs; the lightly-built step's losses equal twinfold's (BYOL up to
the documented relation) on the same heads' outputs; end_to_end.py and memory.py measure
what they say in tiny settings. The lightly tests skip when lightly is not installed."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

import twinfold
from twinfold.method import build_method

BENCHMARKS = Path(__file__).resolve().parents[1] / "examples" / "benchmarks"
PATH = BENCHMARKS / "step.py"
KINDS = ["byol", "simsiam", "barlow-twins", "vicreg"]
#: an end-to-end run of a few seconds: 179 training digits, batch 32, two steps
TINY_RUN = ["data.holdout_fraction=0.9", "data.batch_size=32", "trainer.max_steps=2"]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One intra-op thread here and in the subprocesses: the tiny steps gain nothing from
    a thread pool, and on a shared CPU one makes them much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def _load(name: str) -> ModuleType:
    """A script of examples/benchmarks as a module (registered: dataclasses need it)."""
    key = f"benchmark_{name}_under_test"
    spec = importlib.util.spec_from_file_location(key, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


def _bench() -> ModuleType:
    return _load("step")


def _tiny_config(kind: str) -> twinfold.RunConfig:
    tiny = {"encoder": {"widths": [8, 16]}, "projector": {"hidden_dims": [32], "out_dim": 16}}
    if kind in {"byol", "simsiam"}:
        tiny["predictor"] = {"hidden_dims": [32], "out_dim": 16}
    if kind in {"simsiam", "barlow-twins"}:  # lightly's heads have two equal hidden layers
        tiny["projector"]["hidden_dims"] = [32, 32]
    return twinfold.load_config({"preset": _bench().PRESETS[kind], "method": tiny})


@pytest.mark.parametrize("kind", KINDS)
def test_plain_step_loss_equals_twinfolds(kind: str) -> None:
    bench = _bench()
    cfg = _tiny_config(kind)
    torch.manual_seed(0)
    method = build_method(cfg.method)
    plain = bench.PlainStep(method, kind, lr=0.01)
    views = [torch.randn(16, 3, 16, 16) for _ in range(2)]
    ours = method.training_step(views).loss.detach()
    theirs = plain.loss(views).detach()
    assert abs(float(ours)) > 1e-3
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)


def test_the_step_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--methods", "vicreg", "--batch", "8", "--size", "16", "--repeats", "1"]
    _bench().main([*argv, "--encoder", "preset"])
    out = capsys.readouterr().out
    assert "twinfold, bf16 + channels_last" in out and "MFU" in out


# ---------------------------------------------------------------- memory.py
def test_memory_peak_is_positive_and_grows_with_the_batch() -> None:
    memory = _load("memory")
    small, big = (
        memory.measure_in_subprocess(batch, False, size=32, steps=1, encoder="preset")
        for batch in (4, 128)
    )
    assert small["built_mib"] > 0 and small["step_mib"] > 0
    assert big["peak_mib"] == pytest.approx(big["built_mib"] + big["step_mib"])
    # 128 images of 32 px hold ~16 MiB per 32-channel activation of the first stage
    assert big["step_mib"] > small["step_mib"] + 100


# ---------------------------------------------------------------- end_to_end.py
def test_epoch_seconds_add_up_the_metric_windows(tmp_path: Path) -> None:
    rows = "epoch,images_per_s,loss,step\n0,64.0,1.0,2\n0,32.0,1.0,4\n,,,4\n1,128.0,1.0,6\n"
    (tmp_path / "metrics.csv").write_text(rows)
    seconds = _load("end_to_end").epoch_seconds_from_metrics(tmp_path / "metrics.csv", 32)
    assert seconds == pytest.approx([2 * 32 / 64 + 2 * 32 / 32, 2 * 32 / 128])


def test_end_to_end_times_a_short_twinfold_epoch(tmp_path: Path) -> None:
    e2e = _load("end_to_end")
    cfg = e2e.timed_config(TINY_RUN, 1, tmp_path, "tiny")
    assert cfg.evaluation.every_n_epochs == 0 and not cfg.evaluation.at_end
    assert cfg.trainer.log_every == e2e.steps_per_epoch(cfg) == 179 // 32
    timing = e2e.time_twinfold(cfg)
    assert len(timing.epoch_seconds) == 1 and timing.epoch_seconds[0] > 0
    assert timing.settings["data.view_engine"] in {"per-sample", "batched"}
    assert timing.settings["trainer.precision"] != "auto"  # as the run resolved it
    forced = e2e.timed_config([*TINY_RUN, *e2e.FORCED], 1, tmp_path, "forced")
    assert (forced.data.view_engine, forced.trainer.precision) == ("per-sample", "32-true")


# ---------------------------------------------------------------- lightly
@pytest.mark.parametrize("kind", KINDS)
def test_lightly_losses_equal_twinfolds_on_the_same_outputs(kind: str) -> None:
    """Same heads' outputs into twinfold's loss and into the lightly-built step's loss.

    BYOL: twinfold's loss is eq. 2 summed over both directions, 4 - 2 (cos + cos); lightly
    has no BYOL loss, its examples use 0.5 (ncs(p1, z2) + ncs(p2, z1)) with
    NegativeCosineSimilarity ncs = -mean cos, i.e. (twinfold - 4) / 4; the lightly step
    writes 4 + 2 (ncs + ncs). Barlow Twins: lightly's default lambda is 5e-3 (the paper),
    twinfold's 0.0051 (the authors' code); configured alike they agree, and the defaults
    differ by 1e-4 x the off-diagonal sum. VICReg: lightly's defaults are twinfold's."""
    pytest.importorskip("lightly")
    from lightly.loss import BarlowTwinsLoss, NegativeCosineSimilarity

    bench = _bench()
    cfg = _tiny_config(kind)
    method = build_method(cfg.method)
    criterion = bench.lightly_criterion(kind, cfg)
    g = torch.Generator().manual_seed(0)
    p = [torch.randn(16, 24, generator=g) for _ in range(2)]
    z = [t + 0.5 * torch.randn(16, 24, generator=g) for t in p]
    if kind in {"barlow-twins", "vicreg"}:  # one branch: the projections on both sides
        terms = method.loss.terms(z, z)
        theirs = criterion(z, z)
    else:
        terms = method.loss.terms(p, z)
        theirs = criterion(p, z)
    ours = terms["loss"].detach()
    assert abs(float(ours)) > 1e-3
    torch.testing.assert_close(theirs.detach(), ours, rtol=1e-5, atol=1e-5)
    if kind == "byol":
        ncs = NegativeCosineSimilarity()
        example = 0.5 * (ncs(p[0], z[1]) + ncs(p[1], z[0]))
        torch.testing.assert_close(example, (ours - 4) / 4, rtol=1e-5, atol=1e-6)
    if kind == "barlow-twins":
        default = BarlowTwinsLoss()(z[0], z[1])
        gap = (cfg.method.loss.lambda_ - 5e-3) * terms["off_diag"]
        torch.testing.assert_close(ours - default, gap, rtol=1e-3, atol=1e-6)


def test_the_lightly_step_trains_and_moves_byols_target() -> None:
    pytest.importorskip("lightly")
    bench = _bench()
    cfg = _tiny_config("byol")
    method = build_method(cfg.method)
    step = bench.LightlyStep(method, "byol", cfg, lr=0.1)
    assert "BYOLProjectionHead(16, 32, 16)" in step.description and "LARS" in step.description
    before = [t.clone() for t in step.target.parameters()]
    views = [torch.randn(8, 3, 16, 16) for _ in range(2)]
    assert torch.isfinite(step.loss(views))
    step(views)
    after = list(step.target.parameters())
    assert all(not t.requires_grad for t in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_the_step_benchmark_has_the_lightly_row(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("lightly")
    argv = ["--methods", "simsiam", "--batch", "8", "--size", "16", "--repeats", "1"]
    _bench().main([*argv, "--encoder", "preset"])
    out = capsys.readouterr().out
    assert "lightly-built, fp32" in out and "vs lightly" in out
    assert "SimSiamProjectionHead(128, 512, 512)" in out and "torch SGD" in out
    assert "lightly-built, bf16 + channels_last" in out
    assert "twinfold bf16 / lightly bf16 = " in out and "(like for like)" in out


def test_the_lightly_end_to_end_loop_runs(tmp_path: Path) -> None:
    pytest.importorskip("lightly")
    e2e = _load("end_to_end")
    cfg = e2e.timed_config(TINY_RUN, 1, tmp_path, "tiny")
    timing = e2e.time_lightly(cfg, epochs=2, workers=0)
    assert len(timing.epoch_seconds) == 2 and min(timing.epoch_seconds) > 0
    # the time spent waiting for the views is part of each epoch
    assert all(0 < d < e for d, e in zip(timing.data_seconds, timing.epoch_seconds, strict=True))
    assert "BYOLPredictionHead(128, 512, 128)" in str(timing.settings["lightly"])
    fast = e2e.time_lightly(cfg, epochs=1, workers=0, fast=True)
    assert fast.settings["precision"] == "bf16 autocast + channels_last"


def test_end_to_end_ratios_compare_rows_of_the_same_precision(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bf16 twinfold row is divided by the bf16 lightly row, an fp32 one by fp32."""
    e2e = _load("end_to_end")
    times = {"default": [1.0, 1.0], "forced": [3.0], e2e.LIGHTLY_FP32: [4.0],
             e2e.LIGHTLY_FAST: [2.0]}
    settings = {"default": {"trainer.precision": "bf16-mixed"},
                "forced": {"trainer.precision": "32-true"}}
    e2e.print_table(times, settings, "default")
    lines = {line.split("  ")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["default"].endswith("0.50x") and lines["forced"].endswith("0.75x")
    assert lines[e2e.LIGHTLY_FAST].endswith("1.00x")


def test_lightly_views_take_the_configs_parameters() -> None:
    pytest.importorskip("lightly")
    from torchvision.transforms.v2.functional import to_pil_image

    from twinfold.builtins.views import ViewConfig
    from twinfold_byol.views import BYOLViewsConfig

    augmentation = _load("augmentation")
    cfg = BYOLViewsConfig(image_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    transform = augmentation.lightly_byol_transform(cfg, 16)
    views = transform(to_pil_image(torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8)))
    assert [tuple(v.shape) for v in views] == [(3, 16, 16)] * 2
    assert all(v.min() >= -1 and v.max() <= 1 for v in views)  # (x - 0.5) / 0.5
    odd = cfg.model_copy(update={"views": [ViewConfig(crop_scale=(0.2, 0.9)), ViewConfig()]})
    with pytest.raises(ValueError, match="min_scale, 1.0"):
        augmentation.lightly_byol_transform(odd, 16)


def test_the_jpeg_benchmark_runs_every_row_on_a_few_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Four generated JPEGs, 32 px views: every row measures, the table and the decoding
    table are printed, and the files are the photo-like 500 x 375 JPEGs it promises."""
    pytest.importorskip("litdata")
    bench = _load("jpeg224")
    rates = bench.main(["--images", "4", "--size", "32", "--repeats", "1", "--dir",
                        str(tmp_path)])
    expected = {"twinfold folder", "twinfold streaming", "torchvision ImageFolder + v2"}
    assert expected <= rates.keys() and all(r > 0 for r in rates.values())
    if importlib.util.find_spec("lightly") is not None:
        assert "lightly BYOLTransform" in rates
    out = capsys.readouterr().out
    assert "| twinfold streaming |" in out and "| 1/2 per side |" in out
    files = sorted((tmp_path / "jpegs").rglob("*.jpg"))
    assert len(files) == 4
    from PIL import Image

    with Image.open(files[0]) as image:
        assert image.format == "JPEG" and image.size == (500, 375)


# ---------------------------------------------------------------- step_profile.py
def test_the_step_profile_puts_the_time_in_groups(capsys: pytest.CaptureFixture[str]) -> None:
    profile = _load("step_profile")
    assert profile.group_of("aten::mkldnn_convolution") == "convolution"
    assert profile.group_of("aten::native_batch_norm_backward") == "batch norm"
    assert profile.group_of("aten::addmm") == "matmul"
    shares = profile.main(["--encoder", "preset", "--batch", "4", "--size", "8", "--steps", "1"])
    assert set(shares) == {"fp32", "bf16 + channels_last"}
    for share in shares.values():
        assert sum(share.values()) == pytest.approx(1.0)
        assert share["convolution"] > 0.05  # a CNN's step: convolutions take a visible part
    assert "convolutions alone" in capsys.readouterr().out


# ---------------------------------------------------------------- epoch_profile.py
def test_the_epoch_profile_splits_a_real_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling end_to_end
    profile = _load("epoch_profile")
    cfg = profile.e2e.timed_config(TINY_RUN, 1, tmp_path, "tiny")
    parts, total, switches = profile.twinfold_parts(cfg)
    assert set(profile.PARTS.values()) < set(parts)
    for part in ("data loading (crops, collate)", "views (the batched engine)", "backward",
                 "forward (online + target, loss)", "optimizer step", "checkpointing"):  # fmt: skip
        assert parts[part] > 0, part
    # the parts are disjoint calls within the epoch: their sum is the epoch's time
    assert sum(parts.values()) == pytest.approx(total)
    assert parts["other (the loop's own Python)"] > -0.01 * total
    assert switches.startswith(("bf16-mixed", "32-true"))
