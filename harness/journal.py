"""The per-run journal: every scored unit (episode, query) is committed before the next batch starts.

SQLite in WAL mode, one transaction per episode. `synchronous=NORMAL` keeps a committed episode
through any crash of the process (kill -9 included); only a power loss can drop the last commits.
A run is identified by everything that determines its results (method, weights, protocol, folds,
seed, episode cap, device type), so re-running the same command finds its journal and resumes.
One process at a time owns a journal: `lock_journal` holds an advisory lock on `<journal>.lock`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fssbench.harness.errors import UsageError
from fssbench.harness.files import open_sqlite
from fssbench.harness.specs import canonical_json

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS manifests (fold INTEGER PRIMARY KEY, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (
    fold INTEGER NOT NULL, unit TEXT NOT NULL, payload TEXT NOT NULL,
    data_ms REAL NOT NULL, compute_ms REAL NOT NULL, scoring_ms REAL NOT NULL, warmup INTEGER NOT NULL,
    PRIMARY KEY (fold, unit)
);
"""


@dataclass(frozen=True)
class JournaledUnit:
    """One scored unit of work (an episode, a GFSS query): its task's payload and its timing."""

    fold: int
    unit: str
    payload: dict[str, Any]
    latencies_ms: tuple[float, float, float]  # data, compute, scoring
    warmup: bool


class RunWarning(UserWarning):
    """Something about a run its user should know that does not stop it (the CLI prints one line)."""


def run_key(identity: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:24]


def lock_journal(path: Path, wait: bool) -> IO[str]:
    """Own the journal at `path` until the returned file is closed: an exclusive flock on `<journal>.lock`
    (released by the system whenever the process ends, kill -9 included), which names its holder. When
    another process holds it: a UsageError naming that process, or with `wait`, block until it is free.
    The lock file is never removed (a new one would let a waiting process and a newcomer both in)."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_path.open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "pid unknown"
        if not wait:
            lock.close()
            raise UsageError(f"another process ({holder}) is running this run (journal {path}); wait for it to "
                             "finish, or rerun with --wait to wait for it and then resume") from None
        warnings.warn(f"waiting for another process ({holder}) to finish this run (journal {path})", RunWarning)
        fcntl.flock(lock, fcntl.LOCK_EX)
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    lock.flush()
    return lock


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = open_sqlite(path, _SCHEMA, autocommit=True)
            [(check,)] = self._db.execute("PRAGMA quick_check(1)").fetchall()
            if check != "ok":
                raise sqlite3.DatabaseError(check)
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"the journal {path} is unreadable ({exc}); rerun with --no-resume to move it aside "
                             "and start this run over") from None

    def close(self) -> None:
        self._db.close()

    def meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def bind_manifest(self, fold: int, sha256: str) -> None:
        """Tie the journal to a fold's manifest; a resume on other episodes would mix two runs."""
        row = self._db.execute("SELECT sha256 FROM manifests WHERE fold = ?", (fold,)).fetchone()
        if row is None:
            self._db.execute("INSERT INTO manifests VALUES (?, ?)", (fold, sha256))
        elif row[0] != sha256:
            raise UsageError(f"the journal {self.path} holds fold {fold} of manifest {row[0][:12]}, but this run's "
                             f"manifest is {sha256[:12]} (split lists changed?); rerun with --no-resume")

    def add(self, fold: int, unit: str, payload: dict[str, Any], latencies_ms: tuple[float, float, float],
            warmup: bool) -> None:
        self._db.execute("INSERT INTO units VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (fold, unit, json.dumps(payload, separators=(",", ":")), *latencies_ms, int(warmup)))

    def units(self, fold: int | None = None) -> list[JournaledUnit]:
        query = "SELECT * FROM units" + (" WHERE fold = ?" if fold is not None else "") + " ORDER BY fold, rowid"
        rows = self._db.execute(query, () if fold is None else (fold,)).fetchall()
        return [JournaledUnit(row[0], row[1], json.loads(row[2]), (row[3], row[4], row[5]), bool(row[6]))
                for row in rows]

    def count(self, fold: int) -> int:
        """How many units of `fold` are journaled (without reading them)."""
        return self._db.execute("SELECT COUNT(*) FROM units WHERE fold = ?", (fold,)).fetchone()[0]

    def latencies(self) -> list[tuple[tuple[float, float, float], bool]]:
        """(data, compute, scoring) milliseconds and warm-up flag of every journaled unit."""
        rows = self._db.execute("SELECT data_ms, compute_ms, scoring_ms, warmup FROM units").fetchall()
        return [((row[0], row[1], row[2]), bool(row[3])) for row in rows]
