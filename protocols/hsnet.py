"""HSNet's episode samplers (PROTOCOLS.md section 2), reproduced call for call.

All randomness comes from numpy's legacy generator seeded once per (benchmark, fold, shot) run;
`RandomState(seed)` yields the same stream as HSNet's `np.random.seed(seed)` followed by calls on
the global generator. `choice(x, 1, replace=False)` draws a whole permutation, so it is called
exactly as HSNet calls it.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import TYPE_CHECKING

from fssbench.harness.datasets import DatasetReader
from fssbench.harness.episodes import Episode
from fssbench.harness.errors import DataError

if TYPE_CHECKING:  # imported by the samplers when they sample: a cached manifest needs no numpy
    import numpy as np


def hsnet_rng(seed: int) -> np.random.RandomState:
    """numpy's legacy generator, whose stream after `np.random.seed(seed)` HSNet draws from (numpy is
    imported here, not with the module: a cached manifest is read without it)."""
    import numpy as np

    return np.random.RandomState(seed)


def draw_supports(rng: np.random.RandomState, pool: list[str], query: str, shot: int) -> tuple[str, ...]:
    """Repeat `choice(pool, 1, replace=False)[0]`, keeping draws that differ from the query."""
    if all(image == query for image in pool):
        raise DataError(f"no support candidate other than the query {query!r} in its class list; "
                        "the split list needs at least two images of each class")
    supports: list[str] = []
    while len(supports) < shot:
        support = str(rng.choice(pool, 1, replace=False)[0])
        if support != query:
            supports.append(support)
    return tuple(supports)


def sample_list_episodes(reader: DatasetReader, fold: int, shot: int, seed: int, episodes: int,
                         split: str = "val") -> list[Episode]:
    """PASCAL-5i rules: episode j queries line j mod len(list); supports come from the class's lines."""
    pairs = reader.split_list(split, fold)
    if not pairs:
        raise DataError(f"split list {split}/fold{fold} of dataset {reader.name!r} is empty")
    by_class: dict[int, list[str]] = {}
    for image, class_id in pairs:
        by_class.setdefault(class_id, []).append(image)
    rng = hsnet_rng(seed)
    manifest = []
    for index in range(episodes):
        query, class_id = pairs[index % len(pairs)]
        supports = draw_supports(rng, by_class[class_id], query, shot)
        manifest.append(Episode(index, fold, class_id, query, supports))
    return manifest


def read_list_lines(path: Path) -> list[str]:
    """A split list's lines exactly as HSNet reads them: `f.read().split('\\n')[:-1]` in text mode.

    Text mode turns '\\r\\n' into '\\n' (the published fss/test.txt has Windows line ends). HSNet drops
    whatever follows the last newline, so a file whose last line lacks its newline loses that line
    there; such a file is refused here rather than silently giving other episodes.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read split list {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"split list {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    *lines, tail = text.split("\n")
    if tail:
        raise DataError(f"split list {path}: its last line {tail!r} does not end with a newline, and HSNet's "
                        "reader (f.read().split('\\n')[:-1]) would drop it; add the newline")
    return lines


def _images_by_class(pairs: list[tuple[str, int]]) -> dict[int, np.ndarray]:
    """Each class's images in list order (arrays: `choice` would convert a list on every call)."""
    import numpy as np

    grouped: dict[int, list[str]] = {}
    for image, class_id in pairs:
        grouped.setdefault(class_id, []).append(image)
    return {class_id: np.array(images) for class_id, images in grouped.items()}


def sample_class_episodes(reader: DatasetReader, fold: int, shot: int, seed: int, episodes: int,
                          split: str = "val") -> list[Episode]:
    """COCO-20i rules (HSNet's DatasetCOCO.load_frame): every episode draws
    `class = choice(fold_class_ids, 1, replace=False)[0]`, then `query = choice(images_of_class, 1,
    replace=False)[0]`, then its supports from the same class list."""
    class_ids = reader.fold_classes(fold)
    images = _images_by_class(reader.split_list(split, fold))
    empty = [class_id for class_id in class_ids if class_id not in images]
    if empty:
        files = ", ".join(str(path) for path in reader.split_files(fold))
        raise DataError(f"fold {fold} classes {empty} of dataset {reader.name!r} have no images in {files}")
    rng = hsnet_rng(seed)
    manifest = []
    for index in range(episodes):
        class_id = int(rng.choice(class_ids, 1, replace=False)[0])
        query = str(rng.choice(images[class_id], 1, replace=False)[0])
        supports = draw_supports(rng, images[class_id], query, shot)
        manifest.append(Episode(index, fold, class_id, query, supports))
    return manifest


FSS_IMAGE_NUMBERS = range(1, 11)  # FSS-1000 holds images 1.jpg .. 10.jpg in each class folder


def numbered_image(folder: str, number: int) -> str:
    """The id of image `<number>.jpg` of a class folder: HSNet's `os.path.join(folder, str(k)) + '.jpg'`."""
    return f"{folder}/{number}.jpg"


def sample_numbered_episodes(reader: DatasetReader, fold: int, shot: int, seed: int, episodes: int,
                             split: str = "test") -> list[Episode]:
    """FSS-1000 rules (HSNet's DatasetFSS.sample_episode): episode j queries image j mod len(list) of the
    reader's list; supports repeat `k = choice(range(1, 11), 1, replace=False)[0]` and keep image k of
    the query's folder when it is not the query. With the 2400 images of the test split and 2400
    episodes, every image is the query exactly once, as in HSNet."""
    queries = reader.split_list(split, fold)
    if not queries:
        raise DataError(f"split {split} of dataset {reader.name!r} lists no images")
    rng = hsnet_rng(seed)
    manifest = []
    for index in range(episodes):
        query, class_id = queries[index % len(queries)]
        folder = posixpath.dirname(query)
        # in numeric order, so that draw i is image i + 1 as with HSNet's choice(range(1, 11))
        candidates = [numbered_image(folder, number) for number in FSS_IMAGE_NUMBERS]
        supports = draw_supports(rng, candidates, query, shot)
        manifest.append(Episode(index, fold, class_id, query, supports))
    return manifest


def sample_round_robin_episodes(reader: DatasetReader, fold: int, shot: int, seed: int, episodes: int,
                                split: str = "test") -> list[Episode]:
    """PATNet's cross-domain rules (data/deepglobe.py, isic.py, lung.py: sample_episode), which Matcher's
    LVIS-92i loader (data/lvis.py: __getitem__ and load_frame) repeats: episode j takes the fold's class
    j mod n, then `query = choice(images_of_class, 1, replace=False)[0]`, then its supports from the
    same class list as HSNet draws them."""
    class_ids = reader.fold_classes(fold)
    if not class_ids:
        raise DataError(f"fold {fold} of dataset {reader.name!r} under {reader.root} has no classes; "
                        f"check the data with `fssbench data check --dataset {reader.name}`")
    images = _images_by_class(reader.split_list(split, fold))
    empty = [class_id for class_id in class_ids if class_id not in images]
    if empty:
        names = ", ".join(reader.class_names[class_id] for class_id in empty)
        raise DataError(f"dataset {reader.name!r} has no {split} images of classes {names} (fold {fold}) under "
                        f"{reader.root}; check the layout with `fssbench data check --dataset {reader.name}`")
    rng = hsnet_rng(seed)
    manifest = []
    for index in range(episodes):
        class_id = class_ids[index % len(class_ids)]
        query = str(rng.choice(images[class_id], 1, replace=False)[0])
        supports = draw_supports(rng, images[class_id], query, shot)
        manifest.append(Episode(index, fold, class_id, query, supports))
    return manifest


def sample_each_entry_episodes(reader: DatasetReader, fold: int, shot: int, seed: int, episodes: int,
                               split: str = "val") -> list[Episode]:
    """GF-SAM's iSAID-5i rules (data/isaid.py: a DatasetPASCAL whose __len__ is len(img_metadata)): one
    episode per line of the fold's list, in file order, supports drawn as for PASCAL-5i. Fold lists
    differ in length, so the spec's `episodes` is the most a fold may have; a longer list is refused
    rather than cut short."""
    entries = len(reader.split_list(split, fold))
    if entries > episodes:
        files = ", ".join(str(path) for path in reader.split_files(fold))
        raise DataError(f"{files} lists {entries} entries, more than the {episodes} episodes the protocol allows "
                        "for a fold; use the published split lists")
    return sample_list_episodes(reader, fold, shot, seed, entries, split)
