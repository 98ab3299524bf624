"""UQDD: the U-Net that denoises the query mask, with SCM and DQM (paper section 3.3.3, eqs. 15-21).

The U-Net has three levels (mask size, /2, /4) and a middle block at the coarsest one. Level l is
conditioned on backbone layer l: its UAPF priors and the query's edge maps, resized to the level
(the middle block uses the deepest layer), so no weight depends on the backbone's channels.

SCM, after each level of the encoder and decoder and after the middle block: the noisy mask x_t,
resized to the level, is concatenated with the condition (self-conditioning); AdaIN with the time
embedding styles that combined condition (instance normalization, then a per-channel scale and
shift predicted from the embedding, eq. 15); convolutions predict the per-pixel scale gamma and
shift beta (eq. 16) that modulate the instance-normalized features (eq. 17). The paper writes
gamma . norm(f) + beta; here it is (1 + gamma) . norm(f) + beta, so the modulation starts near the
identity, as SPADE does; "Conv" is two 3x3 convolutions (a shared one, then one each for gamma and
beta).

DQM, once per denoising step at the mask size: a convolutional block predicts the error map E_t from
x_t and the query image; an IoU regression branch predicts the IoU of the binarized x_t from x_t, the
image and E_t; the IoU is embedded like a timestep. A second SCM per level then modulates the
features with E_t (resized) as condition and the IoU embedding in place of the time embedding
(eqs. 18-20). Training supervises E_t with E_gt = x0 - x_t and the IoU with IoU(x_t > 0, x0 > 0),
both with L1 (the losses are in training.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fssbench.adapters.diffup.config import PRIOR_LAYERS, DiffUpConfig
from fssbench.adapters.diffup.priors import EDGE_CHANNELS, Conditions, resize

IOU_EMBEDDING_SCALE = 1000  # the IoU in [0, 1] is embedded like a timestep in [0, 1000]


def sinusoidal_embedding(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of values [B] -> [B, dim]."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000) * torch.arange(half, device=values.device) / half)
    angles = values.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class Embedding(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(values, self.dim))


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, embedding: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(embedding, out_channels)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.time(F.silu(embedding))[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class Modulation(nn.Module):
    """SCM (eqs. 15-17): features modulated by a spatial condition styled with an embedding."""

    def __init__(self, channels: int, condition_channels: int, embedding: int, hidden: int) -> None:
        super().__init__()
        self.condition_norm = nn.InstanceNorm2d(condition_channels)
        self.style = nn.Linear(embedding, 2 * condition_channels)
        self.shared = nn.Sequential(nn.Conv2d(condition_channels, hidden, 3, padding=1), nn.SiLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)
        self.feature_norm = nn.InstanceNorm2d(channels)

    def forward(self, features: torch.Tensor, condition: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        scale, shift = self.style(F.silu(embedding))[:, :, None, None].chunk(2, dim=1)
        styled = self.condition_norm(condition) * (1 + scale) + shift  # AdaIN(c, t)
        hidden = self.shared(styled)
        return self.feature_norm(features) * (1 + self.gamma(hidden)) + self.beta(hidden)


@dataclass
class Quality:
    error: torch.Tensor  # [B, 1, M, M] predicted E_t
    iou: torch.Tensor  # [B] predicted IoU of the binarized x_t
    embedding: torch.Tensor  # [B, E] IoU embedding


class QualityHeads(nn.Module):
    """DQM's error-map head, IoU regression branch and IoU embedding."""

    def __init__(self, hidden: int, embedding: int) -> None:
        super().__init__()
        self.error = nn.Sequential(
            nn.Conv2d(1 + 3, hidden, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, 1, 3, padding=1))
        self.iou = nn.Sequential(
            nn.Conv2d(1 + 3 + 1, hidden, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, 1))
        self.embedding = Embedding(embedding)

    def forward(self, x_t: torch.Tensor, image: torch.Tensor) -> Quality:
        error = self.error(torch.cat([x_t, image], dim=1))
        iou = torch.sigmoid(self.iou(torch.cat([x_t, image, error], dim=1)))[:, 0]
        return Quality(error, iou, self.embedding(iou * IOU_EMBEDDING_SCALE))


class Level(nn.Module):
    """Residual blocks, then SCM with the level's condition, then SCM with the error map and IoU (DQM)."""

    def __init__(self, in_channels: int, channels: int, config: DiffUpConfig, condition_channels: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ResBlock(in_channels if i == 0 else channels, channels, config.embedding)
                                     for i in range(config.blocks)])
        self.condition = Modulation(channels, 1 + condition_channels, config.embedding, config.hidden)
        self.quality = Modulation(channels, 1, config.embedding, config.hidden)

    def forward(self, x: torch.Tensor, time: torch.Tensor, condition: torch.Tensor, quality: Quality) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, time)
        x = self.condition(x, condition, time)
        return self.quality(x, resize(quality.error, x.shape[-2:]), quality.embedding)


@dataclass
class Prepared:
    """Conditions resized once to the U-Net's levels, reused at every denoising step."""

    levels: list[torch.Tensor]  # [B, condition channels, M / 2^l, M / 2^l]
    image: torch.Tensor  # [B, 3, M, M]


@dataclass
class Prediction:
    output: torch.Tensor  # [B, 1, M, M] the predicted noise or clean mask (the config's `prediction`)
    quality: Quality


class UQDD(nn.Module):
    def __init__(self, config: DiffUpConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        condition_channels = 2 + config.extra_priors + EDGE_CHANNELS
        self.time = Embedding(config.embedding)
        self.quality = QualityHeads(config.hidden, config.embedding)
        self.stem = nn.Conv2d(1, widths[0], 3, padding=1)
        self.encoder = nn.ModuleList([Level(widths[max(l - 1, 0)], widths[l], config, condition_channels)
                                      for l in range(PRIOR_LAYERS)])
        self.downsample = nn.ModuleList([nn.Conv2d(widths[l], widths[l], 3, stride=2, padding=1)
                                         for l in range(PRIOR_LAYERS - 1)])
        self.middle = Level(widths[-1], widths[-1], config, condition_channels)
        self.decoder = nn.ModuleList([Level(2 * widths[l], widths[l], config, condition_channels)
                                      for l in range(PRIOR_LAYERS)])
        self.upsample = nn.ModuleList([nn.Conv2d(widths[l + 1], widths[l], 3, padding=1)
                                       for l in range(PRIOR_LAYERS - 1)])
        self.head = nn.Sequential(nn.GroupNorm(_groups(widths[0]), widths[0]), nn.SiLU(),
                                  nn.Conv2d(widths[0], 1, 3, padding=1))

    def level_sizes(self) -> list[int]:
        return [self.config.mask_size // 2 ** l for l in range(PRIOR_LAYERS)]

    def prepare(self, conditions: Conditions) -> Prepared:
        levels = [torch.cat([resize(priors, size), resize(conditions.edges, size)], dim=1)
                  for priors, size in zip(conditions.priors, self.level_sizes())]
        return Prepared(levels, conditions.image)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, prepared: Prepared) -> Prediction:
        """x_t [B, 1, M, M], t [B] -> the predicted noise (or clean mask), error map and IoU."""
        time = self.time(t)
        quality = self.quality(x_t, prepared.image)
        conditions = [torch.cat([resize(x_t, level.shape[-2:]), level], dim=1) for level in prepared.levels]
        x = self.stem(x_t)
        skips = []
        for l, level in enumerate(self.encoder):
            x = level(x, time, conditions[l], quality)
            skips.append(x)
            if l < PRIOR_LAYERS - 1:
                x = self.downsample[l](x)
        x = self.middle(x, time, conditions[-1], quality)
        for l in reversed(range(PRIOR_LAYERS)):
            x = self.decoder[l](torch.cat([x, skips[l]], dim=1), time, conditions[l], quality)
            if l > 0:
                x = self.upsample[l - 1](F.interpolate(x, scale_factor=2, mode="nearest"))
        return Prediction(self.head(x), quality)
