"""Files: atomic writes (a crash or a concurrent reader never sees half a file), images opened with
errors that name the file, SQLite set up one way, and databases moved aside (never deleted)."""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from fssbench.harness.errors import DataError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """`write(staging)` writes the file's content to a staging path (unique per process, in the same
    folder), which then replaces `path` in one step; a failed write leaves `path` as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(staging)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda staging: staging.write_text(text, encoding="utf-8"))


@contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """An image file opened with PIL; a missing or undecodable file (in the block too: decoding is
    lazy) raises a DataError naming it."""
    try:
        with Image.open(path) as image:
            yield image
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path} is unreadable or corrupt ({exc}); re-extract or re-download it") from None


def open_sqlite(path: Path, schema: str, autocommit: bool = False) -> sqlite3.Connection:
    """An SQLite database in WAL mode (readers never block the writer) with `schema` applied; waits up to
    30 s for another process's write to finish. `autocommit`: every statement is its own transaction;
    otherwise a transaction takes the write lock when it begins (BEGIN IMMEDIATE), so concurrent writers
    queue up instead of failing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30, isolation_level=None if autocommit else "IMMEDIATE")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


def move_aside(path: Path, label: str) -> Path:
    """Rename the SQLite database `path` (with its -wal and -shm files, so it still opens) to
    `<name>.<label>-<time>` next to it; returns the new path."""
    aside = path.with_name(f"{path.name}.{label}-{datetime.now():%Y%m%dT%H%M%S.%f}")
    for suffix in ("", "-wal", "-shm"):
        if path.with_name(path.name + suffix).exists():
            os.replace(path.with_name(path.name + suffix), aside.with_name(aside.name + suffix))
    return aside
