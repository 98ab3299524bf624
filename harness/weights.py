"""Resolving `--weights NAME=PATH` against what an adapter declares, and hashing weight files."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fssbench.harness.contract import Adapter
from fssbench.harness.errors import UsageError


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
    declared = {spec.name: spec for spec in adapter.weights}
    for name in given:
        if name not in declared:
            accepted = ", ".join(declared) or "none"
            raise UsageError(f"method {method!r} takes no weights named {name!r} (it accepts: {accepted})")
    if random_init:
        if not adapter.supports_random_init:
            raise UsageError(
                f"method {method!r} cannot run with --random-init: it has no model to initialise "
                "randomly; give its inputs with --weights instead"
            )
        if given:
            raise UsageError("--random-init and --weights exclude each other: a run is one or the other")
        return {}
    for spec in adapter.weights:
        path = given.get(spec.name)
        if path is None:
            if spec.required:
                raise UsageError(
                    f"method {method!r} needs weights {spec.name!r} ({spec.expected}); get them from "
                    f"{spec.source} and pass --weights {spec.name}=PATH, or use --random-init for a "
                    "timing-only run"
                )
            continue
        if not path.exists():
            raise UsageError(
                f"--weights {spec.name}={path}: no such file or folder (expected {spec.expected}, "
                f"from {spec.source})"
            )
    return given


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
