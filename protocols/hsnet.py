"""HSNet's episode samplers (PROTOCOLS.md section 2), reproduced call for call.

All randomness comes from numpy's legacy generator seeded once per (benchmark, fold, shot) run;
`RandomState(seed)` yields the same stream as HSNet's `np.random.seed(seed)` followed by calls on
the global generator. `choice(x, 1, replace=False)` draws a whole permutation, so it is called
exactly as HSNet calls it.
"""

from __future__ import annotations

import numpy as np

from fssbench.datasets import DatasetReader
from fssbench.episodes import Episode
from fssbench.errors import DataError


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
    rng = np.random.RandomState(seed)
    manifest = []
    for index in range(episodes):
        query, class_id = pairs[index % len(pairs)]
        supports = draw_supports(rng, by_class[class_id], query, shot)
        manifest.append(Episode(index, fold, class_id, query, supports))
    return manifest
