"""The synthetic-set store: content-addressed samples and embeddings on disk.

An entry is a folder `<root>/<key[:2]>/<key>/` holding named files and `entry.json`, where `key` is the
sha256 of the canonical JSON of what determines the content (source identity with its weights hashes,
prompt or embedding hash, seed, settings). `entry.json` repeats the key's content (provenance) and the
sha256 of every file; `get` checks each file against it, and an entry whose files are missing or do not
match is counted as `corrupt`, moved aside as `<key>.corrupt-<time>` and made again. Entries are written
to a staging folder and renamed into place, so a reader never sees half an entry; two processes making the
same entry at once both succeed (the second rename loses and its copy is dropped).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from fssbench.harness.cache import cache_dir
from fssbench.harness.files import move_aside
from fssbench.harness.image_sources import Sample, canonical_sha256
from fssbench.harness.journal import RunWarning

ENTRY_FILE = "entry.json"


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 HxW or HxWx3 -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def png_array(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image).copy()


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()})


def bytes_tensors(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(data)


def sample_files(sample: Sample) -> dict[str, bytes]:
    files = {"image.png": png_bytes(sample.image)}
    if sample.coarse is not None:  # a 16-bit PNG keeps the score to 1.5e-5
        files["coarse.png"] = png_bytes((sample.coarse.clip(0, 1) * 65535).round().astype(np.uint16))
    if sample.truth is not None:
        files["truth.png"] = png_bytes(sample.truth.astype(np.uint8) * 255)
    return files


def files_sample(files: dict[str, bytes]) -> Sample:
    coarse = png_array(files["coarse.png"]).astype(np.float32) / 65535 if "coarse.png" in files else None
    truth = png_array(files["truth.png"]) > 127 if "truth.png" in files else None
    return Sample(png_array(files["image.png"]), coarse, truth)


@dataclass
class StoreCounts:
    hits: int = 0
    made: int = 0
    corrupt: int = 0


@dataclass
class SyntheticStore:
    """Entries under `root` (default: `<fssbench cache>/synthesis`)."""

    root: Path = field(default_factory=lambda: cache_dir() / "synthesis")
    counts: StoreCounts = field(default_factory=StoreCounts)

    def folder(self, key: str) -> Path:
        return Path(self.root) / key[:2] / key

    def get(self, key_content: dict[str, Any]) -> dict[str, bytes] | None:
        """The entry's files by name, each checked against its recorded sha256; None if absent or damaged
        (a damaged entry is moved aside and counted as corrupt)."""
        folder = self.folder(canonical_sha256(key_content))
        try:
            listed = json.loads((folder / ENTRY_FILE).read_text())["files"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:
            return self._damaged(folder, f"{ENTRY_FILE} is unreadable ({exc})")
        files = {}
        for name, digest in listed.items():
            try:
                data = (folder / name).read_bytes()
            except OSError:
                return self._damaged(folder, f"{name} is missing")
            if hashlib.sha256(data).hexdigest() != digest:
                return self._damaged(folder, f"{name} does not match its recorded sha256")
            files[name] = data
        self.counts.hits += 1
        return files

    def put(self, key_content: dict[str, Any], files: dict[str, bytes], facts: dict[str, Any] | None = None) -> None:
        """Write an entry atomically (staging folder renamed into place)."""
        key = canonical_sha256(key_content)
        folder = self.folder(key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}-"))
        try:
            for name, data in files.items():
                (staging / name).write_bytes(data)
            entry = {"key": key_content, "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
                     "facts": facts or {}}
            (staging / ENTRY_FILE).write_text(json.dumps(entry, indent=2, sort_keys=True))
            try:
                os.rename(staging, folder)
            except OSError:
                if not (folder / ENTRY_FILE).is_file():  # not a concurrent writer that won the race
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def get_or_make(self, key_content: dict[str, Any], make: Callable[[], tuple[dict[str, bytes], dict[str, Any]]]
                    ) -> dict[str, bytes]:
        """The entry's files, made by `make() -> (files, facts)` and stored when absent or damaged."""
        files = self.get(key_content)
        if files is None:
            files, facts = make()
            self.put(key_content, files, facts)
            self.counts.made += 1
        return files

    def _damaged(self, folder: Path, problem: str) -> None:
        self.counts.corrupt += 1
        aside = move_aside(folder, "corrupt")
        warnings.warn(f"synthetic-set store: {folder}: {problem}; moved to {aside} and made again", RunWarning)
        return None
