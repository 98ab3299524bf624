"""Resolving `--weights NAME=PATH` against what an adapter declares, and hashing weight files."""

from __future__ import annotations

import hashlib
from pathlib import Path

from typing import TYPE_CHECKING

from fssbench.harness.errors import UsageError

if TYPE_CHECKING:  # this module is used before torch is imported (planning checks a command line first)
    from fssbench.harness.contract import Adapter


def parse_weight_flags(flags: list[str]) -> dict[str, Path]:
    parsed: dict[str, Path] = {}
    for flag in flags:
        name, sep, path = flag.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--weights {flag!r}: expected NAME=PATH, e.g. --weights unet=/models/diffews")
        if name in parsed:
            raise UsageError(f"--weights {name}= is given twice")
        parsed[name] = Path(path).expanduser()
    return parsed


def resolve_weights(method: str, adapter: type[Adapter], given: dict[str, Path], random_init: bool) -> dict[str, Path]:
    """Check the user's weights against the adapter's declaration; return them by name."""
    problems = weight_problems(method, adapter, given, random_init)
    if problems:
        raise UsageError("\n".join(problems))
    return {} if random_init else given


def weight_problems(method: str, adapter: type[Adapter], given: dict[str, Path], random_init: bool) -> list[str]:
    """Every weight the command line gets wrong or leaves out, each with where to get it."""
    declared = {spec.name: spec for spec in adapter.weights}
    unknown = [name for name in given if name not in declared]
    if unknown:
        return [f"method {method!r} takes no weights named {name!r} (it accepts: {', '.join(declared) or 'none'})"
                for name in unknown]
    if random_init:
        if not adapter.supports_random_init:
            return [f"method {method!r} cannot run with --random-init: it has no model to initialise "
                    "randomly; give its inputs with --weights instead"]
        return ["--random-init and --weights exclude each other: a run is one or the other"] if given else []
    problems = []
    for spec in adapter.weights:
        path = given.get(spec.name)
        if path is None and spec.required:
            problems.append(f"method {method!r} needs weights {spec.name!r} ({spec.expected}); get them from "
                            f"{spec.source} and pass --weights {spec.name}=PATH"
                            + (", or use --random-init for a timing-only run" if adapter.supports_random_init else ""))
        elif path is not None and not path.exists():
            problems.append(f"--weights {spec.name}={path}: no such file or folder (expected {spec.expected}, "
                            f"from {spec.source})")
    return problems


def sha256_of_path(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in sorted order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
