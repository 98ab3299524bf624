"""PFENet's test-time episodes (Tian et al., TPAMI 2020; github dvlab-research/PFENet), call for call.

PFENet's `test.py` evaluates `SemData(mode='val')` (`util/dataset.py`) through a DataLoader with
`shuffle=False` and `batch_size_val: 1`:
- the queries are PFENet's val list (`lists/pascal/val_fixed.txt`, `lists/coco/val.txt`) in file order,
  keeping the images where some fold class covers >= 2*32*32 pixels of the original-size label
  (`make_dataset`); each class's support pool is the kept images where that class covers >= 2*32*32;
- `__getitem__` draws the episode class uniformly among the fold classes the query shows (any area),
  then `shot` distinct supports from the class's pool, none the query, with Python's `random.randint`;
- `for e in range(20)` walks the list again and again until `test_num` (5000 PASCAL, 20000 COCO) is
  passed; its break test `(iter_num - 1) * batch_size_val >= test_num` lets test_num + 1 episodes through.

The draws run in the DataLoader's worker processes (`workers: 8` PASCAL, `16` COCO): worker w of each
`iter(loader)` seeds Python's `random` with `base + w`, where `base` is drawn from torch's CPU generator
(seeded 321 by `validate`), and gets dataset indices w, w + W, ... of that pass. fssbench draws those
base seeds with torch exactly as the DataLoader does, so the stream is reproduced; `workers: 0` is the
named variant where `__getitem__` runs in the main process on the stream `random.seed(321)` started.
See docs/pfenet-panet.md for the sources and what stays ambiguous.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from fssbench.harness.datasets import DatasetReader
from fssbench.harness.episodes import Episode
from fssbench.harness.errors import DataError, UsageError
from fssbench.protocols.diam import label_areas

#: `config/*/*.yaml` `manual_seed: 321`, applied again at the start of `test.py::validate`.
PFENET_SEED = 321
#: `util/dataset.py::make_dataset`: a class counts for an image from 2*32*32 pixels on (Shaban's filter).
MIN_AREA = 2 * 32 * 32
#: `test.py::validate`: `for e in range(20)` passes over the val list at most.
PASSES = 20

Draw = tuple[str, int, tuple[str, ...]]  # (query, label value of the episode class, supports)


@dataclass(frozen=True)
class PfenetLists:
    """`make_dataset(split, root, val_list, sub_val_list)` and what `__getitem__` reads of each query.

    queries: `data_list`, the kept val-list images in file order.
    class_files: `sub_class_file_list`, per fold label value the kept images where it covers >= MIN_AREA.
    query_values: per query, the fold label values present at all (`np.unique` order: ascending).
    """

    queries: tuple[str, ...]
    class_files: dict[int, tuple[str, ...]]
    query_values: dict[str, tuple[int, ...]]


def pfenet_lists(image_ids: Sequence[str], areas: Mapping[str, Mapping[int, int]],
                 fold_values: Sequence[int]) -> PfenetLists:
    """Queries and support pools from the val list (file order) and each label map's value areas."""
    files: dict[int, list[str]] = {int(value): [] for value in fold_values}
    queries, present = [], {}
    for image in image_ids:
        values = sorted(value for value, area in areas[image].items() if area > 0 and value in files)
        large = [value for value in values if areas[image][value] >= MIN_AREA]
        if large:
            queries.append(image)
            present[image] = tuple(values)
            for value in large:
                files[value].append(image)
    return PfenetLists(tuple(queries), {value: tuple(images) for value, images in files.items()}, present)


def draw_episode(rng: random.Random, query: str, lists: PfenetLists, shot: int) -> tuple[int, tuple[str, ...]]:
    """One `SemData.__getitem__` in val mode: the class, then `shot` distinct supports other than the query."""
    values = lists.query_values[query]
    value = values[rng.randint(1, len(values)) - 1]
    pool = lists.class_files[value]
    _check_pool(query, value, pool, shot)
    chosen: list[int] = []
    for _ in range(shot):
        index = rng.randint(1, len(pool)) - 1  # drawn, then replaced: the loop below always runs
        support = query
        while support == query or index in chosen:
            index = rng.randint(1, len(pool)) - 1
            support = pool[index]
        chosen.append(index)
    return value, tuple(pool[index] for index in chosen)


def _check_pool(query: str, value: int, pool: tuple[str, ...], shot: int) -> None:
    """PFENet raises on an empty pool and loops forever on one without `shot` candidates; refuse both."""
    candidates = sum(image != query for image in pool)
    if candidates < shot:
        raise DataError(f"query {query!r}: label value {value} has {candidates} support candidates of >= {MIN_AREA} "
                        f"pixels other than the query, fewer than the {shot} shots PFENet's sampler needs")


def loader_base_seeds(seed: int, passes: int) -> list[int]:
    """The base seed of each `iter(DataLoader)` after `torch.manual_seed(seed)`: the DataLoader's own
    `torch.empty((), dtype=torch.int64).random_()` on the default CPU generator (nothing else draws
    from it during PFENet's test loop: the model runs on the GPU)."""
    generator = torch.Generator().manual_seed(seed)
    return [int(torch.empty((), dtype=torch.int64).random_(generator=generator).item()) for _ in range(passes)]


def pfenet_draws(lists: PfenetLists, shot: int, seed: int, episodes: int, workers: int) -> list[Draw]:
    """The first `episodes` episodes of PFENet's test loop, passes over the query list included."""
    if not lists.queries:
        raise DataError(f"no val-list image holds >= {MIN_AREA} pixels of a fold class: PFENet's sampler has no query")
    main = random.Random(seed)  # `random.seed(seed)` in validate: the stream when __getitem__ runs in-process
    draws: list[Draw] = []
    for base in loader_base_seeds(seed, PASSES):
        streams = [random.Random(base + worker) for worker in range(workers)] or [main]
        for position, query in enumerate(lists.queries):
            if len(draws) == episodes:
                return draws
            value, supports = draw_episode(streams[position % len(streams)], query, lists, shot)
            draws.append((query, value, supports))
    return draws


def pfenet_input_files(reader: DatasetReader, fold: int, **params) -> list[Path]:
    """The list a PFENet manifest is built from (besides the label maps it reads for class areas)."""
    return reader.image_list_files()


def read_val_list(reader: DatasetReader) -> list[str]:
    """PFENet's val list (`<image path> <label path>` lines), as image ids in file order."""
    missing = [path for path in reader.image_list_files() if not path.is_file()]
    if missing:
        raise DataError(f"PFENet's val list {missing[0]} is missing: copy PFENet's lists/pascal/val_fixed.txt "
                        "(1449 lines) or lists/coco/val.txt (40137 lines; github.com/dvlab-research/PFENet) there")
    return reader.image_list()


def sample_pfenet_episodes(reader: DatasetReader, fold: int, shot: int, episodes: int, workers: int,
                           seed: int = PFENET_SEED) -> list[Episode]:
    """The fold's episodes under PFENet's rules; label value = class id + 1 (PASCAL and COCO masks).

    `workers` is the DataLoader's `num_workers` (8 in PFENet's PASCAL configs, 16 in its COCO configs);
    0 gives the single-process variant. Building the manifest reads every listed label map once."""
    if workers < 0:
        raise UsageError(f"the pfenet sampler's workers (DataLoader num_workers) must be >= 0, got {workers}")
    image_ids = read_val_list(reader)
    areas = {image: label_areas(reader, image) for image in dict.fromkeys(image_ids)}
    lists = pfenet_lists(image_ids, areas, [class_id + 1 for class_id in reader.fold_classes(fold)])
    draws = pfenet_draws(lists, shot, seed, episodes, workers)
    return [Episode(index, fold, value - 1, query, supports) for index, (query, value, supports) in enumerate(draws)]


sample_pfenet_episodes.input_files = pfenet_input_files  # what harness/episodes.py hashes into the cache key
