"""Generalized FSS (GFSS) episode rules of DIaM (Hajimiri et al., CVPR 2023; github sinahmr/DIaM).

Pure functions: nothing here reads a file. The caller passes the val list (lists/<data>/val.txt, in
file order) and, per image, the pixel area of every label value at the original resolution (the
``SegmentationClassAug`` / COCO mask PNG as read by ``cv2.imread(..., IMREAD_GRAYSCALE)``).
See docs/gfss-diam.md for the facts and their sources.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

#: ``src/dataset/utils.py::process_image``: a support candidate's class needs >= 16*32*32 pixels.
SUPPORT_MIN_AREA = 16 * 32 * 32
#: ``config/pascal.yaml`` / ``config/coco.yaml``: ``manual_seed: 2023``, ``n_runs: 5``.
DIAM_SEED = 2023
DIAM_RUNS = 5
IGNORE = 255


@dataclass(frozen=True)
class DiamRun:
    """One DIaM run: the support set (fixed for the whole run) and the query list.

    ``supports[c]``: the ``shot`` image ids used for novel class ``c``, in draw order. When fewer than
    ``shot`` valid candidates exist, DIaM pads with ``random.choices`` over the found ones, so the
    tuple then ends with repeats (always ``len == shot``).
    ``queries``: DIaM's ``MultiClassValData.query_data_list`` after ``generate_support(...,
    remove_them_from_query_data_list=True)``: val-list file order, minus the distinct supports.
    (The DataLoader then visits it in a ``shuffle=True`` order drawn from torch's RNG; that order is
    not reproduced here, see docs/gfss-diam.md.)
    """

    supports: dict[int, tuple[str, ...]]
    queries: tuple[str, ...]


def _present(areas: Mapping[int, int]) -> list[int]:
    """Label values present (area > 0) except 0 and 255, like ``np.unique(label)`` minus {0, 255}."""
    return [int(v) for v, a in areas.items() if a > 0 and int(v) not in (0, IGNORE)]


def diam_query_list(pairs_by_image: Sequence[str], image_labels: Mapping[str, Mapping[int, int]],
                    classes: Sequence[int]) -> list[str]:
    """``make_dataset(root, val_list, base + novel, keep_small_area_classes=True)`` (src/dataset/utils.py):
    every val-list line whose label holds at least one pixel of a fold class, in file order."""
    wanted = set(int(c) for c in classes)
    return [img for img in pairs_by_image if any(c in wanted for c in _present(image_labels[img]))]


def diam_support_pool(pairs_by_image: Sequence[str], image_labels: Mapping[str, Mapping[int, int]],
                      novel_classes: Sequence[int]) -> dict[int, list[str]]:
    """``make_dataset(root, val_list, novel, keep_small_area_classes=False)``'s ``class_file_dict``:
    per novel class, the val-list lines (file order) where that class covers >= 16*32*32 pixels."""
    pool: dict[int, list[str]] = {int(c): [] for c in novel_classes}
    for img in pairs_by_image:
        areas = image_labels[img]
        for c in _present(areas):  # process_image loops over np.unique order; per-class lists keep file order
            if c in pool and areas[c] >= SUPPORT_MIN_AREA:
                pool[c].append(img)
    return pool


def _draw_supports(rng: random.Random, pool: Mapping[int, list[str]], image_labels, novel_classes,
                   base_classes: set[int], shot: int, support_only_one_novel: bool):
    """One call of ``MultiClassValData.generate_support([], ...)`` (src/dataset/dataset.py)."""
    supports: dict[int, tuple[str, ...]] = {}
    distinct: list[str] = []
    for c in novel_classes:
        file_class_chosen = pool[int(c)]
        num_file = len(file_class_chosen)
        indices_list = list(range(num_file))
        rng.shuffle(indices_list)
        current: list[str] = []
        for idx in indices_list:
            if len(current) >= shot:
                break
            image = file_class_chosen[idx]
            if image in current:  # query_image_path_list is [] in DIaM's default mode
                continue
            if support_only_one_novel:
                present_novel = set(_present(image_labels[image])) - base_classes
                if len(present_novel) > 1:
                    continue
            current.append(image)
            distinct.append(image)
        found = len(current)
        if found == 0:
            raise ValueError(f"No support candidate for class {c} out of {num_file} images")
        chosen = list(current)
        if found < shot:
            chosen.extend(current[i] for i in rng.choices(range(found), k=shot - found))
        supports[int(c)] = tuple(chosen)
    return supports, distinct


def sample_diam_run(pairs_by_image: Sequence[str], image_labels: Mapping[str, Mapping[int, int]],
                    novel_classes: Sequence[int], shot: int, seed: int = DIAM_SEED, run: int = 0,
                    base_classes: Sequence[int] | None = None,
                    support_only_one_novel: bool = True) -> DiamRun:
    """Supports and queries of DIaM's run ``run`` (0-based), call for call.

    Reproduces ``src/test.py::validate`` (``setup_seed(manual_seed)`` once, i.e. ``random.seed(seed)``,
    then for each run ``val_loader.dataset.generate_support([], remove_them_from_query_data_list=True)``)
    with ``src/dataset/dataset.py::MultiClassValData`` and ``src/dataset/utils.py::make_dataset``.
    Runs are not reseeded: run r continues the Python ``random`` stream of runs 0..r-1, so runs 0..r-1
    are replayed here.

    pairs_by_image: image ids, one per line of the val list, in file order.
    image_labels: image id -> {label value: pixel count} of its original-resolution mask (0 and 255 may
        be present or not; they are ignored).
    novel_classes: DIaM's ``novel_class_list`` in its order (ascending in ``src/dataset/classes.py``).
    base_classes: DIaM's ``base_class_list``; default: every other value in ``image_labels`` but 0/255.
    """
    if run < 0 or shot < 1:
        raise ValueError("run must be >= 0 and shot >= 1")
    novel = [int(c) for c in novel_classes]
    if base_classes is None:
        values = {c for img in pairs_by_image for c in _present(image_labels[img])}
        base = sorted(values - set(novel))
    else:
        base = [int(c) for c in base_classes]
    queries_all = diam_query_list(pairs_by_image, image_labels, base + novel)
    pool = diam_support_pool(pairs_by_image, image_labels, novel)
    rng = random.Random(seed)  # random.seed(seed) in src/util.py::setup_seed
    for _ in range(run + 1):
        supports, distinct = _draw_supports(rng, pool, image_labels, novel, set(base), shot,
                                            support_only_one_novel)
    queries = list(queries_all)  # self.query_data_list = self.complete_query_data_list.copy()
    for img in distinct:
        queries.remove(img)  # list.remove: first occurrence, order otherwise kept
    return DiamRun(supports=supports, queries=tuple(queries))


def _iou(confusion: np.ndarray, idx: int) -> float | None:
    inter = float(confusion[idx, idx])
    union = float(confusion[idx, :].sum() + confusion[:, idx].sum() - confusion[idx, idx])
    if union == 0:  # src/test.py: `if cls_union[i] == 0: continue`
        return None
    return inter / (union + 1e-10)


def gfss_scores(confusion: np.ndarray, base: list[int], novel: list[int]) -> dict:
    """Base / novel / mean / harmonic mIoU (x100) of one run, from a (C+1)x(C+1) confusion matrix.

    confusion[g, p] = number of valid (non-255) pixels with ground truth g and prediction p; index 0 is
    background; ``base`` and ``novel`` are indices into it. Reproduces ``src/test.py::validate``:
    IoU_c = I_c / (U_c + 1e-10) over the run's summed I and U (``src/util.py::fast_intersection_and_union``),
    classes with U_c == 0 skipped, background in neither mean, Mean = (base + novel) / 2.
    ``harmonic`` = 2BN/(B+N) is NOT computed by DIaM (newer GFSS papers report it).
    DIaM averages base and novel over its 5 runs first and then takes Mean of the two averages.
    A group with no class of nonzero union gives nan (DIaM would raise ZeroDivisionError).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError("confusion must be square")

    def group(ids):
        vals = [v for v in (_iou(confusion, i) for i in ids) if v is not None]
        return 100.0 * sum(vals) / len(vals) if vals else math.nan

    b, n = group(base), group(novel)
    mean = (b + n) / 2
    harmonic = 2 * b * n / (b + n) if (b + n) > 0 else (0.0 if b + n == 0 else math.nan)
    return {"base": b, "novel": n, "mean": mean, "harmonic": harmonic}
