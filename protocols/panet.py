"""PANet's test-time episodes on PASCAL-5i (Wang et al., ICCV 2019; github kaixin96/PANet), call for call.

PANet's `test.py` runs `n_runs: 5` runs of `n_steps: 1000` episodes; run r calls `set_seed(1234 + r)`
(Python `random`, torch) and then builds its episodes up front in the main process
(`dataloaders/customized.py::voc_fewshot`, `dataloaders/common.py::PairedDataset`), so the DataLoader's
worker (`num_workers=1`, `shuffle=False`) does not change them:
- the pool of class c is `VOC2012/ImageSets/Segmentation/trainaug/class<c>.txt` (every trainaug image
  whose SegmentationClassAug label holds c, any area), in file order; classes in ascending order;
- `random.choices(range(n_ways), k=n_queries)` draws once (1-way, 1 query);
- each episode: `class = random.sample(range(5), k=1)`, then `random.sample(range(len(pool)), k=shot+1)`:
  the first `shot` images are the supports, the last one the query (`fewShot`), all distinct.
Queries and supports thus come from the trainaug pool, not from the val set. See docs/pfenet-panet.md.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from fssbench.harness.datasets import DatasetReader
from fssbench.harness.episodes import Episode
from fssbench.harness.errors import DataError, UsageError

#: `config.py`: `seed = 1234`, `n_runs = 5`, `n_steps = 1000` (batch size 1), `data_split: 'trainaug'`.
PANET_SEED = 1234
PANET_RUNS = 5
PANET_EPISODES = 1000
PANET_SPLIT = "trainaug"

Draw = tuple[int, str, tuple[str, ...]]  # (position of the class in the fold, query, supports)


def panet_run(pools: Sequence[Sequence[str]], shot: int, seed: int, episodes: int) -> list[Draw]:
    """One PANet run: `set_seed(seed)`, then `voc_fewshot`'s draws for 1-way `shot`-shot episodes."""
    rng = random.Random(seed)
    rng.choices(population=range(1), k=1)  # cnt_query: which way the single query belongs to
    draws = []
    for _ in range(episodes):
        position = rng.sample(range(len(pools)), k=1)[0]
        *supports, query = (pools[position][index] for index in rng.sample(range(len(pools[position])), k=shot + 1))
        draws.append((position, query, tuple(supports)))
    return draws


def split_folder(reader: DatasetReader) -> Path:
    return reader.root / "VOC2012" / "ImageSets" / "Segmentation"


def panet_input_files(reader: DatasetReader, fold: int, split: str = PANET_SPLIT, **params) -> list[Path]:
    """The lists a PANet manifest is built from: the split's id list and its class lists of the fold."""
    folder = split_folder(reader)
    return [folder / f"{split}.txt"] + [folder / split / f"class{class_id + 1}.txt"
                                        for class_id in reader.fold_classes(fold)]


def _read_lines(path: Path) -> list[str]:
    """`f.read().splitlines()`, as PANet reads its id lists."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path} is missing: PANet's episodes need its ImageSets/Segmentation folder (the "
                        "`Segmentation` download in github.com/kaixin96/PANet's README) under VOC2012/") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def read_pools(reader: DatasetReader, fold: int, split: str, shot: int) -> list[list[str]]:
    """Each fold class's image ids, refusing ids outside the split list (PANet's `ids.index` fails on
    them) and classes with fewer than shot + 1 images (`random.sample` fails on them)."""
    split_list, *class_files = panet_input_files(reader, fold, split)
    members = set(_read_lines(split_list))
    pools = []
    for path in class_files:
        pool = _read_lines(path)
        strangers = [image for image in pool if image not in members]
        if strangers:
            raise DataError(f"{path} lists {strangers[0]!r}, which {split_list} does not hold")
        if len(pool) <= shot:
            raise DataError(f"{path} lists {len(pool)} images; a {shot}-shot PANet episode takes {shot + 1} "
                            "distinct ones")
        pools.append(pool)
    return pools


def sample_panet_episodes(reader: DatasetReader, fold: int, shot: int, seed: int = PANET_SEED,
                          episodes: int = PANET_EPISODES, runs: int = PANET_RUNS,
                          split: str = PANET_SPLIT) -> list[Episode]:
    """PANet's `runs` runs of `episodes` episodes each, run r seeded `seed + r`, one after the other:
    run r holds the episodes with index r * episodes ... (r + 1) * episodes - 1."""
    if runs < 1:
        raise UsageError(f"the panet sampler needs at least one run, got {runs}")
    class_ids = reader.fold_classes(fold)  # ascending: PANet iterates its set of 1-based labels in this order
    pools = read_pools(reader, fold, split, shot)
    manifest = []
    for run in range(runs):
        for step, (position, query, supports) in enumerate(panet_run(pools, shot, seed + run, episodes)):
            manifest.append(Episode(run * episodes + step, fold, class_ids[position], query, supports))
    return manifest


sample_panet_episodes.input_files = panet_input_files  # what harness/episodes.py hashes into the cache key
