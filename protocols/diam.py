"""Generalized FSS (GFSS) episode rules of DIaM (Hajimiri et al., CVPR 2023; github sinahmr/DIaM).

`sample_diam_run` and its helpers are pure: the caller passes the val list (lists/<data>/val.txt, in
file order) and, per image, the pixel area of every label value at the original resolution (the
``SegmentationClassAug`` / COCO mask PNG as read by ``cv2.imread(..., IMREAD_GRAYSCALE)``).
`sample_diam_manifest` is the registered sampler: it reads the list and the label maps (DIaM's support
rule needs class areas, so a GFSS manifest reads label maps, never images) and returns the fold's runs.
See docs/gfss-diam.md for the facts and their sources.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from fssbench.harness.datasets import IGNORE_LABEL, DatasetReader
from fssbench.harness.episodes import GfssRun
from fssbench.harness.errors import DataError
from fssbench.harness.files import open_image


#: ``src/dataset/utils.py::process_image``: a support candidate's class needs >= 16*32*32 pixels.
SUPPORT_MIN_AREA = 16 * 32 * 32
#: ``config/pascal.yaml`` / ``config/coco.yaml``: ``manual_seed: 2023``, ``n_runs: 5``.
DIAM_SEED = 2023
DIAM_RUNS = 5


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
    return [int(v) for v, a in areas.items() if a > 0 and int(v) not in (0, IGNORE_LABEL)]


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


def read_diam_list(path: Path, image_id: Callable[[str], str]) -> list[str]:
    """DIaM's val list (`<image path> <label path>` per line, as PFENet's lists) as image ids."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"generalized FSS list {path} is missing; it is DIaM's lists/{path.parent.name}/val.txt "
                        "(github.com/sinahmr/DIaM, from PFENet's lists): copy it there") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read generalized FSS list {path}: {exc}") from None
    ids = []
    for number, line in enumerate(lines, start=1):
        fields = line.strip().split(" ")
        if len(fields) != 2:
            raise DataError(f"{path}:{number}: expected '<image path> <label path>', got {line!r}")
        ids.append(image_id(fields[0]))
    return ids


def label_areas(reader: DatasetReader, image_id: str) -> dict[int, int]:
    """Pixel count of each label value of an image's label map at its original resolution."""
    import numpy as np  # here, not with the module: COCO's and PASCAL's readers import this one

    with open_image(reader.label_path(image_id)) as image:
        label = reader.decode_label(image)
    counts = np.bincount(np.asarray(label, dtype=np.int64).ravel())
    return {value: int(count) for value, count in enumerate(counts) if count}


def sample_diam_manifest(reader: DatasetReader, fold: int, shot: int, seed: int = DIAM_SEED,
                         runs: int = DIAM_RUNS, queries: int | None = None) -> list[GfssRun]:
    """The fold's DIaM runs. Label values are class id + 1 (PASCAL, COCO and demo label maps).

    `queries` keeps each run's first N queries in list order: DIaM's COCO test evaluates 10000 queries
    that its shuffling DataLoader draws from torch's RNG, which fssbench does not reproduce, so the COCO
    protocol is the named variant "first 10000 in file order" (see docs/gfss-diam.md)."""
    image_ids = reader.image_list()
    areas = {image_id: label_areas(reader, image_id) for image_id in dict.fromkeys(image_ids)}
    novel = sorted(c + 1 for c in reader.fold_classes(fold))
    base = [v for v in range(1, len(reader.class_names) + 1) if v not in novel]
    result = []
    for run in range(runs):
        try:
            drawn = sample_diam_run(image_ids, areas, novel, shot, seed, run, base)
        except ValueError as exc:
            raise DataError(f"generalized FSS fold {fold}, run {run}: {exc} (the val list has no support "
                            f"candidate of >= {SUPPORT_MIN_AREA} pixels for it)") from None
        supports = tuple((value - 1, drawn.supports[value]) for value in novel)
        result.append(GfssRun(fold, run, supports, drawn.queries[:queries] if queries else drawn.queries))
    return result


def diam_input_files(reader: DatasetReader, fold: int, **params) -> list[Path]:
    """The list a DIaM manifest is built from (besides the label maps it reads for class areas)."""
    return reader.image_list_files()


sample_diam_manifest.input_files = diam_input_files  # what harness/episodes.py hashes into the cache key
