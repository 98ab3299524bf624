"""Mask quality: how well each stage's masks of synthetic samples agree with the source's true masks.

Per stage (e.g. "coarse", "algorithm1") the foreground intersection and union are summed per class over
the samples, and the stage's mIoU is the mean over classes of sum I / sum U (HSNet's class-accumulated
mIoU, x100). The state is additive, like the harness's metric state.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch


def mask_iou(prediction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Foreground IoU of boolean masks [..., H, W] -> [...]; 1 where both are empty (they agree)."""
    inter = (prediction & reference).flatten(-2).sum(-1).float()
    union = (prediction | reference).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@dataclass
class MaskQuality:
    counts: dict[str, dict[int, list[int]]] = field(default_factory=lambda: defaultdict(dict))

    def update(self, stage: str, class_id: int, mask: torch.Tensor, truth: torch.Tensor) -> None:
        inter = int((mask & truth).sum())
        union = int((mask | truth).sum())
        totals = self.counts[stage].setdefault(class_id, [0, 0, 0])
        totals[0] += inter
        totals[1] += union
        totals[2] += 1

    def miou(self, stage: str) -> float | None:
        classes = self.counts.get(stage, {})
        if not classes:
            return None
        return 100 * sum(i / max(u, 1) for i, u, _ in classes.values()) / len(classes)

    def summary(self) -> dict[str, Any]:
        """{stage: {"miou": x100, "samples": n, "classes": c}} for the run record."""
        return {stage: {"miou": self.miou(stage), "samples": sum(n for _, _, n in classes.values()),
                        "classes": len(classes)} for stage, classes in self.counts.items()}
