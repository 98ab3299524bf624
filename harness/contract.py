"""The method adapter contract.

An adapter declares what it can do (support annotations, options and their choices, backbones), the
weight files it needs and whether it can run with random weights; `setup` loads it on a device once
per run. Its task interfaces say which tasks it does: an `FssAdapter` maps a batch of episodes to
per-query foreground probabilities (or 0/1 masks) at the evaluation resolution; a `GfssAdapter`
adapts to a run's novel supports and labels whole images. The harness loads data, checks outputs,
scores and times; adapters only predict.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from fssbench.harness.datasets import IGNORE_LABEL, DatasetReader  # noqa: F401  (adapters find IGNORE_LABEL here)
from fssbench.harness.episodes import Episode
from fssbench.harness.errors import UsageError


@dataclass(frozen=True)
class WeightSpec:
    name: str  # the NAME in --weights NAME=PATH
    expected: str  # the file or folder users pass, as its authors publish it
    source: str  # where users get it
    required: bool = True


@dataclass
class SetupContext:
    device: torch.device
    weights: dict[str, Path]  # the --weights the user gave, by name
    random_init: bool
    shot: int
    resolution: int
    seed: int
    class_names: list[str]
    # the run's dataset and its protocol's folds, for methods that train at adapt time (Syn4Seg's base data)
    reader: DatasetReader | None = None
    folds: tuple[int, ...] = ()


@dataclass
class EpisodeBatch:
    """B episodes at the evaluation resolution, on the run's device.

    Images are float32 RGB in [0, 1]. Support masks are float32, 1 on annotated foreground;
    `support_labelled` is 1 where the protocol's support annotation labels a pixel (everywhere for
    masks; box and scribble leave pixels unlabelled; image-only and text supports label none).
    `query_masks` is set only for adapters that declare `needs_query_ground_truth` (the oracle).
    """

    episodes: list[Episode]
    query_images: torch.Tensor  # [B, 3, H, W]
    support_images: torch.Tensor  # [B, K, 3, H, W]
    support_masks: torch.Tensor  # [B, K, H, W]
    support_labelled: torch.Tensor  # [B, K, H, W]
    support_annotation: str  # mask, box, scribble, none or text
    class_names: list[str]
    query_masks: torch.Tensor | None = field(default=None)  # [B, H, W]


@dataclass
class GfssLabelSpace:
    """Generalized FSS labels: index 0 is background, then the base classes, then the novel classes
    (dataset class ids, each group ascending, as DIaM orders them)."""

    base: list[int]
    novel: list[int]
    names: list[str]  # one per label index

    @property
    def size(self) -> int:
        return 1 + len(self.base) + len(self.novel)


@dataclass
class GfssSupportSet:
    """The novel classes' supports of one run, at the evaluation resolution, on the run's device.

    `labels` are label indices of the run's label space: a support's novel class, 0 elsewhere (base
    pixels count as background, as in DIaM) and 255 where pixels are ignored or padding.
    """

    images: torch.Tensor  # [N, 3, H, W] float RGB in [0, 1]
    labels: torch.Tensor  # [N, H, W] int64
    class_ids: list[int]  # the novel class each support was drawn for


OptionValue = bool | int | float | str


class Adapter(ABC):
    """What every method declares. A method implements one task interface or both: `FssAdapter`
    (episodic FSS: `predict`) and `GfssAdapter` (generalized FSS: `adapt` once, then `segment`)."""

    description: ClassVar[str]
    tasks: ClassVar[frozenset[str]]  # derived from the interfaces the class implements
    support_annotations: ClassVar[frozenset[str]] = frozenset({"mask"})
    weights: ClassVar[tuple[WeightSpec, ...]] = ()
    supports_random_init: ClassVar[bool] = True
    needs_query_ground_truth: ClassVar[bool] = False
    option_defaults: ClassVar[dict[str, OptionValue]] = {}  # --option NAME=VALUE, typed by the default
    option_choices: ClassVar[dict[str, tuple[str, ...]]] = {}  # the accepted values of enumerated options
    backbones: ClassVar[tuple[str, ...]] = ()  # accepted --backbone names; the first is the default

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.tasks = frozenset(base.__dict__["task"] for base in cls.__mro__ if "task" in base.__dict__)

    def __init__(self, options: dict[str, OptionValue] | None = None, backbone: str | None = None) -> None:
        self.options: dict[str, OptionValue] = {**self.option_defaults, **(options or {})}
        self.check_choices(self.options)
        self.backbone_name = backbone or (self.backbones[0] if self.backbones else None)

    @classmethod
    def check_choices(cls, options: dict[str, OptionValue]) -> None:
        for name, allowed in cls.option_choices.items():
            if options[name] not in allowed:
                raise UsageError(f"--option {name}={options[name]}: expected one of {', '.join(allowed)}")

    @property
    def backbone(self) -> str | None:
        return self.backbone_name

    def packaged_weights(self) -> dict[str, Path]:
        """Weight files the adapter loads from installed packages, so their hashes are recorded."""
        return {}

    @abstractmethod
    def setup(self, context: SetupContext) -> None: ...

    def report(self) -> dict[str, Any]:
        """Method-specific facts for the run record (`method_report`), collected when the run ends (also
        when it fails): e.g. a synthetic set's hash and the cost of making it. JSON-serializable."""
        return {}


class FssAdapter(Adapter):
    """Episodic few-shot segmentation: each episode's supports and query in, a foreground map out."""

    task: ClassVar[str] = "fss"
    # "vote": `predict` returns one prediction per support, [B, K, H, W], and the harness merges them by
    # HSNet's K-shot vote at the scoring resolution (at the original size with --original-resolution)
    shot_merge: ClassVar[str | None] = None

    @abstractmethod
    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        """[B, H, W] foreground probabilities in [0, 1] (or 0/1 masks); foreground where > 0.5. With
        `shot_merge = "vote"`: [B, K, H, W], each support's one-shot prediction."""


class GfssAdapter(Adapter):
    """Generalized FSS: adapt once per run to the novel classes' supports, then label whole images."""

    task: ClassVar[str] = "gfss"

    @abstractmethod
    def adapt(self, labels: GfssLabelSpace, supports: GfssSupportSet) -> None: ...

    @abstractmethod
    def segment(self, images: torch.Tensor, truth: torch.Tensor | None = None) -> torch.Tensor:
        """images [B, 3, H, W] -> [B, H, W] integer label indices of the run's label space. `truth` is
        the ground-truth label indices, given only to adapters that declare `needs_query_ground_truth`."""
