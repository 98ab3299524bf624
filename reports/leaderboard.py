"""Paper-style leaderboards from run records, as Markdown, CSV or LaTeX (booktabs).

One table per benchmark setting (dataset, task, evaluation resolution, support annotation, episode
cap); one row per method (and changed options) / backbone / weights; per shot, a column per fold (the
headline metric), then the metrics the records declare in the order papers print them (FSS: mIoU,
FB-IoU; GFSS: base, novel, mean, harmonic), each the mean over the table's folds, the 95% interval
where there is one, s/episode and peak memory. The title names the folds ("folds 0-3", or "fold 0
only"); a row that lacks one of them shows its fold columns only.

Seeds: runs that differ only by their episode seed fill one cell together. Each value is the mean over
the seeds with their sample standard deviation (mean ± std, n - 1 in the denominator) when there are
several; the interval is then the pooled one: the 95% bootstrap interval of the mean over seeds, each
seed's episodes resampled within class (harness/statistics.py `seeds_bootstrap_interval`; one seed:
its recorded interval). s/episode is the mean over the seeds, peak memory the largest. The seeds are
named in the title when every row has the same ones, in a seeds column otherwise.

Which runs fill a cell (a row and shot): per seed, the complete run that covers the most folds, the
newest of those; then the seeds whose runs cover the same folds as the best-covered one (most folds,
then most seeds, then the newest run). The notes under a table name the runs of every cell that more
than one stored run could fill, and why the others are not shown.

A column only ever holds comparable runs (reports/comparable.py: the same protocol and evaluation
resolution, and on the folds both ran the same manifests wherever two runs have the same seed): a run
that is not goes to a table of its own for the same setting, titled "[other manifests #N]" (or
"[other protocol version #N]" when only the protocol's hash differs). Random-init runs show timing
only. A record that does not check out (reports/integrity.py) is refused, with the whole leaderboard:
a leaderboard never shows a number its record does not back.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fssbench.harness.errors import UsageError
from fssbench.harness.record import FssFoldResult, RunRecord
from fssbench.reports.comparable import incomparability
from fssbench.reports.integrity import verify

SettingKey = tuple[str, str, str, str, int | None]  # dataset, task, resolution, support, episode cap
RowKey = tuple[str, str, str]  # method label, backbone, weights label
Interval = tuple[float, float]
COMPONENTS_FIRST = ("base", "novel")  # shown before the headline they make up, as DIaM's tables do
CSV_NAMES = {"miou": "mean_miou", "base": "base_miou", "novel": "novel_miou", "harmonic": "harmonic_miou"}
VARIANT_LABELS = {"manifests": "other manifests", "protocol": "other protocol version"}
IDENTITY_COLUMNS = ("method", "backbone", "weights", "seeds")
METRIC_COLUMNS = ("miou", "fbiou", "base", "novel", "harmonic")  # the metrics the tasks declare (GFSS: miou is "mean")
COLUMNS = (*IDENTITY_COLUMNS, "folds", *METRIC_COLUMNS, "ci", "time", "memory", "cost", "runs")
DEFAULT_COLUMNS = tuple(column for column in COLUMNS if column != "runs")  # CSV adds the run ids


@dataclass(frozen=True)
class Metric:
    """A metric column as the records declare it."""

    name: str
    label: str
    higher_is_better: bool


@dataclass(frozen=True)
class Stat:
    """A value over seeds: their mean and, with more than one seed, the sample standard deviation."""

    mean: float
    std: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        if not values or any(value is None for value in values):
            return None
        array = np.asarray(values, dtype=np.float64)  # nan stays nan: a GFSS group without a scored class
        return cls(float(array.mean()), float(array.std(ddof=1)) if len(values) > 1 else None)


@dataclass
class Cell:
    """What one row shows for one shot: the runs that fill it (one per seed, by seed), the values they give,
    and the stored runs of the cell that are not shown, with why."""

    runs: list[RunRecord]
    left_out: list[tuple[RunRecord, str]]
    folds: tuple[int, ...]
    fold_values: dict[int, Stat] = field(default_factory=dict)
    values: dict[str, Stat] = field(default_factory=dict)  # metric name -> value (when the cell covers all folds)
    intervals: dict[str, Interval] = field(default_factory=dict)
    s_per_episode: Stat | None = None
    peak_memory_mb: Stat | None = None
    cost_s: Stat | None = None  # GPU-seconds (CUDA runs) or CPU-seconds, summed over the cell's runs

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    @property
    def timing_only(self) -> bool:
        return self.runs[0].timing_only


@dataclass
class LeaderboardTable:
    setting: SettingKey
    variant: str  # "" or " [other manifests #2]"
    task: str
    shots: list[int] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)  # the declared metrics, the headline first
    candidates: dict[RowKey, dict[int, list[RunRecord]]] = field(default_factory=dict)  # row -> shot -> runs, oldest first
    columns: dict[int, list[RunRecord]] = field(default_factory=dict)  # shot -> every run in its columns
    cells: dict[RowKey, dict[int, Cell]] = field(default_factory=dict)  # row -> shot -> cell (after `finish`)
    folds: list[int] = field(default_factory=list)  # the folds the shown runs cover (after `finish`)

    def conflict(self, record: RunRecord):
        """Why `record` cannot share this table's columns of its shot, or None."""
        return next((problem for other in self.columns.get(record.shot, [])
                     if (problem := incomparability(record, other, shared_folds_only=True, across_seeds=True))),
                    None)

    def add(self, record: RunRecord) -> None:
        self.columns.setdefault(record.shot, []).append(record)
        self.shots = sorted(set(self.shots) | {record.shot})
        for value in record.metrics:
            if all(metric.name != value.name for metric in self.metrics):
                self.metrics.append(Metric(value.name, value.label, value.higher_is_better))
        self.candidates.setdefault(row_key(record), {}).setdefault(record.shot, []).append(record)

    def finish(self) -> None:
        """Choose the runs of every cell and compute what they show."""
        self.cells = {row: {shot: choose_runs(runs) for shot, runs in by_shot.items()}
                      for row, by_shot in self.candidates.items()}
        self.folds = sorted({fold for by_shot in self.cells.values() for cell in by_shot.values()
                             for fold in cell.folds})
        for by_shot in self.cells.values():
            for cell in by_shot.values():
                _fill(cell, self)

    @property
    def headline(self) -> Metric | None:
        return self.metrics[0] if self.metrics else None

    @property
    def seeds(self) -> list[int] | None:
        """The seeds of every row, when all rows have the same; None otherwise."""
        seed_lists = {tuple(cell.seeds) for by_shot in self.cells.values() for cell in by_shot.values()}
        return list(next(iter(seed_lists))) if len(seed_lists) == 1 else None

    @property
    def title(self) -> str:
        dataset, task, resolution, support, cap = self.setting
        title = f"{dataset} ({task}), {resolution}, {support} supports, {folds_label(self.folds)}"
        if self.seeds is not None:
            title += f", {seeds_label(self.seeds)}"
        return title + (f", first {cap} episodes/fold" if cap else "") + self.variant

    def has_interval(self, metric: Metric) -> bool:
        return any(metric.name in cell.intervals for by_shot in self.cells.values() for cell in by_shot.values())

    def several_seeds(self) -> bool:
        return any(len(cell.runs) > 1 for by_shot in self.cells.values() for cell in by_shot.values())


def choose_runs(runs: list[RunRecord]) -> Cell:
    """The cell that `runs` (complete, comparable, of one row and shot, oldest first) fill, by the rule of the
    module's docstring."""
    by_seed: dict[int, list[RunRecord]] = {}
    for run in runs:
        by_seed.setdefault(run.seed, []).append(run)
    chosen, left_out = {}, []
    for seed, seed_runs in by_seed.items():
        # most folds, then the newest (runs come oldest first; max keeps the first of equals, so newest first)
        best = max(reversed(seed_runs), key=lambda run: len(run.results))
        chosen[seed] = best
        left_out += [(run, f"seed {seed}, {'older' if len(run.results) == len(best.results) else 'fewer folds'}")
                     for run in seed_runs if run is not best]
    by_folds: dict[tuple[int, ...], list[RunRecord]] = {}
    for run in chosen.values():
        by_folds.setdefault(tuple(sorted(run.manifests())), []).append(run)
    order = {run.run_id: position for position, run in enumerate(runs)}
    folds, shown = max(by_folds.items(), key=lambda item: (len(item[0]), len(item[1]),
                                                           max(order[run.run_id] for run in item[1])))
    left_out += [(run, f"seed {run.seed} covers {folds_label(sorted(run.manifests()))}, the cell {folds_label(folds)}")
                 for run in chosen.values() if run not in shown]
    return Cell(sorted(shown, key=lambda run: run.seed), left_out, folds)


def _fill(cell: Cell, table: LeaderboardTable) -> None:
    runs = cell.runs
    timings = [run.timing for run in runs]
    if all(timing is not None for timing in timings):
        seconds = Stat.of([timing.s_per_episode for timing in timings])
        cell.s_per_episode = Stat(seconds.mean) if seconds else None  # a mean, no spread: timing is not a score
        cell.peak_memory_mb = Stat(max(timing.peak_memory_mb for timing in timings))
    if all(run.cost is not None for run in runs):
        cell.cost_s = Stat(sum(run.cost.gpu_s if run.cost.gpu_s is not None else run.cost.cpu_s for run in runs))
    headline = table.headline
    if cell.timing_only or headline is None:
        return
    for fold in cell.folds:
        cell.fold_values[fold] = Stat.of([_fold(run, fold).metrics.get(headline.name) for run in runs])
    if list(cell.folds) != table.folds:
        return
    for metric in table.metrics:
        values = [run.metric(metric.name) for run in runs]
        if any(value is None for value in values):
            continue
        cell.values[metric.name] = Stat.of([value.value for value in values])
        if len(runs) == 1 and values[0].ci95 is not None:
            cell.intervals[metric.name] = values[0].ci95
        elif len(runs) > 1 and metric == headline and all(value.ci95 is not None for value in values):
            interval = pooled_interval(runs)
            if interval is not None:
                cell.intervals[metric.name] = interval


def pooled_interval(runs: list[RunRecord]) -> Interval | None:
    """The 95% bootstrap interval of the mean over `runs` (one per seed) of their mean mIoU over folds, from
    their episodes; None where a fold is not FSS or lacks its per-episode scores."""
    from fssbench.harness.fss import fold_statistics
    from fssbench.harness.statistics import seeds_bootstrap_interval

    results = [result for run in runs for result in run.results]
    if not all(isinstance(result, FssFoldResult) and result.episode_scores for result in results):
        return None
    return seeds_bootstrap_interval([[fold_statistics(result) for result in run.results] for run in runs])


def _fold(record: RunRecord, fold: int):
    return next(result for result in record.results if result.fold == fold)


def ranges_label(numbers: list[int]) -> str:
    """0, 1, 2, 3, 5 -> "0-3, 5"."""
    spans: list[list[int]] = []
    for number in sorted(numbers):
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in spans)


def folds_label(folds: list[int] | tuple[int, ...]) -> str:
    if len(folds) < 2:
        return f"fold {folds[0]} only" if folds else "no folds"
    return f"folds {ranges_label(list(folds))}"


def seeds_label(seeds: list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {ranges_label(seeds)}"


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
    return (record.dataset.name, record.task, record.evaluation_resolution, record.support_annotation,
            record.episodes_cap)


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
            variant = ""
            if same_setting:
                problem = same_setting[0].conflict(record)  # every table of the setting has one
                variant = f" [{VARIANT_LABELS.get(problem.aspect, 'other runs')} #{len(same_setting) + 1}]"
            table = LeaderboardTable(setting, variant, record.task)
            tables.append(table)
        table.add(record)
    for table in tables:
        table.finish()
    return tables


def display_order(metrics: list[Metric]) -> list[Metric]:
    """Metrics as papers print them: the components of the headline, then the rest in declared order
    (FSS: mIoU, FB-IoU; GFSS: base, novel, mean, harmonic)."""
    first = [metric for metric in metrics if metric.name in COMPONENTS_FIRST]
    return first + [metric for metric in metrics if metric not in first]


def parse_columns(text: str | None, tables: list[LeaderboardTable]) -> list[str] | None:
    """The column names of `--columns a,b,c` (None: the default), unknown ones refused with the list."""
    if text is None:
        return None
    known = list(dict.fromkeys([*COLUMNS, *(metric.name for table in tables for metric in table.metrics)]))
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise UsageError(f"--columns {text!r}: unknown column{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown) or '(none given)'}; choose among {', '.join(known)}")
    return names


# --- the columns a table shows: one layout for Markdown and LaTeX ---

Shown = Stat | Interval | str | None


@dataclass(frozen=True)
class Column:
    label: str
    value: Callable[[Cell], Shown]
    digits: int = 1
    shot: int | None = None  # the shot block it belongs to
    fold: bool = False  # a fold column (Markdown names its shot in each)


def _identity_columns(table: LeaderboardTable, selected: list[str] | None) -> list[tuple[str, int]]:
    """The identity columns shown (name, position in the row key; -1: seeds)."""
    names = [name for name in IDENTITY_COLUMNS if selected is None or name in selected]
    if "seeds" in names and selected is None and table.seeds is not None:
        names.remove("seeds")  # every row has the same seeds: the title names them
    return [(name, IDENTITY_COLUMNS.index(name) if name != "seeds" else -1) for name in names]


def _shot_columns(table: LeaderboardTable, shot: int, selected: list[str] | None) -> list[Column]:
    def wanted(name: str) -> bool:
        return (name in DEFAULT_COLUMNS if selected is None else name in selected)

    columns = []
    if wanted("folds"):
        columns += [Column(f"fold{fold}", lambda cell, fold=fold: cell.fold_values.get(fold), shot=shot, fold=True)
                    for fold in table.folds]
    for metric in display_order(table.metrics):
        if wanted(metric.name) or (selected is None and metric.name not in COLUMNS):
            columns.append(Column(metric.label, lambda cell, name=metric.name: cell.values.get(name), shot=shot))
            if wanted("ci") and table.has_interval(metric):
                columns.append(Column("95% CI", lambda cell, name=metric.name: cell.intervals.get(name), shot=shot))
    if wanted("time"):
        columns.append(Column("s/query" if table.task == "gfss" else "s/episode", lambda cell: cell.s_per_episode,
                              3, shot))
    if wanted("memory"):
        columns.append(Column("peak MB", lambda cell: cell.peak_memory_mb, 0, shot))
    if wanted("cost"):
        columns.append(Column("cost s", lambda cell: cell.cost_s, 0, shot))
    if wanted("runs"):
        columns.append(Column("runs", lambda cell: " ".join(run.run_id for run in cell.runs), shot=shot))
    return columns


def _sorted_rows(table: LeaderboardTable) -> list[tuple[RowKey, dict[int, Cell]]]:
    """Best first by the first shot's headline; rows without one, then random-init rows, last."""
    headline = table.headline

    def key(item):
        (_, _, weights), by_shot = item
        cell = by_shot.get(table.shots[0])
        value = cell.values.get(headline.name) if cell and headline else None
        if value is None or math.isnan(value.mean):
            return (weights.startswith("random-init"), 1, 0.0)
        return (weights.startswith("random-init"), 0, -value.mean if headline.higher_is_better else value.mean)

    return sorted(table.cells.items(), key=key)


@dataclass(frozen=True)
class Style:
    """How a format writes what a cell shows."""

    missing: str
    plus_minus: str
    escape: Callable[[str], str]


MARKDOWN = Style("—", " ± ", lambda text: text.replace("|", "\\|"))


def _show(value: Shown, digits: int, style: Style) -> str:
    if value is None:
        return style.missing
    if isinstance(value, str):
        return style.escape(value)
    if isinstance(value, Stat):
        if math.isnan(value.mean):
            return style.missing
        text = f"{value.mean:.{digits}f}"
        return text if value.std is None else f"{text}{style.plus_minus}{value.std:.{digits}f}"
    low, high = value
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _grid(table: LeaderboardTable, selected: list[str] | None, style: Style) -> tuple[list[str], list[Column],
                                                                                   list[list[str]]]:
    """The identity headers, the shot columns, and the rows' texts."""
    identity = _identity_columns(table, selected)
    columns = [column for shot in table.shots for column in _shot_columns(table, shot, selected)]
    rows = []
    for key, by_shot in _sorted_rows(table):
        texts = [style.escape(row_seeds(by_shot) if position < 0 else key[position]) for _, position in identity]
        for column in columns:
            cell = by_shot.get(column.shot)
            texts.append(_show(column.value(cell) if cell else None, column.digits, style))
        rows.append(texts)
    return [name for name, _ in identity], columns, rows


def row_seeds(by_shot: dict[int, Cell]) -> str:
    """A row's seeds: "0-4", or per shot where its shots differ ("1-shot 0-4; 5-shot 0")."""
    labels = {shot: ranges_label(cell.seeds) for shot, cell in sorted(by_shot.items())}
    if len(set(labels.values())) == 1:
        return next(iter(labels.values()))
    return "; ".join(f"{shot}-shot {label}" for shot, label in labels.items())


def notes(table: LeaderboardTable) -> list[str]:
    """Which runs fill each cell that more than one stored run could fill, and why the others are not shown."""
    lines = []
    for (method, backbone, weights), by_shot in _sorted_rows(table):
        for shot, cell in sorted(by_shot.items()):
            if len(cell.runs) == 1 and not cell.left_out:
                continue
            filled = (f"run {cell.runs[0].run_id}" if len(cell.runs) == 1 else
                      f"{seeds_label(cell.seeds)} from runs " + ", ".join(run.run_id for run in cell.runs))
            line = f"{method} / {backbone} / {weights}, {shot}-shot: {filled}"
            if cell.left_out:
                line += "; not shown: " + ", ".join(f"{run.run_id} ({why})" for run, why in cell.left_out)
            lines.append(line)
    return lines


def _legend(tables: list[LeaderboardTable]) -> str:
    note = ("mIoU and FB-IoU x100 (HSNet class-accumulated); metrics are means over the folds in each title, with a "
            "95% bootstrap interval over episodes; s/episode and peak memory as measured on each run's device (see "
            "its record); cost s: the GPU-seconds (CUDA runs) or CPU-seconds the runs' episode loops used, summed.")
    if any(table.task == "gfss" for table in tables):
        note += (" Generalized FSS (DIaM): fold columns hold each fold's mean of base and novel mIoU; base, novel, "
                 "mean and harmonic are averaged over runs, then folds.")
    if any(table.several_seeds() for table in tables):
        note += (" Several seeds: mean ± sample standard deviation over the seeds; the interval is the pooled 95% "
                 "bootstrap interval of the mean over seeds (every seed's episodes resampled within class).")
    return note


# --- Markdown ---


def _markdown_table(table: LeaderboardTable, selected: list[str] | None) -> str:
    identity, columns, rows = _grid(table, selected, MARKDOWN)
    header, named = list(identity), set()  # each fold column, and the first other column of a shot, name the shot
    for column in columns:
        first = not column.fold and column.shot not in named
        named |= {column.shot} if first else set()
        header.append(f"{column.shot}-shot {column.label}" if column.fold or first else column.label)
    lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    runs = notes(table)
    if runs:
        lines += ["", "Runs behind the cells:", *[f"- {line}" for line in runs]]
    return "\n".join(lines)


def to_markdown(tables: list[LeaderboardTable], columns: list[str] | None = None) -> str:
    if not tables:
        return "No complete runs match.\n"
    return "\n\n".join(_markdown_table(table, columns) for table in tables) + "\n\n" + _legend(tables) + "\n"


# --- LaTeX (booktabs) ---

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(character, character) for character in text).replace("—", "--")


LATEX = Style("--", r" $\pm$ ", latex_escape)


def _latex_table(table: LeaderboardTable, selected: list[str] | None) -> str:
    identity, columns, rows = _grid(table, selected, LATEX)
    spec = "l" * len(identity) + "r" * len(columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(table.title)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    groups, rules, position = [""] * len(identity), [], len(identity) + 1
    for shot in table.shots:
        width = sum(1 for column in columns if column.shot == shot)
        if width:
            groups.append(rf"\multicolumn{{{width}}}{{c}}{{{shot}-shot}}")
            rules.append(rf"\cmidrule(lr){{{position}-{position + width - 1}}}")
            position += width
    lines += [" & ".join(groups) + r" \\", " ".join(rules)]
    lines.append(" & ".join([*(name.capitalize() for name in identity),
                             *(latex_escape(column.label) for column in columns)]) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    lines += [f"% {line}" for line in notes(table)]
    return "\n".join(lines)


def to_latex(tables: list[LeaderboardTable], columns: list[str] | None = None) -> str:
    """One booktabs table per setting (needs \\usepackage{booktabs}); the notes on which runs fill the cells
    follow each table as LaTeX comments."""
    if not tables:
        return "% No complete runs match.\n"
    legend = "% " + _legend(tables)
    return "\n\n".join(_latex_table(table, columns) for table in tables) + "\n\n" + legend + "\n"


# --- CSV ---


def _csv_columns(metric: Metric, headline: bool) -> tuple[str, str, str]:
    """The CSV names of a metric's value and its interval bounds."""
    name = CSV_NAMES.get(metric.name, metric.name)
    return (name, "ci_low", "ci_high") if headline else (name, f"{name}_ci_low", f"{name}_ci_high")


def to_frame(tables: list[LeaderboardTable], columns: list[str] | None = None) -> pd.DataFrame:
    """One row per (table, method row, shot): the CSV layout. Values are means over the seeds; with several
    seeds somewhere, a `<column>_std` column follows each value column."""
    selected = list(columns) if columns is not None else [*DEFAULT_COLUMNS, "runs"]
    declared: list[Metric] = []
    for table in tables:
        declared += [metric for metric in table.metrics if all(metric.name != m.name for m in declared)]
    headlines = {table.headline.name for table in tables if table.headline}
    metrics = [(metric, any(table.has_interval(metric) for table in tables)) for metric in display_order(declared)
               if metric.name in selected or (columns is None and metric.name not in COLUMNS)]
    with_std = any(table.several_seeds() for table in tables)
    folds = sorted({fold for table in tables for fold in table.folds}) if "folds" in selected else []

    value_columns: list[str] = [f"fold{fold}" for fold in folds]
    for metric, with_interval in metrics:
        value, low, high = _csv_columns(metric, metric.name in headlines)
        value_columns += [value, low, high] if with_interval and "ci" in selected else [value]
    ordered = [name for name in ("method", "backbone", "weights", "seeds") if name in selected]
    ordered += ["timing_only", "shot", "resolution"]
    for name in value_columns:
        ordered += [name, f"{name}_std"] if with_std and not name.endswith(("ci_low", "ci_high")) else [name]
    ordered += [name for key, name in (("time", "s_per_episode"), ("memory", "peak_memory_mb"), ("cost", "cost_s"),
                                                ("runs", "run_id"))
                if key in selected]

    rows = []
    for table in tables:
        for (method, backbone, weights), by_shot in table.cells.items():
            for shot, cell in sorted(by_shot.items()):
                row: dict[str, Any] = {"setting": table.title, "method": method, "backbone": backbone,
                                       "weights": weights, "seeds": ranges_label(cell.seeds),
                                       "timing_only": cell.timing_only, "shot": shot,
                                       "resolution": cell.runs[0].evaluation_resolution,
                                       "s_per_episode": cell.s_per_episode.mean if cell.s_per_episode else None,
                                       "peak_memory_mb": cell.peak_memory_mb.mean if cell.peak_memory_mb else None,
                                       "cost_s": cell.cost_s.mean if cell.cost_s else None,
                                       "run_id": " ".join(run.run_id for run in cell.runs)}
                stats = {f"fold{fold}": value for fold, value in cell.fold_values.items()}
                for metric, _ in metrics:
                    value, low, high = _csv_columns(metric, metric.name in headlines)
                    stats[value] = cell.values.get(metric.name)
                    row[low], row[high] = cell.intervals.get(metric.name, (None, None))
                for name, stat in stats.items():
                    row[name] = stat.mean if stat else None
                    row[f"{name}_std"] = stat.std if stat else None
                rows.append(row)
    return pd.DataFrame(rows, columns=["setting", *ordered])


def to_csv(tables: list[LeaderboardTable], columns: list[str] | None = None) -> str:
    buffer = io.StringIO()
    to_frame(tables, columns).to_csv(buffer, index=False, float_format="%.4f")
    return buffer.getvalue()
