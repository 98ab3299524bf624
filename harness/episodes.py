"""Episode manifests: the ordered, hashed list of episodes every method is evaluated on.

A manifest is a pure function of the protocol's sampling rules, the split lists, the fold, the shot
and the seed. Building one reads split lists only, never images. Its sha256 is taken over a
canonical serialization (one JSON object per episode, sorted keys, no spaces, `\\n`-joined), so the
same episodes always give the same hash on any machine. Manifests are cached on disk keyed by
everything they are built from, including the split lists' contents.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fssbench.datasets import DatasetReader, sha256_of_files
from fssbench.errors import UsageError
from fssbench.files import atomic_write_text
from fssbench.specs import ProtocolSpec, canonical_json


@dataclass(frozen=True)
class Episode:
    index: int
    fold: int
    class_id: int
    query: str
    supports: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "fold": self.fold,
            "class_id": self.class_id,
            "query": self.query,
            "supports": list(self.supports),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Episode":
        return cls(data["index"], data["fold"], data["class_id"], data["query"], tuple(data["supports"]))


@dataclass(frozen=True)
class Manifest:
    episodes: tuple[Episode, ...]

    def lines(self) -> list[str]:
        return [canonical_json(episode.to_json()) for episode in self.episodes]

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.lines()).encode()).hexdigest()

    def head(self, count: int) -> "Manifest":
        if count < 1:
            raise UsageError(f"--episodes must be at least 1, got {count}")
        return Manifest(self.episodes[:count])

    def __len__(self) -> int:
        return len(self.episodes)


Sampler = Callable[..., list[Episode]]


def build_manifest(
    spec: ProtocolSpec,
    reader: DatasetReader,
    sampler: Sampler,
    fold: int,
    seed: int,
    cache_dir: Path | None,
) -> Manifest:
    """The manifest for one fold, from the cache when the same inputs built it before."""
    if fold not in spec.folds:
        raise UsageError(f"protocol {spec.name!r} has no fold {fold}; its folds are {list(spec.folds)}")
    params = {key: value for key, value in spec.sampler.items() if key not in ("name", "seed")}
    key_material = {
        "dataset": spec.dataset,
        "sampler": spec.sampler["name"],
        "params": params,
        "fold": fold,
        "shot": spec.shot,
        "seed": seed,
        "split_lists_sha256": sha256_of_files(reader.split_files(fold)),
    }
    key = hashlib.sha256(canonical_json(key_material).encode()).hexdigest()
    cached = _read_cached(cache_dir, key)
    if cached is not None:
        return cached
    manifest = Manifest(tuple(sampler(reader, fold=fold, shot=spec.shot, seed=seed, **params)))
    _write_cached(cache_dir, key, manifest)
    return manifest


def _cache_file(cache_dir: Path, key: str) -> Path:
    return cache_dir / "manifests" / f"{key}.jsonl"


def _read_cached(cache_dir: Path | None, key: str) -> Manifest | None:
    if cache_dir is None:
        return None
    path = _cache_file(cache_dir, key)
    try:
        header, *lines = path.read_text(encoding="utf-8").split("\n")
        manifest = Manifest(tuple(Episode.from_json(json.loads(line)) for line in lines))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: rebuild it
    return manifest if json.loads(header).get("sha256") == manifest.sha256 else None


def _write_cached(cache_dir: Path | None, key: str, manifest: Manifest) -> None:
    if cache_dir is None:
        return
    header = json.dumps({"sha256": manifest.sha256})
    atomic_write_text(_cache_file(cache_dir, key), "\n".join([header, *manifest.lines()]))
