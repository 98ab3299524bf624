"""The results store: run records and their per-unit statistics in one SQLite file under --out.

Records stay the source of truth (the JSON files); the store indexes them for `fssbench runs`,
leaderboards and comparisons, and keeps per-episode (per-query) statistics queryable and exportable.
Concurrent runs save into one store one short transaction at a time; a store that is lost or damaged
is rebuilt from the records (and the journals, for per-unit statistics) by `rebuild_store`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from fssbench.harness.errors import FssbenchError, UsageError
from fssbench.harness.files import move_aside, open_sqlite
from fssbench.harness.journal import Journal, JournaledUnit
from fssbench.harness.record import RunRecord, parse_record, read_record

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
CREATE TABLE IF NOT EXISTS runs_without_unit_stats (run_id TEXT PRIMARY KEY);
"""


class StoreError(FssbenchError):
    """The results store cannot be read or written; `fssbench runs rebuild` rebuilds it from the records."""


def _unusable(path: Path, exc: sqlite3.Error) -> StoreError:
    return StoreError(f"the results store {path} cannot be used ({exc}); `fssbench runs rebuild --results "
                      f"{path.parent}` rebuilds it from the run records in {path.parent / 'runs'}")


class ResultsStore:
    """`with ResultsStore(path) as store:`; SQLite errors (a damaged file) become StoreErrors naming it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = open_sqlite(path, _SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise _unusable(path, exc) from None

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._db.close()
        if isinstance(exc, sqlite3.DatabaseError):
            raise _unusable(self.path, exc) from None

    def save(self, record: RunRecord, units: list[JournaledUnit] | None) -> None:
        """Add or replace the run, in one short transaction; `units` None: its per-unit statistics are lost."""
        rows = [(record.run_id, u.fold, u.unit, json.dumps(u.payload), *u.latencies_ms, int(u.warmup))
                for u in units or []]
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                             (record.run_id, record.method, record.protocol, record.status, record.started_at,
                              record.model_dump_json()))
            self._db.execute("DELETE FROM unit_stats WHERE run_id = ?", (record.run_id,))
            self._db.executemany("INSERT INTO unit_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("DELETE FROM runs_without_unit_stats WHERE run_id = ?", (record.run_id,))
            if units is None:
                self._db.execute("INSERT INTO runs_without_unit_stats VALUES (?)", (record.run_id,))

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
        if self._db.execute("SELECT 1 FROM runs_without_unit_stats WHERE run_id = ?", (run_id,)).fetchone():
            raise UsageError(f"run {run_id} has no per-episode statistics in {self.path}: the store was rebuilt "
                             "from its record after its journal was gone")
        rows = self._db.execute("SELECT fold, unit, payload, data_ms, compute_ms, scoring_ms, warmup FROM unit_stats "
                                "WHERE run_id = ? ORDER BY fold, rowid", (run_id,)).fetchall()
        scores = [_flat(json.loads(payload)) for _, _, payload, *_ in rows]
        frame = pd.DataFrame({"fold": [row[0] for row in rows], "unit": [row[1] for row in rows]})
        frame = pd.concat([frame, pd.DataFrame(scores)], axis=1)
        for position, column in enumerate(("data_ms", "compute_ms", "scoring_ms"), start=3):
            frame[column] = [row[position] for row in rows]
        frame["warmup"] = [bool(row[6]) for row in rows]
        return frame


@dataclass
class Rebuilt:
    """What `rebuild_store` did."""

    runs: list[str] = field(default_factory=list)  # run ids stored
    without_unit_stats: list[str] = field(default_factory=list)  # ... whose journals were gone
    skipped: list[str] = field(default_factory=list)  # why each unreadable record file was left out
    previous: Path | None = None  # where the previous store file was moved


def rebuild_store(results: Path) -> Rebuilt:
    """A new store `<results>/fssbench.sqlite` from the run records `<results>/runs/*.json`, with each run's
    per-unit statistics from its journal under `<results>/journals` while that exists. The previous store
    file is moved aside (`.corrupt-<time>`, or `.old-<time>` if it still opens), never deleted."""
    record_files = sorted((results / "runs").glob("*.json"))
    if not record_files:
        raise UsageError(f"no run records in {results / 'runs'}; point --results at an --out folder of `fssbench eval`")
    path, rebuilt = results / STORE_NAME, Rebuilt()
    if path.exists():
        try:
            with ResultsStore(path):
                label = "old"
        except StoreError:
            label = "corrupt"
        rebuilt.previous = move_aside(path, label)
    with ResultsStore(path) as store:
        for record_file in record_files:
            try:
                record = read_record(record_file)
            except FssbenchError as exc:
                rebuilt.skipped.append(str(exc))
                continue
            units = _journaled_units(results, record)
            store.save(record, units)
            rebuilt.runs.append(record.run_id)
            if units is None:
                rebuilt.without_unit_stats.append(record.run_id)
    return rebuilt


def _journaled_units(results: Path, record: RunRecord) -> list[JournaledUnit] | None:
    """The run's units from its journal, None when the journal is gone, unreadable or now another run's."""
    path = results / "journals" / Path(record.journal).name if record.journal else None
    if path is None or not path.is_file():
        return None
    try:
        journal = Journal(path)
    except FssbenchError:
        return None
    try:
        return journal.units() if journal.meta("run_id") == record.run_id else None
    finally:
        journal.close()


def _flat(payload: dict) -> dict:
    """FSS payloads' (bg, fg) pairs as columns; anything else as JSON text."""
    flat = {}
    for key, value in payload.items():
        if key in ("inter", "union"):
            flat[f"{key}_bg"], flat[f"{key}_fg"] = value
        else:
            flat[key] = value if not isinstance(value, list) else json.dumps(value)
    return flat
