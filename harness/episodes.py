"""Episode manifests: the ordered, hashed list of episodes every method is evaluated on.

A manifest is a pure function of the protocol's sampling rules, the split lists, the fold, the shot
and the seed. Building one reads split lists only, never images (a generalized FSS manifest also reads
label maps: DIaM draws supports by class area). Its sha256 is taken over a
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

from fssbench.harness.datasets import DatasetReader, sha256_of_files
from fssbench.harness.errors import UsageError
from fssbench.harness.files import atomic_write_text
from fssbench.harness.specs import ProtocolSpec, canonical_json


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


def lines_sha256(lines: list[str]) -> str:
    """A manifest's hash: sha256 of its canonical lines joined by newlines."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def checked_cap(count: int) -> int:
    if count < 1:
        raise UsageError(f"--episodes must be at least 1, got {count}")
    return count


@dataclass(frozen=True)
class Manifest:
    episodes: tuple[Episode, ...]

    def lines(self) -> list[str]:
        return [canonical_json(episode.to_json()) for episode in self.episodes]

    @property
    def sha256(self) -> str:
        return lines_sha256(self.lines())

    def head(self, count: int) -> "Manifest":
        return Manifest(self.episodes[:checked_cap(count)])

    def image_ids(self) -> set[str]:
        return {image for episode in self.episodes for image in (episode.query, *episode.supports)}

    def __len__(self) -> int:
        return len(self.episodes)

    @classmethod
    def from_lines(cls, lines: list[str]) -> "Manifest":
        return cls(tuple(Episode.from_json(json.loads(line)) for line in lines))


@dataclass(frozen=True)
class GfssRun:
    """One generalized FSS run: supports per novel class (fixed for the run) and the query images."""

    fold: int
    run: int
    supports: tuple[tuple[int, tuple[str, ...]], ...]  # (novel class id, image ids), classes ascending
    queries: tuple[str, ...]

    def lines(self) -> list[str]:
        header = {"fold": self.fold, "run": self.run, "supports": [[c, list(ids)] for c, ids in self.supports]}
        return [canonical_json(header)] + [canonical_json({"run": self.run, "index": index, "query": query})
                                           for index, query in enumerate(self.queries)]


@dataclass(frozen=True)
class GfssManifest:
    """The runs of one fold: a header line per run (its supports), then a line per query."""

    runs: tuple[GfssRun, ...]

    def lines(self) -> list[str]:
        return [line for run in self.runs for line in run.lines()]

    @property
    def sha256(self) -> str:
        return lines_sha256(self.lines())

    def head(self, count: int) -> "GfssManifest":
        count = checked_cap(count)
        return GfssManifest(tuple(GfssRun(r.fold, r.run, r.supports, r.queries[:count]) for r in self.runs))

    def image_ids(self) -> set[str]:
        return {image for run in self.runs for image in (*run.queries, *(i for _, ids in run.supports for i in ids))}

    def __len__(self) -> int:
        return sum(len(run.queries) for run in self.runs)

    @classmethod
    def from_lines(cls, lines: list[str]) -> "GfssManifest":
        runs: list[GfssRun] = []
        for data in map(json.loads, lines):
            if "supports" in data:
                supports = tuple((int(c), tuple(ids)) for c, ids in data["supports"])
                runs.append(GfssRun(data["fold"], data["run"], supports, ()))
            else:
                last = runs[-1]
                runs[-1] = GfssRun(last.fold, last.run, last.supports, last.queries + (data["query"],))
        return cls(tuple(runs))


Sampler = Callable[..., list[Episode]]


def build_manifest(
    spec: ProtocolSpec,
    reader: DatasetReader,
    sampler: Sampler,
    fold: int,
    seed: int,
    cache_dir: Path | None,
) -> Manifest | GfssManifest:
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
        "split_lists_sha256": sha256_of_files(input_files(sampler, reader, fold, params)),
    }
    key = hashlib.sha256(canonical_json(key_material).encode()).hexdigest()
    kind = GfssManifest if spec.task == "gfss" else Manifest
    manifest = _read_cached(cache_dir, key, kind)
    if manifest is None:
        manifest = kind(tuple(sampler(reader, fold=fold, shot=spec.shot, seed=seed, **params)))
        _write_cached(cache_dir, key, manifest)
    for image_id in sorted(manifest.image_ids()):  # an entry escaping the data root is refused here, not at loading
        reader.image_path(image_id)
        reader.label_path(image_id)
    return manifest


def input_files(sampler: Sampler, reader: DatasetReader, fold: int, params: dict[str, Any]) -> list[Path]:
    """The list files a sampler reads: by default the reader's split lists of the fold; samplers that
    read others name them with an `input_files(reader, fold, **params)` attribute."""
    declared = getattr(sampler, "input_files", None)
    return declared(reader, fold, **params) if declared else reader.split_files(fold)


def _cache_file(cache_dir: Path, key: str) -> Path:
    return cache_dir / "manifests" / f"{key}.jsonl"


def _read_cached(cache_dir: Path | None, key: str, kind: type[Manifest] | type[GfssManifest]):
    if cache_dir is None:
        return None
    path = _cache_file(cache_dir, key)
    try:
        header, *lines = path.read_text(encoding="utf-8").split("\n")
        manifest = kind.from_lines(lines)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: rebuild it
    return manifest if json.loads(header).get("sha256") == manifest.sha256 else None


def _write_cached(cache_dir: Path | None, key: str, manifest: Manifest | GfssManifest) -> None:
    if cache_dir is None:
        return
    header = json.dumps({"sha256": manifest.sha256})
    atomic_write_text(_cache_file(cache_dir, key), "\n".join([header, *manifest.lines()]))
