"""The core run path's structure and contracts: one table of kinds (a throwaway kind is one
entry), one slot map, no import cycle, a short loop, faster paths asked of the built
component (a third-party views plugin is never replaced), one resume decision, nothing
written before the config, the data and the components are built."""

from __future__ import annotations

import ast
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from torch import Tensor

import twinfold
import twinfold.resume
from twinfold import Component, ComponentConfig, ConfigError, Registry, hookimpl
from twinfold.builtins.views import SimCLRViews, SimCLRViewsConfig
from twinfold.components import BatchedViewEngine
from twinfold.config.models import SLOTS, MethodConfig
from twinfold.hookspecs import HOOKS, KINDS, ComponentKind, Kind, hookspec
from twinfold.plan import prepare_run

CORE = Path(twinfold.__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ kinds and slots
def test_hooks_kind_names_and_config_bases_derive_from_the_one_table() -> None:
    assert HOOKS == {name: kind.hook.__name__ for name, kind in KINDS.items()}
    assert {k.value for k in Kind} == set(KINDS) and Kind.LOSS == "loss"
    registry = Registry(entry_points=False)
    assert set(registry.kinds) == set(KINDS)


def _annotated_base(slot: str) -> type:
    annotation = MethodConfig.model_fields[slot].annotation
    for arg in (annotation, *typing.get_args(annotation)):
        for cls in typing.get_args(arg) or (arg,):
            if isinstance(cls, type) and issubclass(cls, ComponentConfig):
                return cls
    raise AssertionError(f"{slot} has no component annotation")


def test_the_slot_map_matches_the_method_config_fields() -> None:
    assert set(SLOTS) == set(MethodConfig.model_fields)
    for slot, kind in SLOTS.items():
        assert _annotated_base(slot) is KINDS[kind].config_base, slot


class SamplerConfig(ComponentConfig):
    """The base config of a throwaway kind."""


class UniformConfig(SamplerConfig):
    name: Literal["uniform"] = "uniform"
    n: int = 2


def _sampler_specs() -> types.ModuleType:
    module = types.ModuleType("sampler_specs")

    @hookspec
    def twinfold_samplers():
        """Register samplers."""

    module.twinfold_samplers = twinfold_samplers
    return module


class _SamplerPlugin:
    @hookimpl
    def twinfold_samplers(self):
        yield Component(UniformConfig, lambda cfg: list(range(cfg.n)), "n integers")


def test_a_new_kind_is_one_table_entry() -> None:
    specs = _sampler_specs()
    kinds = {**KINDS, "sampler": ComponentKind("sampler", specs.twinfold_samplers, SamplerConfig)}
    registry = Registry(
        entry_points=False, kinds=kinds, specs=[specs], plugins={"samplers": _SamplerPlugin()}
    )
    assert registry.available("sampler") == ["uniform"]
    assert registry.create("sampler", "uniform", n=3) == [0, 1, 2]
    rec = registry.get("sampler", "uniform")
    assert (rec.kind, rec.plugin) == ("sampler", "samplers")
    with pytest.raises(twinfold.UnknownComponentError, match="Did you mean 'uniform'"):
        registry.get("sampler", "unifrm")
    with pytest.raises(ConfigError, match="n"):
        registry.create("sampler", "uniform", n="many")
    # the kind checks its records against its own config base
    class Wrong:
        @hookimpl
        def twinfold_samplers(self):
            yield Component(twinfold.LossConfig, lambda cfg: None, "not a sampler")

    with pytest.warns(UserWarning, match="must subclass .*SamplerConfig"):
        Registry(entry_points=False, kinds=kinds, specs=[specs], plugins={"wrong": Wrong()})
    # without the table entry the kind does not exist
    with pytest.raises(twinfold.UnknownComponentError, match="unknown component kind 'sampler'"):
        Registry(entry_points=False).available("sampler")


# ------------------------------------------------------------------ module structure
def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Modules of the core that ``path`` imports, function-level imports included and
    ``if TYPE_CHECKING:`` blocks excluded."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                for alias in child.names:
                    full = f"{child.module}.{alias.name}"
                    found.add(full if full in modules else child.module)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in modules and m != name}


def _core_modules() -> dict[str, Path]:
    out = {}
    for path in CORE.rglob("*.py"):
        parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return found


def test_the_core_has_no_import_cycle() -> None:
    modules = _core_modules()
    graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
    assert _cycles(graph) == []
    # and the cycle finder finds one where there is one
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_no_function_in_the_loop_module_is_long() -> None:
    tree = ast.parse((CORE / "loop.py").read_text(encoding="utf-8"))
    lengths = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
    }
    assert lengths and max(lengths.values()) <= 60, lengths


# ------------------------------------------------------------------ tiny runs
def _tiny(tmp: Path, name: str, **changes: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "preset": "byol-small",
        "data": {"image_size": 16, "batch_size": 32},
        "method": {
            "encoder": {"widths": [8, 16]},
            "projector": {"hidden_dims": [32], "out_dim": 16},
            "predictor": {"hidden_dims": [32], "out_dim": 16},
        },
        "trainer": {"max_steps": 3, "epochs": 1, "progress_bar": False, "log_every": 1},
        "run": {"output_dir": str(tmp / "runs"), "name": name, "plots": False,
                "tensorboard": "off"},
        "evaluation": {"at_end": False, "every_n_epochs": 0},
    }
    for key, values in changes.items():
        cfg[key] = {**cfg.get(key, {}), **values}
    return cfg


class CountingViews(SimCLRViews):
    """A third-party per-sample pipeline: counts the images it augments, no engine."""

    calls = 0

    def __call__(self, image: Tensor) -> list[Tensor]:
        CountingViews.calls += 1
        return super().__call__(image)


class MyViewsConfig(SimCLRViewsConfig):
    name: Literal["my-views"] = "my-views"


class CountingEngine:
    """A third-party batched engine wrapping the builtin one; counts its batches."""

    batches = 0

    def __init__(self, inner: BatchedViewEngine) -> None:
        self.inner = inner

    def collate_fn(self, *, fixed_size: bool):
        return self.inner.collate_fn(fixed_size=fixed_size)

    def make_views(self, batch: Any, device: torch.device) -> list[Tensor]:
        CountingEngine.batches += 1
        return self.inner.make_views(batch, device)


class EngineViews(SimCLRViews):
    def batched_engine(self) -> BatchedViewEngine | None:
        engine = super().batched_engine()
        return None if engine is None else CountingEngine(engine)


class MyEngineViewsConfig(SimCLRViewsConfig):
    name: Literal["my-engine-views"] = "my-engine-views"


class _ViewsPlugin:
    @hookimpl
    def twinfold_augmentations(self):
        yield Component(MyViewsConfig, CountingViews, "per-sample views, counted")
        yield Component(MyEngineViewsConfig, EngineViews, "its own batched engine")


def _views_registry() -> Registry:
    return Registry(plugins={"myviews": _ViewsPlugin()})


def test_a_views_subclass_with_its_own_factory_is_used_in_training(tmp_path: Path) -> None:
    registry = _views_registry()
    cfg = twinfold.load_config(
        _tiny(tmp_path, "mine", method={"views": {"name": "my-views"}}), registry=registry
    )
    assert isinstance(cfg.method.views, SimCLRViewsConfig)  # of the family, own factory
    plan, _ = prepare_run(cfg, registry)
    assert plan.view_engine == "per-sample"  # the component offers no engine
    data = cfg.data.model_copy(update={"view_engine": "batched"})
    batched = cfg.model_copy(update={"data": data})
    with pytest.raises(ConfigError, match=r"data.view_engine: 'batched' needs .*'my-views'"):
        prepare_run(batched, registry)
    CountingViews.calls = 0
    result = twinfold.train(cfg, registry=registry)
    # every sample of the 3 steps (and of the batch fetched when the loop ends) went through it
    assert result.steps == 3 and CountingViews.calls >= 3 * 32


def test_a_views_plugin_ships_its_own_batched_engine(tmp_path: Path) -> None:
    registry = _views_registry()
    cfg = twinfold.load_config(
        _tiny(tmp_path, "engine", method={"views": {"name": "my-engine-views"}}),
        registry=registry,
    )
    CountingEngine.batches = 0
    plans: list[Any] = []
    result = twinfold.train(cfg, registry=registry, on_start=plans.append)
    assert plans[0].view_engine == "batched" and "views: batched" in plans[0].describe()
    assert result.steps == 3 and CountingEngine.batches == 3


def test_resume_is_decided_and_checked_once(tmp_path: Path, monkeypatch) -> None:
    twinfold.train(twinfold.load_config(_tiny(tmp_path, "r", trainer={"stop_after": 2})))
    checks: list[Path] = []
    check = twinfold.resume.check_resume

    def counting(path: Path, *args: Any, **kwargs: Any) -> dict:
        checks.append(path)
        return check(path, *args, **kwargs)

    monkeypatch.setattr(twinfold.resume, "check_resume", counting)
    result = twinfold.train(twinfold.load_config(_tiny(tmp_path, "r", run={"resume": True})))
    assert result.steps == 3 and len(checks) == 1 and checks[0].name == "step-00000002.ckpt"


class _BrokenEncoderPlugin:
    @hookimpl
    def twinfold_encoders(self):
        class BrokenConfig(twinfold.EncoderConfig):
            name: Literal["broken"] = "broken"

        def build(cfg):
            raise ValueError("the broken encoder cannot be built")

        yield Component(BrokenConfig, build, "fails in its factory")


@pytest.mark.parametrize(
    "changes",
    [
        {"data": {"dataset": "cifar10", "root": "/nonexistent"}},
        {"method": {"encoder": {"name": "broken"}}},
        {"data": {"batch_size": 4096}},
        {"evaluation": {"knn_k": 5000, "at_end": True}},
    ],
    ids=["missing-dataset", "factory-fails", "batch-too-large", "knn-k-over-the-bank"],
)
def test_nothing_is_written_when_the_data_or_a_component_cannot_be_built(
    tmp_path: Path, changes: dict
) -> None:
    registry = Registry(plugins={"broken": _BrokenEncoderPlugin()})
    cfg = twinfold.load_config(_tiny(tmp_path, "never", **changes), registry=registry)
    with pytest.raises(ConfigError) as info:
        twinfold.train(cfg, registry=registry)
    if "evaluation" in changes:  # found before training, not after it
        assert "evaluation.knn_k: 5000 neighbours, but the kNN memory bank holds 1437" in str(
            info.value
        )
    assert not (tmp_path / "runs").exists()
