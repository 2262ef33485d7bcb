"""Base classes of the component kinds: config classes and component protocols."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn


class StrictModel(BaseModel):
    """pydantic model that forbids unknown keys and non-finite floats, and validates
    assignments."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False
    )


class ComponentConfig(StrictModel):
    """Config of one component. Subclasses set ``name: Literal["..."] = "..."``;
    that default is the component's registered name (one source of truth)."""

    kind: ClassVar[str] = "component"
    name: str

    @classmethod
    def component_name(cls) -> str:
        field = cls.model_fields.get("name")
        default = None if field is None else field.default
        if not isinstance(default, str):
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__} must declare "
                f'`name: Literal["<component-name>"] = "<component-name>"`'
            )
        return default


class AugmentationConfig(ComponentConfig):
    kind: ClassVar[str] = "augmentation"


class EncoderConfig(ComponentConfig):
    """An encoder gets float ``[B, 3, S, S]`` views, with S the views' ``image_size``
    (default ``data.image_size``); S is not passed to it. An encoder that needs S (a
    flattening layer, a ViT's patch grid) declares a field for it that the config sets to
    the same value, or adapts to any size (global pooling, as the builtins do)."""

    kind: ClassVar[str] = "encoder"


class HeadConfig(ComponentConfig):
    """A head's ``in_dim`` is filled by the method from the module before it."""

    kind: ClassVar[str] = "head"
    in_dim: int | None = Field(None, ge=1)


class LossConfig(ComponentConfig):
    kind: ClassVar[str] = "loss"


class TargetRuleConfig(ComponentConfig):
    kind: ClassVar[str] = "target"


@runtime_checkable
class BatchedViewEngine(Protocol):
    """Views made a batch at a time on the training device, offered by a views component
    (:meth:`ViewPipeline.batched_engine`). ``collate_fn`` runs in the data-loader workers
    on ``(uint8 image [3, H, W], sample index, sample seed)`` items; ``make_views`` turns its
    output into one float tensor per view on ``device``. A sample's views must depend
    only on its seed (not on its batch or position), as the per-sample pipeline's do.

    Optional: an engine with ``jpeg_reduction(seed, height, width, limit) -> int`` (as
    :class:`twinfold.augment.BatchedViews` has) lets images of differing sizes be decoded
    that many times smaller (``data.jpeg_reduction``); its ``collate_fn(fixed_size=False)``
    then gets a fourth item per sample, the full ``(height, width)`` its boxes are drawn
    for."""

    def collate_fn(self, *, fixed_size: bool) -> Callable[[list[tuple[Tensor, int, int]]], Any]:
        """The collate function; ``fixed_size`` is false for sources whose images differ
        in size (image folders)."""
        ...

    def make_views(self, batch: Any, device: torch.device) -> list[Tensor]: ...


class ViewPipeline(ABC):
    """Turns one decoded image (uint8 tensor ``[3, H, W]``: every image source gives three
    channels) into a list of views, float tensors ``[3, S, S]``.

    The number of views a method trains on is the length of that list: the encoder,
    heads and loss see every view (the losses pair them up, e.g.
    :meth:`Loss.view_pairs`). For the ``simclr-views`` family it is
    ``len(cfg.method.views.views)``; list three entries there for three views.

    Randomness must come from the torch global generator only: the data pipeline seeds
    it per (seed, epoch, sample index), which makes views independent of the number of
    processes and data-loader workers.
    """

    @abstractmethod
    def __call__(self, image: Tensor) -> list[Tensor]: ...

    @abstractmethod
    def plain(self, image: Tensor) -> Tensor:
        """The un-augmented, normalised image used for evaluation."""

    def batched_engine(self) -> BatchedViewEngine | None:
        """An engine making the same views a batch at a time on the training device, or
        None (the default): the data loader then calls this pipeline sample by sample.
        ``data.view_engine: auto`` uses the engine whenever a component offers one.
        :class:`twinfold.builtins.views.SimCLRViews` offers
        :class:`twinfold.augment.BatchedViews` built from its config, unless a subclass
        overrides ``__call__`` without overriding this method too."""
        return None


@dataclass(frozen=True)
class StepProgress:
    """Where training stands when an optimizer step begins: handed to every component
    that defines ``before_step(progress)``
    (:meth:`twinfold.method.SiameseMethod.before_step`)."""

    step: int
    """0-based index of the optimizer step about to run."""
    epoch: int
    """0-based epoch of that step."""
    steps_per_epoch: int
    total_steps: int

    @property
    def epoch_fraction(self) -> float:
        """Fractional epochs done before this step (``step / steps_per_epoch``)."""
        return self.step / max(self.steps_per_epoch, 1)


@dataclass
class BranchOutput:
    """Per-view outputs of a branch: backbone features, projections, predictions."""

    features: list[Tensor]
    projections: list[Tensor]
    predictions: list[Tensor]


class Loss(nn.Module, ABC):
    """A loss over per-view outputs of the online and target branches.

    ``online[i]`` and ``target[i]`` come from view ``i`` (as many views as the views
    component makes, at least 2); the loss compares each online view with the target of
    the other views. :class:`twinfold.method.SiameseMethod` calls it outside autocast with
    float32 tensors, whatever ``trainer.precision`` is (batch statistics such as
    cross-correlations lose too much in half precision); a tensor that is both an online
    and a target output (no target branch) is passed as the same object on both sides
    (:meth:`symmetric_view_pairs` relies on it). Under ``torch.distributed`` the value is
    the loss of the global batch on every rank, and its gradient is scaled for the mean
    that DDP takes over ranks (see :mod:`twinfold.distributed`).
    """

    @abstractmethod
    def terms(self, online: Sequence[Tensor], target: Sequence[Tensor]) -> dict[str, Tensor]:
        """Return ``{"loss": scalar, **named_terms}``."""

    def target_views(self, num_views: int) -> int:
        """How many LEADING views the target side gets (the others are online only);
        every view by default. A loss returning ``k < num_views`` (DINO: the teacher sees
        the 2 global crops) receives ``num_views`` online and ``k`` target tensors, and
        the target rule runs on ``views[:k]`` only."""
        return num_views

    def forward(self, online: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
        return self.terms(online, target)["loss"]

    @staticmethod
    def check_views(online: Sequence[Tensor], target: Sequence[Tensor]) -> None:
        if len(online) != len(target) or len(online) < 2:
            raise ValueError(
                f"a loss needs two equal-length lists of at least 2 views; got "
                f"{len(online)} online and {len(target)} target tensors"
            )
        for i, (o, t) in enumerate(zip(online, target, strict=True)):
            if o.ndim != 2 or o.shape != t.shape:
                raise ValueError(
                    f"view {i}: online {tuple(o.shape)} and target {tuple(t.shape)} must "
                    "both be [batch, dim] with the same shape"
                )

    @staticmethod
    def view_pairs(
        online: Sequence[Tensor], target: Sequence[Tensor]
    ) -> list[tuple[Tensor, Tensor]]:
        """All ordered (online view i, target view j) pairs with ``i != j``."""
        return [
            (online[i], target[j]) for i in range(len(online)) for j in range(len(target)) if i != j
        ]

    @staticmethod
    def symmetric_view_pairs(
        online: Sequence[Tensor], target: Sequence[Tensor]
    ) -> list[tuple[Tensor, Tensor]]:
        """Pairs for a loss symmetric in its two views: with the same tensors on both sides
        (no separate target branch) the unordered pairs ``i < j``, each computed once;
        otherwise the ordered pairs of :meth:`view_pairs`."""
        if all(o is t for o, t in zip(online, target, strict=True)):
            n = len(online)
            return [(online[i], online[j]) for i in range(n) for j in range(i + 1, n)]
        return Loss.view_pairs(online, target)


class TargetRule(ABC):
    """What the target branch is and how it follows the online branch.

    ``build`` returns a target module (never wrapped for gradient sync) or ``None``;
    ``targets`` returns the per-view target tensors the loss compares against;
    ``update`` runs after every optimizer step and returns metrics to log.
    """

    def build(self, online: nn.Module) -> nn.Module | None:
        return None

    @abstractmethod
    def targets(
        self, views: Sequence[Tensor], online_out: BranchOutput, target: nn.Module | None
    ) -> list[Tensor]: ...

    def update(
        self, online: nn.Module, target: nn.Module | None, step: int, total_steps: int
    ) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters require no gradient."""
    import copy

    clone = copy.deepcopy(module)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def matched_tensors(
    source: nn.Module, dest: nn.Module
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """Parameters and float buffers of ``dest`` matched by name with ``source``.

    Returns ``(dest_params, source_params, dest_buffers, source_buffers)``. Raises if
    the two modules do not have the same structure.
    """
    sp, dp = dict(source.named_parameters()), dict(dest.named_parameters())
    sb, db = dict(source.named_buffers()), dict(dest.named_buffers())
    if sp.keys() != dp.keys() or sb.keys() != db.keys():
        raise RuntimeError("target and online branches differ in structure")
    names = list(dp)
    bnames = [n for n in db if torch.is_floating_point(db[n])]
    return (
        [dp[n] for n in names],
        [sp[n].detach() for n in names],
        [db[n] for n in bnames],
        [sb[n] for n in bnames],
    )
