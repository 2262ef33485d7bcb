"""The CUDA-only decisions, tested without a GPU: what a run on CUDA sets (TF32, cuDNN
autotuning, pinned batches, asynchronous copies, loader workers), torch's SyncBatchNorm
chosen for CUDA, the collective timeout reaching a DDP that Fabric picks itself, and
the paper presets' GPU-node defaults. What only a GPU can run is in docs/distributed.md
(the device check, examples/benchmarks/device_check.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from lightning_fabric.strategies import DDPStrategy
from torch import nn

import twinfold
from twinfold import fast_path as fp
from twinfold.augment.views import ViewParams
from twinfold.builtins.recipes import PAPER_HELD_OUT
from twinfold.plan import make_fabric, prepare_run
from twinfold.sync_batchnorm import GlobalBatchNorm, convert_sync_batchnorm

PAPER_PRESETS = {"byol": (1000, 100), "simsiam": (100, 50), "barlow-twins": (1000, 100),
                 "vicreg": (1000, 100)}  # epochs, kNN period
SMALL_PRESETS = ["byol-small", "simsiam-small", "barlow-twins-small", "vicreg-small"]


@pytest.fixture
def cudnn_flags() -> Iterator[None]:
    """torch's process-wide flags as they were before the test."""
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
    matmul = torch.get_float32_matmul_precision()
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = flags
    torch.set_float32_matmul_precision(matmul)


def test_backend_settings_for_cuda_and_cpu() -> None:
    cuda = fp.backend_settings("cuda", "high")
    assert (cuda.cudnn_benchmark, cuda.cudnn_tf32, cuda.pin_memory, cuda.non_blocking) == (
        True, True, True, True,
    )  # fmt: skip
    assert fp.backend_settings("cuda", "highest").cudnn_tf32 is False  # no TF32 anywhere
    cpu = fp.backend_settings("cpu", "highest")
    assert (cpu.cudnn_benchmark, cpu.cudnn_tf32, cpu.pin_memory, cpu.non_blocking) == (
        False, None, False, False,
    )  # fmt: skip
    with pytest.raises(ValueError, match="resolve trainer.matmul_precision first"):
        fp.backend_settings("cuda", "auto")


def test_apply_sets_cudnn_flags_on_cuda_only(cudnn_flags: None) -> None:
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = False, True
    fp.apply_backend_settings(fp.backend_settings("cpu", "highest"))
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32) == (False, True)
    fp.apply_backend_settings(fp.backend_settings("cuda", "highest"))
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32) == (True, False)
    assert torch.get_float32_matmul_precision() == "highest"
    fp.apply_backend_settings(fp.backend_settings("cuda", "high"))
    assert torch.backends.cudnn.allow_tf32 is True
    assert torch.get_float32_matmul_precision() == "high"


@pytest.mark.parametrize(("accelerator", "expected"), [("cuda", "high"), ("cpu", "highest")])
def test_matmul_precision_auto_is_tf32_on_cuda_only(accelerator: str, expected: str) -> None:
    cfg = twinfold.load_config({"preset": "byol-small", "trainer": {"accelerator": accelerator}})
    assert cfg.trainer.matmul_precision == "auto"
    resolved, fast = fp.with_fast_settings(cfg)
    assert resolved.trainer.matmul_precision == fast.matmul_precision == expected
    assert f"matmul_precision auto: {expected} on {accelerator}" in fast.describe()
    if accelerator == "cuda":  # without a visible GPU: float32, TF32 products
        assert fast.precision == "32-true" and "TF32" in fast.describe()
    pinned = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(
        update={"matmul_precision": "highest"})})  # fmt: skip
    assert fp.with_fast_settings(pinned)[1].matmul_precision == "highest"


@pytest.mark.parametrize(
    ("setting", "device", "per_node", "cpus", "workers"),
    [
        ("auto", "cuda", 8, 128, 15),  # 16 CPUs per GPU, one for the training process
        ("auto", "cuda", 1, 16, 15),  # the device machine: one H200, 16 cores
        ("auto", "cuda", 1, 96, fp.MAX_AUTO_WORKERS),
        ("auto", "cuda", 4, 4, 0),
        ("auto", "cpu", 1, 64, 0),
        (3, "cuda", 1, 64, 3),
        (0, "cpu", 1, 64, 0),
    ],
)
def test_loader_workers(setting: object, device: str, per_node: int, cpus: int,
                        workers: int) -> None:  # fmt: skip
    got, why = fp.loader_workers(setting, device, per_node, cpus)  # type: ignore[arg-type]
    assert got == workers
    assert (why != "") == (setting == "auto")


def test_prepare_run_resolves_and_records_the_workers(tmp_path: Path) -> None:
    cfg = twinfold.load_config({
        "preset": "vicreg-small",
        "data": {"num_workers": "auto"},
        "run": {"output_dir": str(tmp_path)},
    })
    plan, _ = prepare_run(cfg)
    assert plan.cfg.data.num_workers == 0  # on a CPU
    assert "num_workers auto: 0 on cpu" in plan.describe()
    assert (plan.backend.pin_memory, plan.backend.matmul_precision) == (False, "highest")
    with pytest.raises(twinfold.ConfigError, match="a count >= 0 or 'auto'"):
        twinfold.load_config({"preset": "vicreg-small", "data": {"num_workers": -2}})


@pytest.mark.parametrize("strategy", ["auto", "ddp"])
def test_collective_timeout_reaches_the_ddp_fabric_chooses(strategy: str) -> None:
    cfg = twinfold.load_config({
        "preset": "vicreg-small",
        "trainer": {"accelerator": "cpu", "devices": 2, "strategy": strategy,
                    "collective_timeout_s": 7, "precision": "32-true"},
    })  # fmt: skip
    fabric = make_fabric(fp.with_fast_settings(cfg)[0])  # built, not launched
    assert isinstance(fabric.strategy, DDPStrategy)
    assert fabric.strategy._timeout == timedelta(seconds=7)


def test_sync_batchnorm_is_torchs_on_cuda_and_keeps_names() -> None:
    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                             nn.Linear(4, 4), nn.BatchNorm1d(4))  # fmt: skip

    plain = net()
    on_cuda = convert_sync_batchnorm(net(), torch.device("cuda"))  # no GPU needed to convert
    elsewhere = convert_sync_batchnorm(net(), torch.device("cpu"))
    assert [type(m) for m in on_cuda if isinstance(m, nn.modules.batchnorm._BatchNorm)] == [
        nn.SyncBatchNorm, nn.SyncBatchNorm]  # fmt: skip
    assert all(not isinstance(m, nn.SyncBatchNorm) for m in elsewhere.modules())
    assert any(isinstance(m, GlobalBatchNorm) for m in elsewhere.modules())
    for converted in (on_cuda, elsewhere):
        state = converted.state_dict()
        assert list(state) == list(plain.state_dict())
        for key, value in plain.state_dict().items():
            assert torch.equal(state[key], value)


def test_loader_pins_batches_when_asked(tmp_path: Path) -> None:
    from twinfold.training_data import training_data

    plan, _ = prepare_run(twinfold.load_config({
        "preset": "vicreg-small", "run": {"output_dir": str(tmp_path)}}))  # fmt: skip
    parts = twinfold.plan.build_parts(plan.cfg, plan.components)
    for pin in (False, True):  # built, not iterated: pinning needs a GPU
        data = training_data(plan.cfg, parts.sources.train, parts.pipeline, batched=True,
                             batch_size=8, world_size=1, rank=0, pin_memory=pin)  # fmt: skip
        assert data.loader.pin_memory is pin


def test_view_params_move_with_non_blocking_copies() -> None:
    params = ViewParams(*[torch.arange(4) for _ in range(9)])
    moved = params.to("cpu", non_blocking=True)
    assert all(torch.equal(a, b) for a, b in zip(vars(moved).values(), vars(params).values()))
    assert callable(params.pin_memory)  # what a pinning DataLoader calls (needs a GPU)


@pytest.mark.parametrize(("name", "epochs"), list(PAPER_PRESETS.items()))
def test_paper_presets_suit_a_gpu_node(name: str, epochs: tuple[int, int]) -> None:
    cfg = twinfold.load_config({"preset": name, "data": {"root": "/data/imagenet/train"}})
    assert (cfg.trainer.epochs, cfg.evaluation.every_n_epochs) == epochs
    assert (cfg.data.num_workers, cfg.data.holdout_fraction) == ("auto", 0.01)
    assert cfg.trainer.matmul_precision == "auto"
    preset = twinfold.default_registry().get("preset", name)
    assert PAPER_HELD_OUT in preset.record.deviations


@pytest.mark.parametrize("name", SMALL_PRESETS)
def test_small_presets_keep_their_cpu_settings(name: str) -> None:
    cfg = twinfold.load_config({"preset": name})
    assert (cfg.data.num_workers, cfg.data.holdout_fraction) == (0, 0.2)
    resolved, _ = fp.with_fast_settings(cfg)
    assert resolved.trainer.matmul_precision == "highest"
