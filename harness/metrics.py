"""FSS metrics exactly as HSNet computes them (PROTOCOLS.md section 3).

Per episode, with binary prediction P and ground truth G restricted to non-ignored pixels, the
intersection and union of background and of foreground are counted. Counts are summed per class over
the run; mIoU is the mean over the fold's classes of sum(I_fg) / max(sum(U_fg), 1), and FB-IoU the
mean over {bg, fg} of the class-summed I over the class-summed U. Counts are exact integers (HSNet
accumulates them in float32, which can round once a class passes 2**24 pixels; the difference is
below 1e-5 mIoU).

The state is additive: merging two states is a sum, so shards and resumed runs give results
bit-identical to one uninterrupted run. Per-episode records are kept for bootstrap statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # reports that recompute metrics from records import no torch
    import torch

BACKGROUND, FOREGROUND = 0, 1


@dataclass(frozen=True)
class MetricSpec:
    """A metric a task reports: its record name, column label and direction. Reports and `compare`
    read these declarations; the first a task declares is its headline metric."""

    name: str
    label: str
    higher_is_better: bool = True


FSS_METRICS = (MetricSpec("miou", "mIoU"), MetricSpec("fbiou", "FB-IoU"))


@dataclass(frozen=True)
class EpisodeScore:
    index: int
    class_id: int
    inter: tuple[int, int]  # (background, foreground) intersection pixel counts
    union: tuple[int, int]  # (background, foreground) union pixel counts

    @property
    def iou(self) -> float:
        """This episode's foreground IoU (for inspection; the run's mIoU is class-accumulated)."""
        return self.inter[FOREGROUND] / max(self.union[FOREGROUND], 1)


def episode_counts(prediction: torch.Tensor, truth: torch.Tensor, ignore: torch.Tensor | None):
    """(inter_bg, inter_fg), (union_bg, union_fg) of boolean masks, ignored pixels removed.

    From four pixel counts (valid, P, G, P & G): background is the complement of foreground among the
    valid pixels, so inter_bg = valid - |P | G| and union_bg = valid - |P & G|. Counted with numpy on the
    CPU (a few bit counts, off torch's thread pool), with torch on other devices."""
    on_cpu = prediction.device.type == "cpu"
    if on_cpu:
        prediction, truth = prediction.numpy(), truth.numpy()
        ignore = None if ignore is None else ignore.cpu().numpy()

    def count(mask) -> int:
        return int(np.count_nonzero(mask) if on_cpu else mask.count_nonzero())
    valid = math.prod(truth.shape)
    if ignore is not None:
        kept = ~ignore
        prediction, truth, valid = prediction & kept, truth & kept, count(kept)
    inter_fg = count(prediction & truth)
    union_fg = count(prediction) + count(truth) - inter_fg
    return (valid - union_fg, inter_fg), (valid - inter_fg, union_fg)


@dataclass
class FssMetricState:
    """Class-accumulated intersection and union counts of one fold, plus per-episode records."""

    class_ids: tuple[int, ...]
    inter: np.ndarray = field(init=False)  # [n_classes, 2] int64
    union: np.ndarray = field(init=False)
    records: list[EpisodeScore] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.class_ids = tuple(self.class_ids)
        self._row = {class_id: row for row, class_id in enumerate(self.class_ids)}
        self.inter = np.zeros((len(self.class_ids), 2), dtype=np.int64)
        self.union = np.zeros((len(self.class_ids), 2), dtype=np.int64)

    def update(self, score: EpisodeScore) -> None:
        row = self._row.get(score.class_id)
        if row is None:
            raise ValueError(f"episode {score.index}: class {score.class_id} is not one of {self.class_ids}")
        self.inter[row] += score.inter
        self.union[row] += score.union
        self.records.append(score)

    def merge(self, other: "FssMetricState") -> "FssMetricState":
        if other.class_ids != self.class_ids:
            raise ValueError(f"cannot merge states over classes {self.class_ids} and {other.class_ids}")
        merged = FssMetricState(self.class_ids)
        merged.inter = self.inter + other.inter
        merged.union = self.union + other.union
        merged.records = sorted([*self.records, *other.records], key=lambda score: score.index)
        return merged

    @classmethod
    def from_records(cls, class_ids, records) -> "FssMetricState":
        state = cls(class_ids)
        for score in records:
            state.update(score)
        return state

    def per_class_iou(self) -> dict[int, float]:
        iou = self.inter[:, FOREGROUND] / np.maximum(self.union[:, FOREGROUND], 1)
        return {class_id: float(value) * 100 for class_id, value in zip(self.class_ids, iou)}

    def miou(self) -> float:
        iou = self.inter[:, FOREGROUND] / np.maximum(self.union[:, FOREGROUND], 1)
        return float(iou.mean()) * 100

    def fbiou(self) -> float:
        total_inter = self.inter.sum(axis=0)
        total_union = self.union.sum(axis=0)
        return float((total_inter / np.maximum(total_union, 1)).mean()) * 100


def vote_merge(masks: torch.Tensor) -> torch.Tensor:
    """HSNet's K-shot merge of K one-shot binary predictions [K, H, W] into one [H, W] mask.

    The K masks are summed, divided by the image's maximum vote (at least 1) and thresholded at 0.5.
    """
    votes = masks.float().sum(dim=0)
    return (votes / votes.max().clamp(min=1) >= 0.5).float()
