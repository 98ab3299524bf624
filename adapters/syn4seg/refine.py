"""Syn4Seg's pseudo-label refinement (paper section III-C and III-D): APF, APR and SABR.

Label maps are integer [H, W] arrays (torch tensors or numpy arrays) of one label space: 0 background,
classes 1.., and FREE (255) for free pixels. Feature maps are [C, H, W] at the label map's resolution
(`upsample` brings stride-8 features there). Connected components, erosions and distance transforms
are scipy.ndimage's; per-region and per-class means are scatter-adds, never loops over pixels.

Choices where the paper is silent:
- Regions (APF) are 8-connected components of a class's pixels.
- APR's candidate classes are the classes with a global prototype (novel, blended with their
  image-local prototype, eq. 6) and `local_classes` (base classes and, if wanted, background 0) that
  appear in the image, with their image-local prototype only. Eq. 6 blends the normalized global
  prototype with the unnormalized local mean as written; with unit-norm pixel features (what the GFSS
  learner gives) both lie in the unit ball. s_k(p) (eq. 7) is the cosine between the pixel's feature
  and the normalized adaptive prototype.
- SABR processes every class of M2 except background (a box around background is no object prompt),
  in descending area (ties: smaller label first). Boundary pixels of class k are its pixels with a
  pixel of another label among their 8 neighbours (the image border is no other label); the box is
  [x0, y0, x1, y1] in pixels, inclusive, as SAM's predictor takes it. A pixel assigned to a class by
  SAM is not touched by classes processed later; a pixel a class marks free can still be taken by a
  later class.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

FREE = 255
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

# image [H, W, 3] uint8 RGB, box [x0, y0, x1, y1] -> bool foreground [H, W]
BoxSegmenter = Callable[[np.ndarray, np.ndarray], np.ndarray]


def upsample(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[C, h, w] features -> [C, H, W], bilinearly."""
    return F.interpolate(features[None], size, mode="bilinear", align_corners=False)[0]


def _as_tensor(mask) -> torch.Tensor:
    return torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).long()


def class_means(features: torch.Tensor, labels: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per label value 0..count-1: the sum of `features` [C, N] over the pixels `labels` [N] holding it,
    and the pixel count. Pixels with labels outside 0..count-1 count for none."""
    inside = (labels >= 0) & (labels < count)
    sums = torch.zeros(count, features.shape[0], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels[inside], features[:, inside].T)
    return sums, torch.bincount(labels[inside], minlength=count)


def support_prototypes(features: torch.Tensor, labels: torch.Tensor, classes: Iterable[int]) -> dict[int, torch.Tensor]:
    """Eq. 2: per class k, the mean feature over every support pixel labelled k (the K supports pooled),
    L2-normalized (mu-hat_k). features [K, C, H, W], labels [K, H, W]. A class without pixels is an error."""
    flat = features.permute(1, 0, 2, 3).flatten(1)
    values = labels.flatten().long()
    prototypes = {}
    for k in classes:
        chosen = values == k
        if not chosen.any():
            raise ValueError(f"the supports label no pixel of class {k}")
        prototypes[k] = F.normalize(flat[:, chosen].mean(dim=1), dim=0)
    return prototypes


def apf(mask, features: torch.Tensor, prototypes: Mapping[int, torch.Tensor], threshold: float = 0.6) -> torch.Tensor:
    """APF (eqs. 3-4): every connected region r of a class k with a prototype (the novel classes) is kept
    when s(r) = normalize(mean feature over r) . mu-hat_k > threshold, and set FREE otherwise. Other
    pixels are unchanged. Returns M1 [H, W] int64."""
    mask = _as_tensor(mask)
    regions = np.zeros(mask.shape, dtype=np.int64)  # 0: no region; then the regions of each class in turn
    region_class = [0]
    for k in prototypes:
        labelled, count = ndimage.label((mask == k).numpy(), structure=EIGHT_CONNECTED)
        regions[labelled > 0] = labelled[labelled > 0] + len(region_class) - 1
        region_class += [k] * count
    if len(region_class) == 1:
        return mask.clone()
    flat_regions = torch.from_numpy(regions).flatten().to(features.device)
    sums, _ = class_means(features.flatten(1), flat_regions, len(region_class))
    region_features = F.normalize(sums[1:], dim=1)
    class_prototypes = torch.stack([F.normalize(prototypes[k].to(features), dim=0) for k in region_class[1:]])
    scores = (region_features * class_prototypes).sum(dim=1)
    freed = torch.cat([torch.zeros(1, dtype=torch.bool, device=scores.device), scores <= threshold])
    result = mask.clone()
    result[freed[flat_regions].view(mask.shape).cpu()] = FREE
    return result


def adaptive_prototypes(mask, features: torch.Tensor, prototypes: Mapping[int, torch.Tensor], beta: float = 0.7,
                        local_classes: Iterable[int] = ()) -> dict[int, torch.Tensor]:
    """Eqs. 5-6, normalized: per class k with a global prototype, beta * mu-hat_k + (1 - beta) * mu_k^(x), the
    image-local mean over M1's pixels of k (the global one alone when k has none); per class of
    `local_classes` that appears in M1, mu_k^(x) alone."""
    mask = _as_tensor(mask).to(features.device)
    local = sorted(set(local_classes) - set(prototypes))
    classes = sorted(set(prototypes) | set(local))
    count = max(classes) + 1
    sums, pixels = class_means(features.flatten(1), mask.flatten(), count)
    result = {}
    for k in classes:
        present = pixels[k] > 0
        mean = sums[k] / pixels[k].clamp(min=1)
        if k in prototypes:
            global_prototype = F.normalize(prototypes[k].to(features), dim=0)
            result[k] = F.normalize(beta * global_prototype + (1 - beta) * mean if present else global_prototype, dim=0)
        elif present:
            result[k] = F.normalize(mean, dim=0)
    return result


def apr(mask, features: torch.Tensor, prototypes: Mapping[int, torch.Tensor], beta: float = 0.7,
        threshold: float = 0.6, local_classes: Iterable[int] = ()) -> torch.Tensor:
    """APR (eq. 7): each FREE pixel p takes argmax_k s_k(p), s_k(p) the cosine between its feature and the
    adaptive prototype of k, when the maximum exceeds `threshold`; it stays FREE otherwise. Returns M2."""
    mask = _as_tensor(mask)
    adaptive = adaptive_prototypes(mask, features, prototypes, beta, local_classes)
    free = (mask == FREE).flatten()
    if not adaptive or not free.any():
        return mask.clone()
    classes = torch.tensor(list(adaptive))
    pixels = F.normalize(features.flatten(1)[:, free.to(features.device)], dim=0)
    scores = torch.stack(list(adaptive.values())) @ pixels  # [classes, free pixels]
    best, index = scores.max(dim=0)
    labels = torch.where(best.cpu() > threshold, classes[index.cpu()], torch.tensor(FREE))
    result = mask.clone().flatten()
    result[free] = labels
    return result.view(mask.shape)


def boundary(region: np.ndarray) -> np.ndarray:
    """Pixels of `region` with a pixel outside it among their 8 neighbours (the image border is not outside)."""
    return region & ~ndimage.binary_erosion(region, structure=EIGHT_CONNECTED, border_value=1)


def tight_box(pixels: np.ndarray) -> np.ndarray:
    """[x0, y0, x1, y1] of the True pixels, inclusive."""
    rows, cols = np.nonzero(pixels)
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()])


def sabr(image: np.ndarray, mask, segment_box: BoxSegmenter, delta: float = 5.0) -> torch.Tensor:
    """SABR (eq. 8): per class k of M2 (background excluded) in descending area, the segmenter's foreground
    S_k for the tight box around k's boundary pixels B_k updates the pixels of U_k = {dist(p, B_k) < delta
    or M2(p) = FREE} that no earlier class took: k where S_k, FREE elsewhere. Returns M3."""
    mask = _as_tensor(mask)
    labels = mask.numpy()
    result = labels.copy()
    taken = np.zeros(labels.shape, dtype=bool)
    free = labels == FREE
    values, areas = np.unique(labels[(labels != 0) & ~free], return_counts=True)
    for k in values[np.lexsort((values, -areas))]:
        edge = boundary(labels == k)
        if not edge.any():  # the class covers the whole image
            continue
        foreground = np.asarray(segment_box(image, tight_box(edge)), dtype=bool)
        uncertain = (ndimage.distance_transform_edt(~edge) < delta) | free
        update = uncertain & ~taken
        result[update] = np.where(foreground[update], k, FREE)
        taken |= update & foreground
    return torch.from_numpy(result)
