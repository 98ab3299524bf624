"""The results store: run records and their per-unit statistics in one SQLite file under --out.

Records stay the source of truth (the JSON files); the store indexes them for `fssbench runs`,
leaderboards and comparisons, and keeps per-episode (per-query) statistics queryable and exportable.
"""

from __future__ import annotations

import json
from pathlib import Path

from fssbench.harness.errors import UsageError
from fssbench.harness.files import open_sqlite
from fssbench.harness.journal import JournaledUnit
from fssbench.harness.record import RunRecord, parse_record

STORE_NAME = "fssbench.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, method TEXT, protocol TEXT, status TEXT, started_at TEXT, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unit_stats (
    run_id TEXT NOT NULL, fold INTEGER NOT NULL, unit TEXT NOT NULL, payload TEXT NOT NULL,
    data_ms REAL, compute_ms REAL, scoring_ms REAL, warmup INTEGER,
    PRIMARY KEY (run_id, fold, unit)
);
"""


class ResultsStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_sqlite(path, _SCHEMA)

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self._db.close()

    def save(self, record: RunRecord, units: list[JournaledUnit]) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                             (record.run_id, record.method, record.protocol, record.status, record.started_at,
                              record.model_dump_json()))
            self._db.execute("DELETE FROM unit_stats WHERE run_id = ?", (record.run_id,))
            self._db.executemany(
                "INSERT INTO unit_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(record.run_id, u.fold, u.unit, json.dumps(u.payload), *u.latencies_ms, int(u.warmup))
                 for u in units])

    def records(self, method: str | None = None, protocol: str | None = None,
                status: str | None = None) -> list[RunRecord]:
        """Stored records, oldest first, filtered by the given fields."""
        filters = {"method": method, "protocol": protocol, "status": status}
        clauses = [f"{column} = ?" for column, value in filters.items() if value is not None]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(f"SELECT run_id, record FROM runs{where} ORDER BY started_at, run_id",
                                [value for value in filters.values() if value is not None]).fetchall()
        return [parse_record(json.loads(text), f"run {run_id} in {self.path}") for run_id, text in rows]

    def resolve(self, run: str) -> str:
        """A full run id from an id or a unique prefix of one."""
        matches = [row[0] for row in self._db.execute("SELECT run_id FROM runs WHERE run_id LIKE ? || '%'", (run,))]
        if run in matches:
            return run
        if len(matches) != 1:
            found = "no run" if not matches else f"{len(matches)} runs ({', '.join(matches[:3])}, ...)"
            raise UsageError(f"run {run!r}: {found} in {self.path} match; `fssbench runs list` shows the ids")
        return matches[0]

    def record(self, run: str) -> RunRecord:
        run_id = self.resolve(run)
        text = self._db.execute("SELECT record FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]
        return parse_record(json.loads(text), f"run {run_id} in {self.path}")

    def episode_frame(self, run: str):
        """The run's per-unit statistics as a pandas DataFrame: fold, unit, the task's score fields
        (FSS: class_id, inter_bg, inter_fg, union_bg, union_fg; GFSS: the sparse confusion cells) and
        the phase latencies."""
        import pandas as pd

        run_id = self.resolve(run)
        rows = self._db.execute("SELECT fold, unit, payload, data_ms, compute_ms, scoring_ms, warmup FROM unit_stats "
                                "WHERE run_id = ? ORDER BY fold, rowid", (run_id,)).fetchall()
        scores = [_flat(json.loads(payload)) for _, _, payload, *_ in rows]
        frame = pd.DataFrame({"fold": [row[0] for row in rows], "unit": [row[1] for row in rows]})
        frame = pd.concat([frame, pd.DataFrame(scores)], axis=1)
        for position, column in enumerate(("data_ms", "compute_ms", "scoring_ms"), start=3):
            frame[column] = [row[position] for row in rows]
        frame["warmup"] = [bool(row[6]) for row in rows]
        return frame


def _flat(payload: dict) -> dict:
    """FSS payloads' (bg, fg) pairs as columns; anything else as JSON text."""
    flat = {}
    for key, value in payload.items():
        if key in ("inter", "union"):
            flat[f"{key}_bg"], flat[f"{key}_fg"] = value
        else:
            flat[key] = value if not isinstance(value, list) else json.dumps(value)
    return flat
