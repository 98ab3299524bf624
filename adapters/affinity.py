"""The three steps of affinity-based few-shot segmentation, as GSM's Figure 1 lays them out.

An affinity-based method encodes the query and the reference set once, then
1. computes the affinity of every query pixel to the references' foreground (S+) and background
   (S-): one map per reference, combined by a mean over references (or by given weights);
2.-3. turns S+ and S- into a prior, prompts and a mask.
Splitting `predict` into `encode`, `affinity` and `mask` lets a booster (GSM) change the
reference set and the reference weights of step 1 and run steps 2-3 again, without knowing how a
method computes its affinities or its masks.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fssbench.harness.contract import EpisodeBatch, FssAdapter


@dataclass(frozen=True)
class References:
    """The reference set: dense features and foreground/background masks of N references.

    Foreground and background need not be complementary: pixels a box or scribble leaves unlabelled
    are in neither, and so are the pixels GSM's proxy mask is unsure of.
    """

    features: torch.Tensor  # [B, N, C, h, w]
    foreground: torch.Tensor  # [B, N, H, W] in [0, 1]
    background: torch.Tensor  # [B, N, H, W] in [0, 1]

    @classmethod
    def of_supports(cls, features: torch.Tensor, batch: EpisodeBatch) -> References:
        """Support features [B, K, C, h, w] with the batch's annotation."""
        masks = batch.support_masks
        return cls(features, masks, batch.support_labelled * (1 - masks))

    def joined(self, features: torch.Tensor, foreground: torch.Tensor, background: torch.Tensor) -> References:
        """The set with one more reference per batch item: features [B, C, h, w], masks [B, H, W]."""
        return References(torch.cat([self.features, features[:, None]], dim=1),
                          torch.cat([self.foreground, foreground[:, None].to(self.foreground.dtype)], dim=1),
                          torch.cat([self.background, background[:, None].to(self.background.dtype)], dim=1))


@dataclass(frozen=True)
class Encoded:
    """What `encode` computes once per batch: the query's dense features and the supports."""

    query_features: torch.Tensor  # [B, C, h, w]
    references: References
    image_size: tuple[int, int]  # (H, W) of the evaluation resolution


@dataclass(frozen=True)
class Affinity:
    """Step 1's output: per query pixel, the affinity to the references' foreground and background."""

    positive: torch.Tensor  # S+ [B, h, w]
    negative: torch.Tensor  # S- [B, h, w]


def masked_average(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """features [N, C, h, w], masks [N, H, W] in [0, 1] -> prototypes [N, C]."""
    weights = F.interpolate(masks[:, None], features.shape[-2:], mode="bilinear", align_corners=False)
    return (features * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp(min=1e-6)


def reference_prototypes(references: References) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background prototypes [B, N, C] of every reference (GSM's Eq. 10)."""
    b, n = references.features.shape[:2]
    features = references.features.flatten(0, 1)
    foreground = masked_average(features, references.foreground.flatten(0, 1)).view(b, n, -1)
    background = masked_average(features, references.background.flatten(0, 1)).view(b, n, -1)
    return foreground, background


def combine_references(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """values [B, N, ...] -> [B, ...]: the mean over references, or the sum weighted by [B, N] weights."""
    if weights is None:
        return values.mean(dim=1)
    return (weights.view(*weights.shape, *(1,) * (values.dim() - 2)) * values).sum(dim=1)


class AffinityAdapter(FssAdapter):
    """An adapter whose `predict` is `mask(affinity(encode(batch)))`."""

    @abstractmethod
    def encode(self, batch: EpisodeBatch) -> Encoded: ...

    @abstractmethod
    def affinity(self, encoded: Encoded, references: References, foreground_weights: torch.Tensor | None = None,
                 background_weights: torch.Tensor | None = None) -> Affinity:
        """Step 1. Weights [B, N] combine the references' affinities (None: their plain mean)."""

    @abstractmethod
    def mask(self, encoded: Encoded, affinity: Affinity) -> torch.Tensor:
        """Steps 2 and 3: [B, H, W] foreground probability (or 0/1 mask) at the evaluation resolution."""

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        encoded = self.encode(batch)
        return self.mask(encoded, self.affinity(encoded, encoded.references))
