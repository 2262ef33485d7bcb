"""Step settings: ``auto`` precision and memory format resolved for the hardware and
recorded, channels_last and fused optimizers computing what the plain settings compute,
and a clear error for settings that cannot exist."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import twinfold
from twinfold import CheckpointError, ConfigError
from twinfold import fast_path as fp
from twinfold.config.models import OptimizerConfig
from twinfold.optim import build_optimizer, kernel_options
from twinfold.resume import config_changes

INTEL_AMX = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n"
OLD_X86 = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def tiny(
    tmp: Path, name: str, run: dict[str, object] | None = None, **trainer: object
) -> twinfold.RunConfig:
    return twinfold.load_config({
        "preset": "vicreg-small",
        "data": {"image_size": 16, "batch_size": 64},
        "method": {"encoder": {"widths": [8, 16]},
                   "projector": {"hidden_dims": [32], "out_dim": 32}},
        "trainer": {"epochs": 1, "max_steps": 4, "progress_bar": False, "log_every": 1,
                    **trainer},
        "run": {"output_dir": str(tmp), "name": name, "plots": False, "tensorboard": "off",
                **(run or {})},
        "evaluation": {"at_end": False, "every_n_epochs": 0},
    })


def losses(run_dir: Path) -> list[float]:
    text = (run_dir / "metrics.csv").read_text().splitlines()
    header = text[0].split(",")
    col = header.index("loss")
    return [float(r.split(",")[col]) for r in text[1:] if r.split(",")[col]]


@pytest.mark.parametrize(
    ("cpuinfo", "feature"),
    [(INTEL_AMX, "amx_bf16"), (OLD_X86, None), (GRAVITON3, "bf16"), ("", None)],
)
def test_bf16_feature_from_cpuinfo(cpuinfo: str, feature: str | None) -> None:
    assert fp.bf16_feature(cpuinfo) == feature


@pytest.mark.parametrize("native", [True, False])
def test_auto_resolves_precision_and_memory_format(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fp, "cpu_bf16_feature", lambda: "amx_bf16" if native else None)
    cfg = twinfold.load_config({"preset": "byol-small"})
    assert (cfg.trainer.precision, cfg.trainer.channels_last) == ("auto", "auto")
    resolved, fast = fp.with_fast_settings(cfg)
    expected = ("bf16-mixed", True) if native else ("32-true", False)
    assert (resolved.trainer.precision, resolved.trainer.channels_last) == expected
    assert (fast.precision, fast.channels_last, fast.accelerator) == (*expected, "cpu")
    assert ("amx_bf16" if native else "no native bf16") in fast.describe()
    # explicit settings are kept as given
    forced = twinfold.load_config(
        {"preset": "byol-small"},
        overrides=["trainer.precision=bf16-mixed", "trainer.channels_last=false"],
    )
    assert fp.with_fast_settings(forced)[1].describe().startswith("bf16-mixed, contiguous")
    # a device without an automatic bf16 choice stays in float32
    assert fp.native_bf16("mps")[0] is False


def test_precision_short_forms_and_typos() -> None:
    cfg = twinfold.load_config({"preset": "byol-small"}, overrides=["trainer.precision=bf16"])
    assert cfg.trainer.precision == "bf16-mixed"
    assert twinfold.load_config(
        {"preset": "byol-small", "trainer": {"precision": 32}}
    ).trainer.precision == "32-true"
    with pytest.raises(ConfigError, match=r"trainer\.precision.*'auto', '32-true'"):
        twinfold.load_config({"preset": "byol-small"}, overrides=["trainer.precision=bf61"])


def test_run_records_resolved_settings_and_old_checkpoints_name_them(tmp_path: Path) -> None:
    result = twinfold.train(tiny(tmp_path, "auto"))
    written = yaml.safe_load((result.run_dir / "config.yaml").read_text())["trainer"]
    native = fp.cpu_bf16_feature() is not None
    assert written["precision"] == ("bf16-mixed" if native else "32-true")
    assert written["channels_last"] is native
    # resuming on this machine with 'auto' again: nothing changed
    again = tiny(tmp_path, "auto", epochs=2, max_steps=6)
    state = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert config_changes(state["config"], fp.with_fast_settings(again)[0]) == [
        "trainer.epochs",
        "trainer.max_steps",
    ]
    # a checkpoint written before these keys existed, in float32: 'auto' differs only
    # where this machine would pick bf16, and then the message names the key
    old = json.loads(state["config"])
    old["trainer"]["precision"] = "32-true"
    del old["trainer"]["channels_last"]
    changed = config_changes(json.dumps(old), fp.with_fast_settings(tiny(tmp_path, "auto"))[0])
    assert sorted(changed) == (["trainer.channels_last", "trainer.precision"] if native else [])
    pinned = fp.with_fast_settings(tiny(tmp_path, "auto", precision="32-true"))[0]
    assert config_changes(json.dumps(old), pinned) == []


def test_resume_refuses_other_precision(tmp_path: Path) -> None:
    twinfold.train(tiny(tmp_path, "run", precision="32-true"))
    with pytest.raises(CheckpointError, match=r"changed: .*trainer\.precision"):
        twinfold.train(tiny(tmp_path, "run", {"resume": True}, precision="bf16-mixed"))


def test_channels_last_computes_the_same_run(tmp_path: Path) -> None:
    plain = twinfold.train(tiny(tmp_path, "plain", precision="32-true", channels_last=False))
    nhwc = twinfold.train(tiny(tmp_path, "nhwc", precision="32-true", channels_last=True))
    a, b = losses(plain.run_dir), losses(nhwc.run_dir)
    assert len(a) == 4 and a != [a[0]] * 4
    assert a == pytest.approx(b, rel=1e-4)
    # the exported backbone is written (safetensors wants contiguous tensors) and equal up
    # to rounding (BN biases move by up to ~3e-3 in 4 steps: their gradients are sums of
    # cancelling terms, reduced in another order in NHWC, at the unadapted LARS rate)
    wa, wb = (load_file(r.run_dir / "backbone.safetensors") for r in (plain, nhwc))
    assert wa.keys() == wb.keys()
    for key in wa:
        tol = 1e-4 if wa[key].ndim == 4 else 1e-2  # conv weights much closer
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=tol)


def test_bf16_run_learns_like_float32(tmp_path: Path) -> None:
    fp32 = losses(twinfold.train(tiny(tmp_path, "fp32", precision="32-true")).run_dir)
    bf16 = losses(twinfold.train(tiny(tmp_path, "bf16", precision="bf16-mixed")).run_dir)
    assert fp32 != bf16  # the network did run in bf16
    assert bf16 == pytest.approx(fp32, rel=0.02)


@pytest.mark.parametrize("name", ["sgd", "adamw", "lars"])
@pytest.mark.parametrize("impl", ["fused", "foreach", "for-loop"])
def test_optimizer_kernels_compute_the_same_update(name: str, impl: str) -> None:
    if name == "lars" and impl == "fused":
        with pytest.raises(ConfigError, match="'fused' is not available for lars"):
            twinfold.load_config(
                {"preset": "byol-small"}, overrides=[f"optimizer.implementation={impl}"]
            )
        return
    torch.manual_seed(0)
    # a ReLU before the batch norm: a bias right before it would get a zero gradient up to
    # rounding, which Adam divides by its own size (an update of +-lr either way)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.BatchNorm1d(16),
                              torch.nn.Linear(16, 4))
    runs = []
    for kind in ("for-loop", impl):
        model = copy.deepcopy(net)
        cfg = OptimizerConfig(name=name, lr=0.1, weight_decay=1e-2, implementation=kind)
        opt = build_optimizer(model, cfg, 1.0)
        for step in range(3):
            torch.manual_seed(step)
            model(torch.randn(32, 8)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert not torch.equal(runs[0], torch.cat([p.detach().flatten() for p in net.parameters()]))
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-6)


def test_auto_kernels() -> None:
    assert kernel_options(OptimizerConfig(name="sgd"), "cpu") == {"fused": True}
    assert kernel_options(OptimizerConfig(name="adamw"), "cuda") == {"fused": True}
    assert kernel_options(OptimizerConfig(name="adamw"), "mps") == {}
    assert kernel_options(OptimizerConfig(name="lars"), "cuda") == {"foreach": None}
    fused = build_optimizer(torch.nn.Linear(2, 2), OptimizerConfig(name="sgd"), 1.0)
    assert fused.param_groups[0]["fused"] is True


@pytest.mark.slow
def test_compiled_run_matches(tmp_path: Path) -> None:
    eager = losses(twinfold.train(tiny(tmp_path, "eager", precision="32-true")).run_dir)
    compiled = losses(
        twinfold.train(tiny(tmp_path, "compiled", precision="32-true", compile=True)).run_dir
    )
    assert compiled == pytest.approx(eager, rel=1e-3)


@pytest.mark.distributed
def test_two_processes_in_bf16_follow_one_process(tmp_path: Path) -> None:
    """bf16 + channels_last through DDP: 2 ranks x 16 == 1 rank x 32 up to bf16 rounding
    (in float32 they agree to 1e-4: tests/test_distributed.py)."""
    def run(name: str, devices: int, batch: int) -> list[float]:
        cfg = tiny(tmp_path, name, precision="bf16-mixed", channels_last=True, max_steps=3,
                   devices=devices, strategy="ddp_spawn" if devices > 1 else "auto")
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"batch_size": batch})})
        return losses(twinfold.train(cfg).run_dir)

    one, two = run("one", 1, 32), run("two", 2, 16)
    assert len(one) == 3
    assert two == pytest.approx(one, rel=1e-2)
