"""Generalized FSS metrics exactly as DIaM computes them (PROTOCOLS.md section 5).

Per run, a confusion matrix over background + base + novel (row: ground truth, column: prediction;
ignored pixels excluded) is summed over all queries. IoU_c = I_c / (U_c + 1e-10) with classes of empty
union skipped; base mIoU over the base classes, novel mIoU over the novel ones (background in neither),
Mean = (base + novel) / 2. Over runs DIaM averages base and novel first and takes Mean of the averages;
fssbench does the same, and its harmonic mean 2BN/(B+N) (reported by newer GFSS papers, not by DIaM)
is likewise taken of the averages. The state is additive: per-query sparse confusion counts sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # reports that recompute metrics from records import no torch
    import torch

from fssbench.harness.metrics import MetricSpec

GFSS_METRICS = (MetricSpec("miou", "mean"), MetricSpec("base", "base"), MetricSpec("novel", "novel"),
                MetricSpec("harmonic", "harmonic"))
SparseConfusion = list[tuple[int, int, int]]  # (ground truth, prediction, pixels), nonzero cells only


def query_confusion(prediction: torch.Tensor, truth: torch.Tensor, ignore: torch.Tensor, classes: int) -> SparseConfusion:
    """Confusion counts of one query: prediction and truth [H, W] label indices in 0..classes-1."""
    import torch

    valid = ~ignore
    cells = truth[valid].long() * classes + prediction[valid].long()
    counts = torch.bincount(cells, minlength=classes * classes).cpu()
    nonzero = torch.nonzero(counts).flatten().tolist()
    return [(cell // classes, cell % classes, int(counts[cell])) for cell in nonzero]


def _iou(confusion: np.ndarray, index: int) -> float | None:
    inter = float(confusion[index, index])
    union = float(confusion[index, :].sum() + confusion[:, index].sum() - confusion[index, index])
    return None if union == 0 else inter / (union + 1e-10)  # DIaM: `if cls_union[i] == 0: continue`


def harmonic(base: float, novel: float) -> float:
    if math.isnan(base) or math.isnan(novel):
        return math.nan
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)


def gfss_scores(confusion: np.ndarray, base: list[int], novel: list[int]) -> dict[str, float]:
    """Base / novel / mean / harmonic mIoU (x100) of one run; `base`, `novel`: indices into the matrix.

    A group with no class of nonzero union gives nan (DIaM would divide by zero)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError("confusion must be square")

    def group(indices: list[int]) -> float:
        values = [v for v in (_iou(confusion, i) for i in indices) if v is not None]
        return 100.0 * sum(values) / len(values) if values else math.nan

    b, n = group(base), group(novel)
    return {"base": b, "novel": n, "mean": (b + n) / 2, "harmonic": harmonic(b, n)}


@dataclass
class GfssRunState:
    """One run's summed confusion matrix; label index 0 is background, then base, then novel classes."""

    base: int  # number of base classes
    novel: int  # number of novel classes

    def __post_init__(self) -> None:
        size = 1 + self.base + self.novel
        self.confusion = np.zeros((size, size), dtype=np.int64)
        self.queries = 0

    def update(self, cells: SparseConfusion) -> None:
        for truth, prediction, pixels in cells:
            self.confusion[truth, prediction] += pixels
        self.queries += 1

    def merge(self, other: "GfssRunState") -> "GfssRunState":
        merged = GfssRunState(self.base, self.novel)
        merged.confusion = self.confusion + other.confusion
        merged.queries = self.queries + other.queries
        return merged

    def scores(self) -> dict[str, float]:
        return gfss_scores(self.confusion, list(range(1, 1 + self.base)),
                           list(range(1 + self.base, 1 + self.base + self.novel)))


def average_over_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    """DIaM's aggregate: mean base and mean novel over runs, Mean and harmonic of those means."""
    base = sum(r["base"] for r in runs) / len(runs)
    novel = sum(r["novel"] for r in runs) / len(runs)
    return {"base": base, "novel": novel, "mean": (base + novel) / 2, "harmonic": harmonic(base, novel)}
