"""The learner's model: a frozen registered backbone, a light head and a cosine classifier.

Dense features: each of the backbone's three layers L2-normalized per pixel, brought to the first
layer's grid (stride 8) bilinearly and concatenated (as protonet does). The head maps them to an
embedding (1x1 convolution, ReLU, 1x1 convolution: per pixel, so it trains in minutes on a CPU),
L2-normalized per pixel. The classifier holds one
weight vector per class (background first); a pixel's logit for class c is `scale * cos(e, w_c)`.

Novel classes are registered by weight imprinting: a class's weight is the L2-normalized masked
average of the same embedding over its support pixels, stored next to the trained weights, which
are normalized alike, so base and novel classes compete on one cosine scale (in the spirit of VP's
visual prompts, which are initialised from such prototypes; VP then fine-tunes them, this learner
does not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fssbench.adapters.gfss_learner.config import GfssLearnerConfig


def dense_features(layers: list[torch.Tensor]) -> torch.Tensor:
    """The backbone's layers [N, C_l, h_l, w_l] -> [N, sum C_l, h_0, w_0], each layer unit-norm per pixel."""
    size = layers[0].shape[-2:]
    return torch.cat([F.interpolate(F.normalize(layer, dim=1), size, mode="bilinear", align_corners=False)
                      for layer in layers], dim=1)


class GfssHead(nn.Module):
    """Embedding head and cosine classifier over `classes` classes (background included)."""

    def __init__(self, in_channels: int, classes: int, config: GfssLearnerConfig) -> None:
        super().__init__()
        self.scale = config.scale
        self.embed = nn.Sequential(nn.Conv2d(in_channels, config.hidden, 1), nn.ReLU(),
                                   nn.Conv2d(config.hidden, config.embedding, 1))
        self.classifier = nn.Parameter(torch.randn(classes, config.embedding) / config.embedding ** 0.5)

    def embedding(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """[N, D, h, w], unit norm per pixel."""
        return F.normalize(self.embed(dense_features(layers)), dim=1)

    def logits(self, embedding: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """[N, D, h, w] -> [N, classes, h, w]; `weights` [classes, D] replaces the trained classifier."""
        weights = self.classifier if weights is None else weights
        return self.scale * torch.einsum("ndhw,cd->nchw", embedding, F.normalize(weights, dim=1))


def masked_average(embedding: torch.Tensor, labels: torch.Tensor, label: int) -> torch.Tensor | None:
    """The L2-normalized mean of `embedding` [N, D, h, w] over the pixels of `labels` [N, H, W] equal to
    `label`, each pixel of the grid weighted by the fraction of its area the label covers (the label maps
    area-resized to the grid); None when no pixel has the label."""
    weights = F.interpolate((labels == label).float()[:, None], embedding.shape[-2:], mode="area")
    if weights.sum() == 0:
        return None
    return F.normalize((embedding * weights).sum(dim=(0, 2, 3)), dim=0)
