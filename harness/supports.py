"""Support annotations derived deterministically from ground truth (PROTOCOLS.md section 6).

Each turns a support's foreground mask into (mask, labelled): `mask` is 1 on annotated foreground,
`labelled` marks the pixels the annotation says anything about (foreground or background).
- mask: every pixel labelled, the full mask.
- box (PANet's rule): foreground = the tight box of the class's largest instance; background =
  everything outside the boxes of all its instances; the rest is unlabelled. Needs instance maps.
- scribble: one stroke on the foreground and one on the background, drawn along the skeleton of
  the eroded region from a random end, for a random share of its length; seeded per episode and
  support, so the same run always draws the same strokes.
- none and text: no pixel is labelled (text methods read the class names).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

PIXEL_KINDS = ("mask", "box", "scribble")


def needs_instances(kind: str) -> bool:
    return kind == "box"


def annotate(kind: str, foreground: torch.Tensor, instances: torch.Tensor | None,
             seed: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    if kind == "mask":
        return foreground, torch.ones_like(foreground)
    if kind in ("none", "text"):
        return torch.zeros_like(foreground), torch.zeros_like(foreground)
    if kind == "box":
        return _box(foreground, instances)
    if kind == "scribble":
        return _scribbles(foreground, np.random.default_rng(list(seed)))
    raise ValueError(f"unknown support annotation {kind!r}")


def _bounds(region: torch.Tensor) -> tuple[int, int, int, int]:
    rows = torch.nonzero(region.any(dim=1)).flatten()
    cols = torch.nonzero(region.any(dim=0)).flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _box(foreground: torch.Tensor, instances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ids, counts = torch.unique(instances[foreground], return_counts=True)
    keep = (ids > 0) & (ids != 255)  # 0: no instance; 255: VOC's instance boundaries
    ids, counts = ids[keep], counts[keep]
    mask = torch.zeros_like(foreground)
    if len(ids) == 0:  # no instance of the class survived resizing: nothing is annotated
        return mask, torch.zeros_like(foreground)
    inside_any_box = torch.zeros_like(foreground)
    for instance in ids:
        top, bottom, left, right = _bounds((instances == instance) & foreground)
        inside_any_box[top:bottom, left:right] = True
    top, bottom, left, right = _bounds((instances == ids[counts.argmax()]) & foreground)
    mask[top:bottom, left:right] = True
    return mask, mask | ~inside_any_box


def _scribbles(foreground: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    region = foreground.cpu().numpy()
    fg_stroke = _stroke(region, rng)
    bg_stroke = _stroke(~region, rng)
    labelled = fg_stroke | bg_stroke
    return torch.from_numpy(fg_stroke), torch.from_numpy(labelled)


def _stroke(region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 5-pixel-wide stroke along the skeleton of the eroded region (empty if the region is)."""
    from scipy import ndimage
    from skimage.morphology import skeletonize

    if not region.any():
        return np.zeros_like(region)
    eroded = ndimage.binary_erosion(region, iterations=int(rng.integers(2, 6)))
    skeleton = skeletonize(eroded if eroded.any() else region)
    components, count = ndimage.label(skeleton, structure=np.ones((3, 3)))
    if count == 0:
        return np.zeros_like(region)
    largest = np.bincount(components.ravel())[1:].argmax() + 1
    path = _walk(components == largest, rng)
    keep = path[: max(1, int(len(path) * rng.uniform(0.6, 1.0)))]
    stroke = np.zeros_like(region)
    stroke[tuple(np.array(keep).T)] = True
    return ndimage.binary_dilation(stroke, iterations=2) & region


def _walk(skeleton: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Skeleton pixels in breadth-first order from a random end point (or any pixel of a loop)."""
    points = np.argwhere(skeleton)
    neighbours = _neighbour_count(skeleton)
    ends = points[neighbours[tuple(points.T)] == 1]
    start = tuple((ends if len(ends) else points)[rng.integers(len(ends) if len(ends) else len(points))])
    order, seen, queue = [], {start}, deque([start])
    height, width = skeleton.shape
    while queue:
        y, x = queue.popleft()
        order.append((y, x))
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                nxt = (y + dy, x + dx)
                if 0 <= nxt[0] < height and 0 <= nxt[1] < width and skeleton[nxt] and nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
    return order


def _neighbour_count(skeleton: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.convolve(skeleton.astype(np.int32), np.ones((3, 3), np.int32), mode="constant") - skeleton
