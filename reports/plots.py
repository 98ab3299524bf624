"""Figures from run records, drawn off-screen with matplotlib (no display needed), as PNG and SVG.

- `tradeoff`: the headline metric (mean over folds, 95% bootstrap interval) against s/episode on a log
  axis, a marker per method/backbone, a panel per leaderboard setting and shot (the leaderboard's own
  tables, so a panel only holds comparable runs and the newest run of each row).
- `classes`: one run's per-class IoU, a panel per fold, bars sorted best first.
- `upgrade`: the deltas of reports/upgrade.py's table with their paired 95% intervals, per fold and mean.
- `seeds`: the spread of the headline metric over runs that differ only by their seed.

Every record is verified (reports/integrity.py) before anything is drawn. Each function returns a
`Plot`: the figure and the values it drew, one item per mark, which tests compare with the records.
Okabe-Ito colours (safe for colour-blind readers) paired with distinct markers or hatches (so the
figures survive greyscale printing); sizes and fonts fit one column of a two-column paper.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fssbench.harness.errors import UsageError
from fssbench.harness.extras import require
from fssbench.harness.record import FssFoldResult, RunRecord
from fssbench.reports.integrity import verify
from fssbench.reports.leaderboard import build_tables, method_label, weights_label
from fssbench.reports.upgrade import MEAN, upgrade_rows

OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
HATCHES = ("//", "\\\\", "xx", "..", "--", "++", "oo", "**")
COLUMN_WIDTH = 3.4  # inches: one column of a two-column paper
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
         "legend.fontsize": 7, "lines.markersize": 5, "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5,
         "svg.fonttype": "none", "svg.hashsalt": "fssbench", "hatch.linewidth": 0.6}
DPI = 200
JPEG_QUALITY = 88  # photographs (episode grids) in the HTML report


@dataclass
class Plot:
    figure: Any  # a matplotlib Figure
    data: list  # what was drawn: one item per mark

    def save(self, stem: Path) -> list[Path]:
        """Write `<stem>.png` and `<stem>.svg`; returns their paths."""
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        paths = [stem.with_name(f"{stem.name}.{suffix}") for suffix in ("png", "svg")]
        for path in paths:
            path.write_bytes(self.encode(path.suffix[1:]))
        return paths

    def encode(self, format: str = "png", dpi: int = DPI) -> bytes:
        matplotlib = require("matplotlib", "plots", "report")
        buffer = io.BytesIO()
        # the same figure, the same bytes: no dates or versions written into the file
        options = ({"metadata": {"Date": None}} if format == "svg" else {"metadata": {"Software": None}}
                   if format == "png" else {"pil_kwargs": {"quality": JPEG_QUALITY}})
        with matplotlib.rc_context(STYLE):
            self.figure.savefig(buffer, format=format, dpi=dpi, **options)
        return buffer.getvalue()


def blank_figure(width: float, height: float):
    """A matplotlib figure that is not registered with pyplot: nothing global, nothing shown."""
    require("matplotlib", "plots", "report")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def new_figure(height: float, rows: int = 1, width: float = COLUMN_WIDTH):
    """A figure and its `rows` axes, one above the other."""
    figure = blank_figure(width, height)
    return figure, figure.subplots(rows, 1, squeeze=False)[:, 0]


def style(position: int) -> dict[str, str]:
    """The colour and marker of the position-th series (colours repeat every 8, shifted against markers)."""
    return {"color": OKABE_ITO[position % len(OKABE_ITO)],
            "marker": MARKERS[(position + position // len(OKABE_ITO)) % len(MARKERS)]}


def _verified(records: list[RunRecord]) -> list[RunRecord]:
    for record in records:
        problem = verify(record)
        if problem:
            raise UsageError(f"{problem}; a plot shows no record that does not check out")
    return records


def _scored(record: RunRecord) -> bool:
    return (record.status == "complete" and not record.timing_only and record.primary is not None
            and record.primary.value is not None)


@dataclass(frozen=True)
class TradeoffPoint:
    panel: str
    label: str
    run_ids: tuple[str, ...]  # the runs of the leaderboard cell (one per seed)
    s_per_episode: float
    value: float
    ci95: tuple[float, float] | None


def tradeoff(records: list[RunRecord], protocols: list[str] | None = None) -> Plot:
    """Headline metric vs s/episode, a panel per leaderboard table and shot, a point per leaderboard cell
    (the same values as the leaderboard: with several seeds, their mean and the pooled interval)."""
    panels: dict[str, list[tuple[str, Any]]] = {}
    metric_labels: dict[str, tuple[str, str]] = {}
    for table in build_tables(records, protocols):  # verifies every record
        headline = table.headline
        for shot in table.shots:
            cells = [(key, by_shot[shot]) for key, by_shot in table.cells.items()
                     if shot in by_shot and headline and headline.name in by_shot[shot].values
                     and by_shot[shot].s_per_episode is not None]
            if cells:
                title = f"{table.title}, {shot}-shot"
                panels[title] = _labelled(cells)
                metric_labels[title] = (headline.name, headline.label)
    if not panels:
        raise UsageError("no complete run with both a score and a timing to plot (random-init runs have no score)")
    labels = sorted({label for cells in panels.values() for label, _ in cells})
    figure, axes = new_figure(2.3 * len(panels) + 0.15 * len(labels), len(panels))
    data, handles = [], {}
    for ax, (title, cells) in zip(axes, panels.items()):
        name, label_text = metric_labels[title]
        for label, cell in cells:
            value, interval, seconds = cell.values[name].mean, cell.intervals.get(name), cell.s_per_episode.mean
            errors = [[value - interval[0]], [interval[1] - value]] if interval else None
            handles[label] = ax.errorbar([seconds], [value], yerr=errors, linestyle="none", capsize=2,
                                         elinewidth=0.8, gid=f"point-{cell.runs[0].run_id}", label=label,
                                         **style(labels.index(label)))
            data.append(TradeoffPoint(title, label, tuple(run.run_id for run in cell.runs), seconds, value, interval))
        _log_seconds(ax, [point.s_per_episode for point in data if point.panel == title])
        ax.set_title(title, wrap=True)
        ax.set_xlabel(f"{'s/query' if cells[0][1].runs[0].task == 'gfss' else 's/episode'} (log scale)")
        ax.set_ylabel(f"{label_text} (x100)")
    figure.legend([handles[label] for label in labels], labels, loc="outside lower center", ncols=2, frameon=False)
    return Plot(figure, data)


def _log_seconds(ax, seconds: list[float]) -> None:
    """A log x axis labelled in plain numbers (0.05, 1); over less than ~1.5 decades 2x and 5x ticks too."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.set_xlim(min(seconds) / 1.6, max(seconds) * 1.6)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    narrow = max(seconds) / min(seconds) < 20
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "25" else "")
                                 if narrow else NullFormatter())


def _labelled(cells: list[tuple[tuple[str, str, str], Any]]) -> list[tuple[str, Any]]:
    """"method / backbone" per leaderboard row; rows of one panel that share it get their weights added."""
    labels = [method if backbone == "-" else f"{method} / {backbone}" for (method, backbone, _), _ in cells]
    return [(f"{label} ({key[2]})" if labels.count(label) > 1 else label, cell)
            for label, (key, cell) in zip(labels, cells)]


@dataclass(frozen=True)
class ClassBar:
    fold: int
    class_id: int
    name: str
    iou: float
    episodes: int  # episodes of the class the run scored (0: its IoU is 0 by HSNet's max(U, 1))


def classes(record: RunRecord) -> Plot:
    """Per-class IoU of one FSS run, a panel per fold, best class first."""
    _verified([record])
    if record.timing_only or not record.results or not all(isinstance(r, FssFoldResult) for r in record.results):
        raise UsageError(f"run {record.run_id}: per-class IoU bars need a scored FSS run "
                         f"(this one is {'timing-only' if record.timing_only else record.task})")
    folds = []
    for result in record.results:
        counts = {class_id: 0 for class_id in result.per_class_iou}
        for row in result.episode_scores:
            counts[row[1]] += 1
        bars = [ClassBar(result.fold, class_id, result.class_names.get(class_id, str(class_id)), iou, counts[class_id])
                for class_id, iou in result.per_class_iou.items()]
        folds.append(sorted(bars, key=lambda bar: (-bar.iou, bar.class_id)))
    figure, axes = new_figure(sum(0.7 + 0.2 * len(bars) for bars in folds) + 0.3, len(folds))
    figure.suptitle(f"{method_label(record)} ({record.backbone or '-'}) on {record.protocol}")
    for ax, bars in zip(axes, folds):
        positions = range(len(bars))[::-1]  # best at the top
        drawn = ax.barh(list(positions), [bar.iou for bar in bars], color=OKABE_ITO[0], edgecolor="black",
                        linewidth=0.5, height=0.7)
        for patch, bar in zip(drawn, bars):
            patch.set_gid(f"class-{bar.fold}-{bar.class_id}")
            if bar.episodes == 0:
                patch.set(facecolor="white", hatch=HATCHES[0])
        ax.set_yticks(list(positions), [bar.name if bar.episodes else f"{bar.name} (no episodes)" for bar in bars])
        ax.set_xlim(0, 100)
        ax.grid(axis="y", visible=False)
        ax.set_title(f"fold {bars[0].fold}: mIoU {_fold_miou(record, bars[0].fold):.1f}")
    axes[-1].set_xlabel("IoU (x100)")
    return Plot(figure, [bar for bars in folds for bar in bars])


def _fold_miou(record: RunRecord, fold: int) -> float:
    return next(result.metrics["miou"] for result in record.results if result.fold == fold)


def upgrade(records: list[RunRecord]) -> Plot:
    """The upgrade table's deltas against the first run's backbone, with their paired 95% intervals."""
    rows = [row for row in upgrade_rows(records) if row.delta is not None]  # verifies the records
    folds = list(dict.fromkeys(row.fold for row in rows))
    backbones = list(dict.fromkeys(row.backbone for row in rows))
    reference = records[0]
    figure, (ax,) = new_figure(2.4)
    width = 0.8 / len(backbones)
    for position, backbone in enumerate(backbones):
        ours = [row for row in rows if row.backbone == backbone]
        x = [folds.index(row.fold) + (position - (len(backbones) - 1) / 2) * width for row in ours]
        errors = [[row.delta - row.interval[0] for row in ours], [row.interval[1] - row.delta for row in ours]]
        bars = ax.bar(x, [row.delta for row in ours], width, yerr=errors, capsize=2,
                      color=OKABE_ITO[(position + 1) % len(OKABE_ITO)], hatch=HATCHES[position % len(HATCHES)],
                      edgecolor="black", linewidth=0.5, error_kw={"elinewidth": 0.8}, label=backbone)
        for patch, row in zip(bars, ours):
            patch.set_gid(f"delta-{row.fold}-{row.backbone}")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(folds)), ["mean" if fold == MEAN else f"fold {fold}" for fold in folds])
    ax.grid(axis="x", visible=False)
    ax.set_ylabel(f"{reference.primary.label} delta (x100)")
    ax.set_title(f"{method_label(reference)} on {reference.protocol}: vs {reference.backbone}", wrap=True)
    ax.legend(frameon=False)
    return Plot(figure, rows)


@dataclass(frozen=True)
class SeedGroup:
    panel: str  # the protocol
    label: str  # method / backbone
    seeds: tuple[tuple[int, float, str], ...]  # (seed, headline metric, run id), by seed
    mean: float
    std: float  # sample standard deviation over seeds (ddof 1)


def seed_groups(records: list[RunRecord]) -> list[SeedGroup]:
    """Runs that differ only by their seed (and so their manifests), newest run per seed; groups of two or
    more seeds."""
    import numpy as np

    groups: dict[tuple, dict[int, RunRecord]] = {}
    for record in sorted(_verified(records), key=lambda r: (r.finished_at or "", r.run_id)):
        if _scored(record):
            groups.setdefault(_all_but_seed(record), {})[record.seed] = record
    found = []
    for by_seed in groups.values():
        if len(by_seed) < 2:
            continue
        first = next(iter(by_seed.values()))
        label = method_label(first) + (f" / {first.backbone}" if first.backbone else "")
        values = np.array([by_seed[seed].primary.value for seed in sorted(by_seed)])
        found.append(SeedGroup(first.protocol, label,
                               tuple((seed, by_seed[seed].primary.value, by_seed[seed].run_id) for seed in sorted(by_seed)),
                               float(values.mean()), float(values.std(ddof=1))))
    return sorted(found, key=lambda group: (group.panel, group.label))


def _all_but_seed(record: RunRecord) -> str:
    return json.dumps([record.protocol, record.protocol_sha256, method_label(record), record.backbone,
                       weights_label(record), record.options, record.dataset.name, record.dataset.fingerprint,
                       record.shot, record.folds, record.evaluation_resolution, record.support_annotation,
                       record.episodes_cap], sort_keys=True, default=str)


def seeds(records: list[RunRecord]) -> Plot:
    """Each seed's headline metric and the mean +- one standard deviation, a panel per protocol."""
    groups = seed_groups(records)
    if not groups:
        raise UsageError("no runs that differ only by their seed (`fssbench eval --seed S` with two or more seeds)")
    panels = list(dict.fromkeys(group.panel for group in groups))
    figure, axes = new_figure(2.2 * len(panels), len(panels))
    for ax, panel in zip(axes, panels):
        ours = [group for group in groups if group.panel == panel]
        for position, group in enumerate(ours):
            values = [value for _, value, _ in group.seeds]
            offsets = [position + 0.25 * (i / max(len(values) - 1, 1) - 0.5) for i in range(len(values))]
            ax.plot(offsets, values, linestyle="none", alpha=0.8, gid=f"seeds-{position}", **style(position))
            ax.errorbar([position + 0.3], [group.mean], yerr=[group.std], fmt="_", color="black", capsize=3,
                        markersize=8, elinewidth=0.8)
        ax.set_xticks(range(len(ours)), [group.label for group in ours], rotation=20, ha="right")
        ax.set_xlim(-0.5, len(ours) - 0.3)
        ax.grid(axis="x", visible=False)
        ax.set_title(f"{panel}: each seed; mean ± std", wrap=True)
        first = next(record for record in records if record.run_id == ours[0].seeds[0][2])
        ax.set_ylabel(f"{first.primary.label} (x100)")
    return Plot(figure, groups)
