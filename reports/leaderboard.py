"""Paper-style leaderboards from run records.

One table per benchmark setting (task, dataset, evaluation resolution, support annotation, seed,
episode cap); one row per method (and changed options) / backbone / weights; per shot, a column per fold, the mean mIoU
with its 95% bootstrap interval, FB-IoU, s/episode and peak memory. A column only ever holds runs on
the same manifest: a run whose manifest differs from a column's goes to a table of its own. Among
several complete runs for one cell, the newest counts. Random-init runs show timing only.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class LeaderboardTable:
    title: str
    task: str
    folds: list[int]
    shots: list[int]
    rows: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = field(default_factory=dict)  # row -> shot -> record
    manifests: dict[tuple[int, int], str] = field(default_factory=dict)  # (shot, fold) -> manifest sha256

    def accepts(self, record: dict[str, Any]) -> bool:
        return all(self.manifests.get((record["shot"], r["fold"]), r["manifest_sha256"]) == r["manifest_sha256"]
                   for r in record["results"])

    def add(self, record: dict[str, Any]) -> None:
        for result in record["results"]:
            self.manifests[(record["shot"], result["fold"])] = result["manifest_sha256"]
        self.folds = sorted(set(self.folds) | {r["fold"] for r in record["results"]})
        self.shots = sorted(set(self.shots) | {record["shot"]})
        self.rows.setdefault(row_key(record), {})[record["shot"]] = record  # records come oldest first


def weights_label(record: dict[str, Any]) -> str:
    weights = record["weights"]
    if weights == "random-init":
        return "random-init (timing only)"
    if not weights:
        return "none"
    return ",".join(f"{name}:{digest[:8]}" for name, digest in sorted(weights.items()))


def method_label(record: dict[str, Any]) -> str:
    """The method, with the options a run changed from the method's defaults (ablations get rows of their own)."""
    variant = record.get("variant")
    return f"{record['method']} [{variant}]" if variant else record["method"]


def row_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return method_label(record), record["backbone"] or "-", weights_label(record)


def setting_title(record: dict[str, Any]) -> str:
    title = (f"{record['dataset']['name']} ({record['task']}), {record['evaluation_resolution']}, "
             f"{record['support_annotation']} supports, seed {record['seed']}")
    return title + (f", first {record['episodes_cap']} episodes/fold" if record["episodes_cap"] else "")


def build_tables(records: list[dict[str, Any]], protocols: list[str] | None = None) -> list[LeaderboardTable]:
    tables: list[LeaderboardTable] = []
    for record in sorted(records, key=lambda r: (r["finished_at"] or "", r["run_id"])):
        if record["status"] != "complete" or (protocols and record["protocol"] not in protocols):
            continue
        title = setting_title(record)
        table = next((t for t in tables if t.title.startswith(title) and t.accepts(record)), None)
        if table is None:
            variants = sum(t.title.startswith(title) for t in tables)
            table = LeaderboardTable(title + (f" [other manifests #{variants + 1}]" if variants else ""),
                                     record["task"], [], [])
            tables.append(table)
        table.add(record)
    return tables


def _cells(record: dict[str, Any] | None, folds: list[int]) -> dict[str, Any]:
    if record is None:
        return {}
    timing = record["timing"]
    cells = {"s_per_episode": timing["s_per_episode"], "peak_memory_mb": timing["peak_memory_mb"],
             "run_id": record["run_id"]}
    if record["timing_only"]:
        return cells
    by_fold = {r["fold"]: r for r in record["results"]}
    cells.update({f"fold{f}": by_fold[f]["miou"] for f in folds if f in by_fold})
    if not all(f in by_fold for f in folds):
        return cells
    if record["task"] == "gfss":
        scores = record["gfss"]
        cells.update(mean_miou=scores["mean"], base_miou=scores["base"], novel_miou=scores["novel"],
                     harmonic_miou=scores["harmonic"])
    else:
        cells.update(mean_miou=record["mean_miou"], ci_low=record["mean_miou_ci95"][0],
                     ci_high=record["mean_miou_ci95"][1], fbiou=record["mean_fbiou"])
    return cells


def to_frame(tables: list[LeaderboardTable]) -> pd.DataFrame:
    """One row per (table, method row, shot): the CSV layout."""
    rows = []
    for table in tables:
        for (method, backbone, weights), by_shot in table.rows.items():
            for shot, record in sorted(by_shot.items()):
                rows.append({"setting": table.title, "method": method, "backbone": backbone, "weights": weights,
                             "timing_only": bool(record["timing_only"]), "shot": shot,
                             "resolution": record["evaluation_resolution"], **_cells(record, table.folds)})
    fold_columns = sorted({c for row in rows for c in row if c.startswith("fold")}, key=lambda c: int(c[4:]))
    columns = ["setting", "method", "backbone", "weights", "timing_only", "shot", "resolution", *fold_columns,
               "mean_miou", "ci_low", "ci_high", "fbiou", "s_per_episode", "peak_memory_mb", "run_id"]
    if any(table.task == "gfss" for table in tables):
        columns[columns.index("ci_low"):columns.index("ci_low")] = ["base_miou", "novel_miou", "harmonic_miou"]
    return pd.DataFrame(rows, columns=columns)


def to_csv(tables: list[LeaderboardTable]) -> str:
    buffer = io.StringIO()
    to_frame(tables).to_csv(buffer, index=False, float_format="%.4f")
    return buffer.getvalue()


def _num(value: Any, digits: int = 1) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def to_markdown(tables: list[LeaderboardTable]) -> str:
    if not tables:
        return "No complete runs match.\n"
    out = []
    for table in tables:
        gfss = table.task == "gfss"
        header = ["method", "backbone", "weights"]
        for shot in table.shots:
            header += [f"{shot}-shot fold{f}" for f in table.folds]
            header += ([f"{shot}-shot base", "novel", "mean", "harmonic", "s/query", "peak MB"] if gfss else
                       [f"{shot}-shot mean", "95% CI", "FB-IoU", "s/episode", "peak MB"])
        lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

        def sort_key(item):
            (_, _, weights), by_shot = item
            first = _cells(by_shot.get(table.shots[0]), table.folds).get("mean_miou")
            return (weights.startswith("random-init"), -(first if first is not None else -1))

        for (method, backbone, weights), by_shot in sorted(table.rows.items(), key=sort_key):
            cells = [method, backbone, weights]
            for shot in table.shots:
                c = _cells(by_shot.get(shot), table.folds)
                ci = f"[{_num(c['ci_low'])}, {_num(c['ci_high'])}]" if c.get("ci_low") is not None else "—"
                cells += [_num(c.get(f"fold{f}")) for f in table.folds]
                scores = ([c.get("base_miou"), c.get("novel_miou"), c.get("mean_miou"), c.get("harmonic_miou")] if gfss
                          else [c.get("mean_miou"), ci, c.get("fbiou")])
                cells += [v if isinstance(v, str) else _num(v) for v in scores]
                cells += [_num(c.get("s_per_episode"), 3), _num(c.get("peak_memory_mb"), 0)]
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    note = ("mIoU and FB-IoU x100 (HSNet class-accumulated); mean over folds with a 95% bootstrap interval over "
            "episodes; s/episode and peak memory as measured on each run's device (see its record).")
    if any(table.task == "gfss" for table in tables):
        note += (" Generalized FSS (DIaM): fold columns hold each fold's mean of base and novel mIoU; base, novel, "
                 "mean and harmonic are averaged over runs, then folds.")
    return "\n\n".join(out) + "\n\n" + note + "\n"
