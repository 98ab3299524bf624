"""Protocol specs: versioned YAML files with `include:` inheritance, validated on load and hashed.

A spec file names its dataset, folds, shot, episode sampler, evaluation resolution and the support
annotation given to methods. Files whose name starts with `_` are bases meant to be included only.
The spec hash (sha256 over the canonical JSON of the resolved spec, description excluded) goes into
every result, so two results with the same hash were produced under the same rules.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fssbench.harness.errors import UsageError

SUPPORT_ANNOTATIONS = ("mask", "box", "scribble", "none", "text")
TASKS = ("fss", "gfss")
# squash: both sides to size (HSNet). pad: long side to size, both sides floored to a multiple of 8,
# top-left in a size x size canvas, images padded with 0 and labels with ignore (DIaM's Resize)
RESOLUTION_MODES = ("squash", "pad")

# key -> (type, required); nested dicts are checked by their own validators below
_TOP_LEVEL_KEYS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "name": (str, True),
    "version": (int, True),
    "description": (str, True),
    "task": (str, True),
    "dataset": (str, True),
    "folds": (list, True),
    "shot": (int, True),
    "sampler": (dict, True),
    "resolution": (dict, True),
    "support": (str, True),
}


@dataclass(frozen=True)
class Resolution:
    mode: str
    size: int

    def describe(self) -> str:
        return f"{self.size}x{self.size} ({self.mode})"


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    version: int
    description: str
    task: str
    dataset: str
    folds: tuple[int, ...]
    shot: int
    sampler: dict[str, Any]
    resolution: Resolution
    support: str
    source: Path
    resolved: dict[str, Any]
    sha256: str

    @property
    def seed(self) -> int:
        return self.sampler["seed"]

    def select_folds(self, fold: str) -> list[int]:
        """The folds of `--fold N|all`."""
        if fold == "all":
            return list(self.folds)
        if not fold.isdigit() or int(fold) not in self.folds:
            raise UsageError(f"--fold {fold!r}: protocol {self.name!r} has folds "
                             f"{', '.join(map(str, self.folds))} (or 'all')")
        return [int(fold)]


def load_spec(path: Path) -> ProtocolSpec:
    """Read, resolve `include:` chains and validate one spec file."""
    path = Path(path)
    resolved = _resolve(path, chain=())
    _validate(resolved, path)
    hashed = {key: value for key, value in resolved.items() if key != "description"}
    digest = hashlib.sha256(canonical_json(hashed).encode()).hexdigest()
    return ProtocolSpec(
        name=resolved["name"],
        version=resolved["version"],
        description=resolved["description"],
        task=resolved["task"],
        dataset=resolved["dataset"],
        folds=tuple(resolved["folds"]),
        shot=resolved["shot"],
        sampler=dict(resolved["sampler"]),
        resolution=Resolution(**resolved["resolution"]),
        support=resolved["support"],
        source=path,
        resolved=resolved,
        sha256=digest,
    )


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read protocol spec {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"protocol spec {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"protocol spec {path} must be a mapping of keys to values")
    return data


def _resolve(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise UsageError(f"protocol spec {chain[0]}: `include:` cycle {cycle}")
    data = _read_yaml(path)
    parent_name = data.pop("include", None)
    if parent_name is None:
        return data
    if not isinstance(parent_name, str):
        raise UsageError(f"protocol spec {path}: key 'include' must be a file name, got {parent_name!r}")
    parent_path = path.parent / parent_name
    if not parent_path.is_file():
        raise UsageError(f"protocol spec {path}: key 'include' names {parent_path}, which does not exist")
    return _deep_merge(_resolve(parent_path, (*chain, path)), data)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _validate(spec: dict[str, Any], path: Path) -> None:
    def fail(key: str, problem: str) -> None:
        raise UsageError(f"protocol spec {path}: key '{key}' {problem}")

    for key in spec:
        if key not in _TOP_LEVEL_KEYS:
            fail(key, f"is not a known key (known: {', '.join(_TOP_LEVEL_KEYS)})")
    for key, (kind, required) in _TOP_LEVEL_KEYS.items():
        if key not in spec:
            if required:
                fail(key, "is missing")
            continue
        value = spec[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            fail(key, f"must be of type {kind.__name__}, got {value!r}")
    if spec["name"] != path.stem:
        fail("name", f"is {spec['name']!r} but must equal the file name {path.stem!r}")
    if spec["version"] < 1:
        fail("version", "must be a positive integer")
    if spec["task"] not in TASKS:
        fail("task", f"must be one of {', '.join(TASKS)}, got {spec['task']!r}")
    if spec["support"] not in SUPPORT_ANNOTATIONS:
        fail("support", f"must be one of {', '.join(SUPPORT_ANNOTATIONS)}, got {spec['support']!r}")
    if spec["shot"] < 1:
        fail("shot", "must be at least 1")
    folds = spec["folds"]
    if not folds or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 0 for f in folds):
        fail("folds", f"must be a non-empty list of fold numbers, got {folds!r}")
    if len(set(folds)) != len(folds):
        fail("folds", f"lists a fold twice: {folds!r}")

    sampler = spec["sampler"]
    count = "runs" if spec["task"] == "gfss" else "episodes"  # a GFSS protocol is a number of runs
    for sub, kind in (("name", str), ("seed", int), (count, int)):
        if not isinstance(sampler.get(sub), kind) or isinstance(sampler.get(sub), bool):
            fail(f"sampler.{sub}", f"must be given as {kind.__name__}, got {sampler.get(sub)!r}")
    if sampler[count] < 1:
        fail(f"sampler.{count}", "must be at least 1")

    resolution = spec["resolution"]
    if set(resolution) != {"mode", "size"}:
        fail("resolution", f"must have exactly the keys mode and size, got {sorted(resolution)}")
    if resolution["mode"] not in RESOLUTION_MODES:
        fail("resolution.mode", f"must be one of {', '.join(RESOLUTION_MODES)}, got {resolution['mode']!r}")
    size = resolution["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        fail("resolution.size", f"must be an integer of at least 8 pixels, got {size!r}")
