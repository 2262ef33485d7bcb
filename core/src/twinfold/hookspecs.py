"""The twinfold hook specifications: one declaration hook per component kind.

Each hook takes no arguments and returns (or yields) registration records
(:class:`twinfold.records.Component`, or :class:`twinfold.records.Preset` for presets).
The core's own builtins arrive through these same hooks. A plugin is any module or
object with functions decorated by :data:`hookimpl`, exposed through an entry point in
the ``twinfold`` group of its distribution's metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

import pluggy

from twinfold.components import (
    AugmentationConfig,
    ComponentConfig,
    EncoderConfig,
    HeadConfig,
    LossConfig,
    TargetRuleConfig,
)
from twinfold.records import Component, Preset

PROJECT = "twinfold"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def twinfold_augmentations() -> Iterable[Component]:
    """Register view pipelines (multi-view augmentation recipes).

    The factory receives the validated config and returns a
    :class:`twinfold.components.ViewPipeline`: a callable that turns one uint8 image
    tensor ``[3, H, W]`` into a list of float view tensors ``[3, S, S]``, one per view
    (the method trains on all of them). A config class with an ``image_size`` field that
    is unset gets ``data.image_size``. Subclassing ``SimCLRViewsConfig`` and building
    with ``build_simclr_views`` also gives the batched view engine. Minimal plugin::

        from typing import Literal
        from twinfold import hookimpl, Component
        from twinfold.builtins.views import SimCLRViewsConfig, build_simclr_views

        class MyViews(SimCLRViewsConfig):
            name: Literal["my-views"] = "my-views"

        @hookimpl
        def twinfold_augmentations():
            yield Component(MyViews, build_simclr_views, "SimCLR views, my defaults")
    """


@hookspec
def twinfold_encoders() -> Iterable[Component]:
    """Register backbones.

    The factory returns an ``nn.Module`` mapping views ``[B, 3, S, S]`` (always three
    channels; S is the views' ``image_size``, by default ``data.image_size``) to features
    ``[B, D]`` with an integer attribute ``out_dim`` (= D). S is not passed to the
    encoder: one that depends on it declares a field for it. Minimal plugin::

        from typing import Literal
        from torch import nn
        from twinfold import hookimpl, Component, EncoderConfig

        class LinearEncoderConfig(EncoderConfig):
            name: Literal["linear"] = "linear"
            image_size: int = 32  # must equal data.image_size
            out_dim: int = 128

        def build(cfg):
            pixels = 3 * cfg.image_size**2
            net = nn.Sequential(nn.Flatten(), nn.Linear(pixels, cfg.out_dim))
            net.out_dim = cfg.out_dim
            return net

        @hookimpl
        def twinfold_encoders():
            yield Component(LinearEncoderConfig, build, "one linear layer")
    """


@hookspec
def twinfold_heads() -> Iterable[Component]:
    """Register projector / predictor heads.

    The config class subclasses :class:`twinfold.components.HeadConfig`, whose
    ``in_dim`` the method fills from the module before it; the factory returns an
    ``nn.Module`` ``[B, in_dim] -> [B, out_dim]`` with attribute ``out_dim``.
    Minimal plugin::

        from typing import Literal
        from twinfold import hookimpl, Component
        from twinfold.builtins.heads import MLPHeadConfig, build_mlp_head

        class WideProjector(MLPHeadConfig):
            name: Literal["wide-projector"] = "wide-projector"
            hidden_dims: list[int] = [8192, 8192]
            out_dim: int = 8192

        @hookimpl
        def twinfold_heads():
            yield Component(WideProjector, build_mlp_head, "8192-8192-8192 MLP")
    """


@hookspec
def twinfold_losses() -> Iterable[Component]:
    """Register losses.

    The factory returns a :class:`twinfold.components.Loss`: ``forward(online, target)``
    takes two equal-length lists of per-view tensors ``[B, D]`` and returns a scalar;
    ``terms(online, target)`` returns the same scalar under ``"loss"`` plus named terms
    for logging. The method calls it outside autocast, with float32 tensors. Minimal
    plugin::

        from typing import Literal
        from twinfold import hookimpl, Component, Loss, LossConfig

        class MSEConfig(LossConfig):
            name: Literal["mse"] = "mse"

        class MSE(Loss):
            def terms(self, online, target):
                pairs = self.view_pairs(online, target)
                loss = sum(((o - t) ** 2).sum(1).mean() for o, t in pairs) / len(pairs)
                return {"loss": loss}

        @hookimpl
        def twinfold_losses():
            yield Component(MSEConfig, lambda cfg: MSE(), "mean squared error")
    """


@hookspec
def twinfold_target_updates() -> Iterable[Component]:
    """Register target-update rules (what the target branch is and how it moves).

    The factory returns a :class:`twinfold.components.TargetRule`. Minimal plugin::

        from typing import Literal
        from twinfold import hookimpl, Component, TargetRule, TargetRuleConfig

        class DetachConfig(TargetRuleConfig):
            name: Literal["detach"] = "detach"

        class Detach(TargetRule):
            def targets(self, views, online_out, target):
                return [z.detach() for z in online_out.projections]

        @hookimpl
        def twinfold_target_updates():
            yield Component(DetachConfig, lambda cfg: Detach(), "stop-gradient")
    """


@hookspec
def twinfold_presets() -> Iterable[Preset]:
    """Register method presets: named default compositions of a whole run.

    Minimal plugin::

        from twinfold import hookimpl, Preset

        @hookimpl
        def twinfold_presets():
            yield Preset(
                name="my-method",
                summary="my method on the embedded digits",
                config={"method": {"loss": {"name": "mse"}, "target": {"name": "detach"}}},
                deviations=("not a published recipe",),
            )
    """


@dataclass(frozen=True)
class ComponentKind:
    """One kind of registration: its hook spec and the base class of its config classes
    (None for presets, which register :class:`~twinfold.records.Preset` records)."""

    name: str
    hook: Callable[[], Iterable[object]]
    config_base: type[ComponentConfig] | None

    @property
    def hook_name(self) -> str:
        return self.hook.__name__


KINDS: dict[str, ComponentKind] = {
    k.name: k
    for k in (
        ComponentKind("augmentation", twinfold_augmentations, AugmentationConfig),
        ComponentKind("encoder", twinfold_encoders, EncoderConfig),
        ComponentKind("head", twinfold_heads, HeadConfig),
        ComponentKind("loss", twinfold_losses, LossConfig),
        ComponentKind("target", twinfold_target_updates, TargetRuleConfig),
        ComponentKind("preset", twinfold_presets, None),
    )
}
"""The one table of component kinds. Adding a kind is one entry here, its hook spec
above and its config base class in :mod:`twinfold.components`; the registry, the
``Kind`` names, the docs' hook reference and the config schema derive from it."""

HOOKS: dict[str, str] = {name: kind.hook_name for name, kind in KINDS.items()}
"""Kind name -> hook name (derived from :data:`KINDS`)."""

Kind = Enum("Kind", {name.upper(): name for name in KINDS}, type=str, module=__name__)  # type: ignore[misc]
Kind.__doc__ = "The kind names of :data:`KINDS` as a string enum (``Kind.LOSS == 'loss'``)."
