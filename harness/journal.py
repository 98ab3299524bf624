"""The per-run journal: every scored episode is committed before the next one starts.

SQLite in WAL mode, one transaction per episode. `synchronous=NORMAL` keeps a committed episode
through any crash of the process (kill -9 included); only a power loss can drop the last commits.
A run is identified by everything that determines its results (method, weights, protocol, folds,
seed, episode cap, device type), so re-running the same command finds its journal and resumes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fssbench.harness.errors import UsageError
from fssbench.harness.metrics import EpisodeScore
from fssbench.harness.specs import canonical_json

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS manifests (fold INTEGER PRIMARY KEY, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS episodes (
    fold INTEGER NOT NULL, idx INTEGER NOT NULL, class_id INTEGER NOT NULL,
    inter_bg INTEGER NOT NULL, inter_fg INTEGER NOT NULL, union_bg INTEGER NOT NULL, union_fg INTEGER NOT NULL,
    data_ms REAL NOT NULL, compute_ms REAL NOT NULL, scoring_ms REAL NOT NULL, warmup INTEGER NOT NULL,
    PRIMARY KEY (fold, idx)
);
CREATE TABLE IF NOT EXISTS gfss_queries (
    fold INTEGER NOT NULL, run INTEGER NOT NULL, idx INTEGER NOT NULL, confusion TEXT NOT NULL,
    data_ms REAL NOT NULL, compute_ms REAL NOT NULL, scoring_ms REAL NOT NULL, warmup INTEGER NOT NULL,
    PRIMARY KEY (fold, run, idx)
);
"""


@dataclass(frozen=True)
class JournaledEpisode:
    fold: int
    score: EpisodeScore
    latencies_ms: tuple[float, float, float]  # data, compute, scoring
    warmup: bool


def run_key(identity: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:24]


class Journal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

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

    def add(self, fold: int, score: EpisodeScore, latencies_ms: tuple[float, float, float], warmup: bool) -> None:
        self._db.execute("INSERT INTO episodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (fold, score.index, score.class_id, *score.inter, *score.union, *latencies_ms, int(warmup)))

    def add_gfss(self, fold: int, run: int, index: int, confusion: list[tuple[int, int, int]],
                 latencies_ms: tuple[float, float, float], warmup: bool) -> None:
        self._db.execute("INSERT INTO gfss_queries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (fold, run, index, json.dumps(confusion), *latencies_ms, int(warmup)))

    def gfss_queries(self, fold: int) -> dict[tuple[int, int], list[tuple[int, int, int]]]:
        """(run, index) -> sparse confusion counts of the fold's journaled queries."""
        rows = self._db.execute("SELECT run, idx, confusion FROM gfss_queries WHERE fold = ? ORDER BY run, idx",
                                (fold,)).fetchall()
        return {(run, index): [tuple(cell) for cell in json.loads(cells)] for run, index, cells in rows}

    def latencies(self) -> list[tuple[tuple[float, float, float], bool]]:
        """(data, compute, scoring) milliseconds and warm-up flag of every journaled episode or query."""
        rows = self._db.execute("SELECT data_ms, compute_ms, scoring_ms, warmup FROM episodes UNION ALL "
                                "SELECT data_ms, compute_ms, scoring_ms, warmup FROM gfss_queries").fetchall()
        return [((row[0], row[1], row[2]), bool(row[3])) for row in rows]

    def episodes(self, fold: int | None = None) -> list[JournaledEpisode]:
        query = "SELECT * FROM episodes" + (" WHERE fold = ?" if fold is not None else "") + " ORDER BY fold, idx"
        rows = self._db.execute(query, () if fold is None else (fold,)).fetchall()
        return [JournaledEpisode(row[0], EpisodeScore(row[1], row[2], (row[3], row[4]), (row[5], row[6])),
                                 (row[7], row[8], row[9]), bool(row[10])) for row in rows]
