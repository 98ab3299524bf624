"""BAFT and UAPF: backbone features -> backbone-agnostic priors (paper section 3.3.1-3.3.2, eqs. 9-12).

BAFT. Box, scribble and mask supports are pixel sets: masked average pooling of each support's
features over its annotated foreground gives a visual prototype per layer. Image-only supports
("none") annotate nothing, so the whole support image is the pixel set. Text supports take CLIP
text prototypes of the class name, compared with the query's features mapped densely into CLIP's
joint space (see backbones.py); that map exists once, at the deepest layer, and is resized to each
layer. Priors are cosine similarities between prototypes and query features (eq. 10), then
affinity-enhanced, p_aff = A_ff . p (eq. 11), with A_ff the query's feature self-similarity. The
paper leaves A_ff unnormalized; its rows would then sum over h*w terms, which differ between
backbones, so each row is a softmax of the cosines at temperature 0.1 here: p_aff is a convex
combination of cosine priors, in [-1, 1] like them.

UAPF. Per layer, the mean and the unbiased variance over the support views' affinity-enhanced priors
(eq. 12; the paper's K priors "including p_v^aff and p_t^aff") and the first `extra_priors` of them
("a fixed number of priors as extra outputs"). With one support, the views are the support and fixed
augmentations of it (flip, central zoom, desaturation: the paper does not list its augmentations);
with K > 1 supports, the K supports. Text views are prompt templates. A single view has variance 0.

Backbone-independent query cues (section 3.3.3): Sobel gradient magnitude and Canny edges of the
query at the mask size (the paper also mentions VAE features, which are left out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fssbench.adapters.diffup.config import DiffUpConfig
from fssbench.harness.errors import UsageError

AFFINITY_TEMPERATURE = 0.1
PROMPT_TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "an image of a {}.", "a close-up photo of a {}.")
EDGE_CHANNELS = 2
CANNY_SIGMA = 2.0


@dataclass
class Conditions:
    """What the decoder is conditioned on, for B queries."""

    priors: list[torch.Tensor]  # per backbone layer [B, 2 + extra_priors, h_l, w_l]: mean, variance, extras
    edges: torch.Tensor  # [B, 2, M, M] Sobel magnitude and Canny edges of the query, in [0, 1]
    image: torch.Tensor  # [B, 3, M, M] the query in [-1, 1], for the quality branch

    def repeat(self, times: int) -> "Conditions":
        """Each query `times` times in a row (the members of a sampling ensemble)."""
        return Conditions([p.repeat_interleave(times, 0) for p in self.priors],
                          self.edges.repeat_interleave(times, 0), self.image.repeat_interleave(times, 0))


def resize(tensor: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [N, C, H, W], antialiased when shrinking."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(tensor.shape[-2:]) == size:
        return tensor
    return F.interpolate(tensor, size, mode="bilinear", align_corners=False, antialias=True)


def cosine_priors(query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Eq. 10: query features [B, C, h, w] and prototypes [B, V, C] -> cosine priors [B, V, h, w]."""
    return torch.einsum("bchw,bvc->bvhw", F.normalize(query, dim=1), F.normalize(prototypes, dim=2))


def masked_average(features: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Masked average pooling: features [N, C, h, w] over pixel sets [N, H, W] in [0, 1] -> prototypes [N, C].
    The pixel sets are resized with antialiasing, so a thin scribble still weighs the feature cells it crosses."""
    weights = resize(regions[:, None].float(), features.shape[-2:])
    return (features * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp(min=1e-6)


def query_affinity(query: torch.Tensor) -> torch.Tensor:
    """A_ff [B, hw, hw]: row-softmax of the cosine self-similarity of the query's feature vectors."""
    flat = F.normalize(query.flatten(2), dim=1)
    return (flat.transpose(1, 2) @ flat / AFFINITY_TEMPERATURE).softmax(dim=-1)


def affinity_enhanced(affinity: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Eq. 11, p_aff = A_ff . p for every view: [B, hw, hw], [B, V, h, w] -> [B, V, h, w]."""
    return (priors.flatten(2) @ affinity.transpose(1, 2)).view_as(priors)


def fuse_priors(priors: torch.Tensor, extra: int) -> torch.Tensor:
    """UAPF (eq. 12): [B, V, h, w] -> [B, 2 + extra, h, w] = mean, unbiased variance, first `extra` views."""
    views = priors.shape[1]
    mean = priors.mean(dim=1, keepdim=True)
    variance = priors.var(dim=1, keepdim=True) if views > 1 else torch.zeros_like(mean)
    return torch.cat([mean, variance, priors[:, [i % views for i in range(extra)]]], dim=1)


def _identity(images: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return images, regions


def _flip(images: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return images.flip(-1), regions.flip(-1)


def _zoom(images: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The central 80% of the image, scaled back to its size."""
    def crop(tensor: torch.Tensor) -> torch.Tensor:
        height, width = tensor.shape[-2:]
        top, left = round(0.1 * height), round(0.1 * width)
        return resize(tensor[..., top:height - top, left:width - left], (height, width))

    return crop(images), crop(regions[:, None])[:, 0]


def _desaturate(images: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return 0.5 * images + 0.5 * images.mean(dim=1, keepdim=True), regions


SUPPORT_AUGMENTATIONS = (_identity, _flip, _zoom, _desaturate)


def support_views(images: torch.Tensor, regions: torch.Tensor, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, K, 3, H, W] supports and [B, K, h, w] pixel sets -> the views UAPF fuses, [B, V, ...]:
    the K supports, or for K = 1 the support and its first `views` - 1 augmentations."""
    if images.shape[1] > 1:
        return images, regions
    augmented = [augment(images[:, 0], regions[:, 0]) for augment in SUPPORT_AUGMENTATIONS[:views]]
    return torch.stack([a[0] for a in augmented], dim=1), torch.stack([a[1] for a in augmented], dim=1)


def visual_priors(backbone: nn.Module, query_features: list[torch.Tensor], images: torch.Tensor,
                  regions: torch.Tensor) -> list[torch.Tensor]:
    """Cosine priors per layer [B, V, h_l, w_l] of V support views [B, V, 3, H, W] with pixel sets [B, V, h, w]."""
    b, v = images.shape[:2]
    support_features = backbone(images.flatten(0, 1))
    return [cosine_priors(query, masked_average(support, regions.flatten(0, 1)).view(b, v, -1))
            for query, support in zip(query_features, support_features)]


def text_priors(backbone: nn.Module, query_features: list[torch.Tensor], class_names: list[str]) -> list[torch.Tensor]:
    """Cosine priors per layer [B, T, h_l, w_l] of the class names under T prompt templates."""
    prompts = [template.format(name.replace("_", " ")) for name in class_names for template in PROMPT_TEMPLATES]
    text = backbone.embed_text(prompts).view(len(class_names), len(PROMPT_TEMPLATES), -1)
    priors = cosine_priors(backbone.embed_dense(query_features), text)
    return [resize(priors, query.shape[-2:]) for query in query_features]


def query_edges(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, M, M] RGB in [0, 1] -> [B, 2, M, M]: Sobel magnitude (divided by its maximum) and Canny edges."""
    from skimage.feature import canny

    gray = images.mean(dim=1, keepdim=True)
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=images.device)
    kernels = torch.stack([sobel_x, sobel_x.T])[:, None]
    gradients = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = gradients.norm(dim=1, keepdim=True)
    magnitude = magnitude / magnitude.amax(dim=(2, 3), keepdim=True).clamp(min=1e-6)
    edges = np.stack([canny(plane, sigma=CANNY_SIGMA) for plane in gray[:, 0].float().cpu().numpy()])
    return torch.cat([magnitude, torch.from_numpy(edges).to(images.device, images.dtype)[:, None]], dim=1)


def build_conditions(backbone: nn.Module, config: DiffUpConfig, query_images: torch.Tensor,
                     support_images: torch.Tensor, support_masks: torch.Tensor, annotation: str,
                     class_names: list[str]) -> Conditions:
    """BAFT, UAPF and the query cues for B episodes: query [B, 3, H, W], supports [B, K, 3, H, W] and
    their annotated foreground [B, K, H, W] (ignored for none and text), images RGB in [0, 1]. The
    backbone sees the images resized to the config's image size."""
    query_features = backbone(resize(query_images, config.image_size))
    if annotation == "text":
        if not backbone.has_text_tower:
            raise UsageError(f"text supports need a backbone with a text tower (clip-rn50, clip-rn101 or "
                             f"clip-vit-b16); {backbone.name} has none, so a class name cannot be compared "
                             "with its features")
        priors = text_priors(backbone, query_features, class_names)
    else:
        regions = torch.ones_like(support_masks) if annotation == "none" else support_masks
        b, k = support_images.shape[:2]
        supports = resize(support_images.flatten(0, 1), config.image_size).unflatten(0, (b, k))
        priors = visual_priors(backbone, query_features, *support_views(supports, regions, config.support_views))
    fused = [fuse_priors(affinity_enhanced(query_affinity(query), prior), config.extra_priors)
             for query, prior in zip(query_features, priors)]
    small = resize(query_images, config.mask_size)
    return Conditions(fused, query_edges(small), small * 2 - 1)
