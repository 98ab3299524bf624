"""The results store: run records and their per-episode statistics in one SQLite file under --out.

Records stay the source of truth (the JSON files); the store indexes them for `fssbench runs`,
leaderboards and comparisons, and keeps per-episode statistics queryable and exportable.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from fssbench.harness.errors import UsageError
from fssbench.harness.journal import JournaledEpisode

STORE_NAME = "fssbench.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, method TEXT, backbone TEXT, protocol TEXT, protocol_sha256 TEXT, dataset TEXT,
    shot INTEGER, seed INTEGER, status TEXT, timing_only INTEGER, mean_miou REAL, mean_fbiou REAL,
    started_at TEXT, finished_at TEXT, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS episode_stats (
    run_id TEXT NOT NULL, fold INTEGER NOT NULL, idx INTEGER NOT NULL, class_id INTEGER NOT NULL,
    inter_bg INTEGER, inter_fg INTEGER, union_bg INTEGER, union_fg INTEGER,
    data_ms REAL, compute_ms REAL, scoring_ms REAL, warmup INTEGER,
    PRIMARY KEY (run_id, fold, idx)
);
"""
EPISODE_COLUMNS = ("fold", "idx", "class_id", "inter_bg", "inter_fg", "union_bg", "union_fg",
                   "data_ms", "compute_ms", "scoring_ms", "warmup")


class ResultsStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self._db.close()

    def save(self, record: dict[str, Any], episodes: list[JournaledEpisode]) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record["run_id"], record["method"], record["backbone"], record["protocol"], record["protocol_sha256"],
                 record["dataset"]["name"], record["shot"], record["seed"], record["status"],
                 int(record["timing_only"]), record["mean_miou"], record["mean_fbiou"], record["started_at"],
                 record["finished_at"], json.dumps(record)))
            self._db.execute("DELETE FROM episode_stats WHERE run_id = ?", (record["run_id"],))
            self._db.executemany(
                "INSERT INTO episode_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(record["run_id"], e.fold, e.score.index, e.score.class_id, *e.score.inter, *e.score.union,
                  *e.latencies_ms, int(e.warmup)) for e in episodes])

    def runs(self, method: str | None = None, protocol: str | None = None,
             status: str | None = None) -> list[dict[str, Any]]:
        """Run summaries, newest first, filtered by the given fields."""
        filters = {"method": method, "protocol": protocol, "status": status}
        clauses = [f"{column} = ?" for column, value in filters.items() if value is not None]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        cursor = self._db.execute(
            "SELECT run_id, method, backbone, protocol, shot, seed, status, timing_only, mean_miou, mean_fbiou, "
            f"finished_at FROM runs{where} ORDER BY started_at DESC, run_id DESC",
            [value for value in filters.values() if value is not None])
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(row[0]) for row in self._db.execute("SELECT record FROM runs ORDER BY started_at, run_id")]

    def resolve(self, run: str) -> str:
        """A full run id from an id or a unique prefix of one."""
        matches = [row[0] for row in self._db.execute("SELECT run_id FROM runs WHERE run_id LIKE ? || '%'", (run,))]
        if run in matches:
            return run
        if len(matches) != 1:
            found = "no run" if not matches else f"{len(matches)} runs ({', '.join(matches[:3])}, ...)"
            raise UsageError(f"run {run!r}: {found} in {self.path} match; `fssbench runs list` shows the ids")
        return matches[0]

    def record(self, run: str) -> dict[str, Any]:
        run_id = self.resolve(run)
        return json.loads(self._db.execute("SELECT record FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0])

    def episode_frame(self, run: str):
        """The run's per-episode statistics as a pandas DataFrame (typed columns)."""
        import pandas as pd

        run_id = self.resolve(run)
        rows = self._db.execute(f"SELECT {', '.join(EPISODE_COLUMNS)} FROM episode_stats WHERE run_id = ? "
                                "ORDER BY fold, idx", (run_id,)).fetchall()
        frame = pd.DataFrame(rows, columns=list(EPISODE_COLUMNS))
        frame["warmup"] = frame["warmup"].astype(bool)
        return frame.astype({column: "int64" for column in EPISODE_COLUMNS[:7]})
