"""Paper-style leaderboards from run records.

One table per benchmark setting (dataset, task, evaluation resolution, support annotation, seed,
episode cap); one row per method (and changed options) / backbone / weights; per shot, a column per
fold (the headline metric), then the metrics the records declare: their mean over folds, with the 95%
bootstrap interval where one is recorded (FSS: mean mIoU, 95% CI, FB-IoU; GFSS: base, novel, mean,
harmonic), s/episode and peak memory. A column only ever holds comparable runs (reports/comparable.py,
on the folds both ran): a run that is not goes to a table of its own for the same setting, titled
"[other manifests #N]" (or "[other protocol version #N]" when only the protocol's hash differs).
Among several complete runs for one cell, the newest counts. Random-init runs show timing only. A
record that does not check out (reports/integrity.py) is refused, with the whole leaderboard: a
leaderboard never shows a number its record does not back.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fssbench.harness.errors import UsageError
from fssbench.harness.record import MetricValue, RunRecord
from fssbench.reports.comparable import incomparability
from fssbench.reports.integrity import verify

SettingKey = tuple[str, str, str, str, int, int | None]  # dataset, task, resolution, support, seed, cap
RowKey = tuple[str, str, str]  # method label, backbone, weights label
COMPONENTS_FIRST = ("base", "novel")  # shown before the headline they make up, as DIaM's tables do
CSV_NAMES = {"miou": "mean_miou", "base": "base_miou", "novel": "novel_miou", "harmonic": "harmonic_miou"}
VARIANT_LABELS = {"manifests": "other manifests", "protocol": "other protocol version"}


@dataclass(frozen=True)
class Metric:
    """A metric column as the records declare it."""

    name: str
    label: str
    higher_is_better: bool


@dataclass
class LeaderboardTable:
    setting: SettingKey
    title: str
    task: str
    folds: list[int] = field(default_factory=list)
    shots: list[int] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)  # the declared metrics, the headline first
    rows: dict[RowKey, dict[int, RunRecord]] = field(default_factory=dict)  # row -> shot -> newest record
    columns: dict[int, list[RunRecord]] = field(default_factory=dict)  # shot -> every run in its columns

    def conflict(self, record: RunRecord):
        """Why `record` cannot share this table's columns of its shot, or None."""
        return next((problem for other in self.columns.get(record.shot, [])
                     if (problem := incomparability(record, other, shared_folds_only=True))), None)

    def add(self, record: RunRecord) -> None:
        self.columns.setdefault(record.shot, []).append(record)
        self.folds = sorted(set(self.folds) | {result.fold for result in record.results})
        self.shots = sorted(set(self.shots) | {record.shot})
        for value in record.metrics:
            if all(metric.name != value.name for metric in self.metrics):
                self.metrics.append(Metric(value.name, value.label, value.higher_is_better))
        self.rows.setdefault(row_key(record), {})[record.shot] = record  # records come oldest first

    @property
    def headline(self) -> Metric | None:
        return self.metrics[0] if self.metrics else None

    def has_interval(self, metric: Metric) -> bool:
        return any((value := record.metric(metric.name)) is not None and value.ci95 is not None
                   for records in self.columns.values() for record in records)


def weights_label(record: RunRecord) -> str:
    weights = record.weights
    if weights == "random-init":
        return "random-init (timing only)"
    return digests_label(weights) if weights else "none"


def digests_label(weights: dict[str, str]) -> str:
    """"decoder:cdcdcdcd,model:abababab": weight names with the start of their sha256."""
    return ",".join(f"{name}:{digest[:8]}" for name, digest in sorted(weights.items()))


def method_label(record: RunRecord) -> str:
    """The method, with the options a run changed from the method's defaults (ablations get rows of their own)."""
    return f"{record.method} [{record.variant}]" if record.variant else record.method


def row_key(record: RunRecord) -> RowKey:
    return method_label(record), record.backbone or "-", weights_label(record)


def setting_key(record: RunRecord) -> SettingKey:
    return (record.dataset.name, record.task, record.evaluation_resolution, record.support_annotation, record.seed,
            record.episodes_cap)


def setting_title(setting: SettingKey) -> str:
    dataset, task, resolution, support, seed, cap = setting
    title = f"{dataset} ({task}), {resolution}, {support} supports, seed {seed}"
    return title + (f", first {cap} episodes/fold" if cap else "")


def build_tables(records: list[RunRecord], protocols: list[str] | None = None) -> list[LeaderboardTable]:
    for record in records:
        problem = verify(record)
        if problem:
            raise UsageError(f"{problem}; a leaderboard shows no record that does not check out")
    tables: list[LeaderboardTable] = []
    for record in sorted(records, key=lambda r: (r.finished_at or "", r.run_id)):
        if record.status != "complete" or (protocols and record.protocol not in protocols):
            continue
        setting = setting_key(record)
        same_setting = [table for table in tables if table.setting == setting]
        table = next((table for table in same_setting if table.conflict(record) is None), None)
        if table is None:
            title = setting_title(setting)
            if same_setting:
                problem = same_setting[0].conflict(record)  # every table of the setting has one
                title += f" [{VARIANT_LABELS.get(problem.aspect, 'other runs')} #{len(same_setting) + 1}]"
            table = LeaderboardTable(setting, title, record.task)
            tables.append(table)
        table.add(record)
    return tables


def display_order(table: LeaderboardTable) -> list[Metric]:
    """The table's metrics as papers print them: the components of the headline, then the rest in
    declared order (FSS: mIoU, FB-IoU; GFSS: base, novel, mean, harmonic)."""
    first = [metric for metric in table.metrics if metric.name in COMPONENTS_FIRST]
    return first + [metric for metric in table.metrics if metric not in first]


def _cells(record: RunRecord | None, table: LeaderboardTable) -> dict[str, Any]:
    """One run's cells: per fold the headline, and per declared metric its value and interval."""
    if record is None:
        return {}
    timing = record.timing
    cells: dict[str, Any] = {"s_per_episode": timing.s_per_episode if timing else None,
                             "peak_memory_mb": timing.peak_memory_mb if timing else None, "run_id": record.run_id}
    if record.timing_only or table.headline is None:
        return cells
    by_fold = {result.fold: result for result in record.results}
    cells.update({f"fold{fold}": by_fold[fold].metrics.get(table.headline.name)
                  for fold in table.folds if fold in by_fold})
    if not all(fold in by_fold for fold in table.folds):
        return cells
    for metric in table.metrics:
        value: MetricValue | None = record.metric(metric.name)
        if value is not None:
            cells[metric.name] = value.value
            cells[f"{metric.name} ci95"] = value.ci95
    return cells


def _csv_columns(metric: Metric, headline: bool) -> tuple[str, str, str]:
    """The CSV names of a metric's value and its interval bounds."""
    name = CSV_NAMES.get(metric.name, metric.name)
    return (name, "ci_low", "ci_high") if headline else (name, f"{name}_ci_low", f"{name}_ci_high")


def to_frame(tables: list[LeaderboardTable]) -> pd.DataFrame:
    """One row per (table, method row, shot): the CSV layout."""
    metrics: list[tuple[Metric, bool]] = []  # every table's metrics, and whether any has an interval
    for table in tables:
        for metric in table.metrics:
            known = next((i for i, (m, _) in enumerate(metrics) if m.name == metric.name), None)
            if known is None:
                metrics.append((metric, table.has_interval(metric)))
            elif table.has_interval(metric):
                metrics[known] = (metrics[known][0], True)
    rows = []
    for table in tables:
        for (method, backbone, weights), by_shot in table.rows.items():
            for shot, record in sorted(by_shot.items()):
                cells = _cells(record, table)
                row = {"setting": table.title, "method": method, "backbone": backbone, "weights": weights,
                       "timing_only": record.timing_only, "shot": shot,
                       "resolution": record.evaluation_resolution,
                       **{key: value for key, value in cells.items() if key.startswith("fold")}}
                for position, (metric, _) in enumerate(metrics):
                    value_column, low_column, high_column = _csv_columns(metric, position == 0)
                    row[value_column] = cells.get(metric.name)
                    interval = cells.get(f"{metric.name} ci95")
                    row[low_column], row[high_column] = interval if interval else (None, None)
                rows.append({**row, "s_per_episode": cells["s_per_episode"],
                             "peak_memory_mb": cells["peak_memory_mb"], "run_id": cells["run_id"]})
    fold_columns = sorted({c for row in rows for c in row if c.startswith("fold")}, key=lambda c: int(c[4:]))
    metric_columns = []
    for position, (metric, with_interval) in enumerate(metrics):
        value_column, low_column, high_column = _csv_columns(metric, position == 0)
        metric_columns += [value_column, low_column, high_column] if with_interval else [value_column]
    columns = ["setting", "method", "backbone", "weights", "timing_only", "shot", "resolution", *fold_columns,
               *metric_columns, "s_per_episode", "peak_memory_mb", "run_id"]
    return pd.DataFrame(rows, columns=columns)


def to_csv(tables: list[LeaderboardTable]) -> str:
    buffer = io.StringIO()
    to_frame(tables).to_csv(buffer, index=False, float_format="%.4f")
    return buffer.getvalue()


def _num(value: Any, digits: int = 1) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _markdown_table(table: LeaderboardTable) -> str:
    shown = display_order(table)
    header = ["method", "backbone", "weights"]
    for shot in table.shots:
        header += [f"{shot}-shot fold{fold}" for fold in table.folds]
        labels = []
        for metric in shown:
            labels.append("mean" if metric == table.headline else metric.label)  # the mean of the fold columns
            labels += ["95% CI"] if table.has_interval(metric) else []
        block = [*labels, "s/query" if table.task == "gfss" else "s/episode", "peak MB"]
        block[0] = f"{shot}-shot {block[0]}"
        header += block
    lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def sort_key(item):
        (_, _, weights), by_shot = item
        headline = table.headline
        value = _cells(by_shot.get(table.shots[0]), table).get(headline.name) if headline else None
        if value is None or pd.isna(value):
            return (weights.startswith("random-init"), 1, 0.0)
        return (weights.startswith("random-init"), 0, -value if headline.higher_is_better else value)

    for (method, backbone, weights), by_shot in sorted(table.rows.items(), key=sort_key):
        cells = [method, backbone, weights]
        for shot in table.shots:
            c = _cells(by_shot.get(shot), table)
            cells += [_num(c.get(f"fold{fold}")) for fold in table.folds]
            for metric in shown:
                cells.append(_num(c.get(metric.name)))
                if table.has_interval(metric):
                    interval = c.get(f"{metric.name} ci95")
                    cells.append(f"[{_num(interval[0])}, {_num(interval[1])}]" if interval else "—")
            cells += [_num(c.get("s_per_episode"), 3), _num(c.get("peak_memory_mb"), 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_markdown(tables: list[LeaderboardTable]) -> str:
    if not tables:
        return "No complete runs match.\n"
    note = ("mIoU and FB-IoU x100 (HSNet class-accumulated); mean over folds with a 95% bootstrap interval over "
            "episodes; s/episode and peak memory as measured on each run's device (see its record).")
    if any(table.task == "gfss" for table in tables):
        note += (" Generalized FSS (DIaM): fold columns hold each fold's mean of base and novel mIoU; base, novel, "
                 "mean and harmonic are averaged over runs, then folds.")
    return "\n\n".join(_markdown_table(table) for table in tables) + "\n\n" + note + "\n"
