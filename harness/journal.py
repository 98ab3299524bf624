"""The per-run journal: every scored unit (episode, query) is committed before the next batch starts.

SQLite in WAL mode, one transaction per episode. `synchronous=NORMAL` keeps a committed episode
through any crash of the process (kill -9 included); only a power loss can drop the last commits.
A run is identified by everything that determines its results (method, weights, protocol, folds,
seed, episode cap, device type), so re-running the same command finds its journal and resumes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def run_key(identity: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:24]


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_sqlite(path, _SCHEMA, autocommit=True)

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

    def latencies(self) -> list[tuple[tuple[float, float, float], bool]]:
        """(data, compute, scoring) milliseconds and warm-up flag of every journaled unit."""
        rows = self._db.execute("SELECT data_ms, compute_ms, scoring_ms, warmup FROM units").fetchall()
        return [((row[0], row[1], row[2]), bool(row[3])) for row in rows]
