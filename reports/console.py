"""A run record as a rich table for the terminal: a row per fold and the mean, a column per metric the
run's task declares (FSS: mIoU with its 95% interval, FB-IoU; GFSS: base, novel, mean, harmonic).
Rich reads square brackets as markup: every text that comes from the record (method and option labels,
protocol, metric labels, ids) is escaped, so `colorproto [config=tiny]` shows as written."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from fssbench.harness.record import FssFoldResult, GfssFoldResult, MetricValue, RunRecord
from fssbench.reports.leaderboard import COMPONENTS_FIRST, method_label


def _fmt(value: float | None, digits: int = 1) -> str:
    return "--" if value is None else f"{value:.{digits}f}"


def _interval(bounds: tuple[float, float] | None) -> str:
    return "--" if not bounds else f"[{bounds[0]:.1f}, {bounds[1]:.1f}]"


def run_summary(record: RunRecord) -> Table:
    backbone = f" ({record.backbone})" if record.backbone else ""
    title = f"{method_label(record)}{backbone} on {record.protocol} ({record.evaluation_resolution}, seed {record.seed})"
    if record.timing_only:
        title += "  [timing only: random-init weights]"
    table = Table(title=escape(title))
    metrics = _shown(record.metrics)
    gfss = record.task == "gfss"
    columns = ["fold"]
    for metric in metrics:
        columns += [escape(metric.label)] + (["95% CI"] if metric.ci95 is not None else [])
    columns += ["runs", "queries"] if gfss else ["episodes"]
    for column in [*columns, "manifest"]:
        table.add_column(column, justify="right")
    for result in record.results:
        scores = []
        for metric in metrics:
            # scores of random weights mean nothing: never show them
            scores.append("--" if record.timing_only else _fmt(result.metrics.get(metric.name)))
            if metric.ci95 is not None:
                scores.append("--" if record.timing_only else _interval(_fold_interval(result, metric, record)))
        counts = [str(len(result.runs))] if isinstance(result, GfssFoldResult) else []
        table.add_row(str(result.fold), *scores, *counts, str(result.episodes), result.manifest_sha256[:12])
    if not record.timing_only and record.results:
        means = []
        for metric in metrics:
            means += [_fmt(metric.value)] + ([_interval(metric.ci95)] if metric.ci95 is not None else [])
        table.add_row("mean", *means, *[""] * (len(columns) - 1 - len(means)), "", style="bold")
    table.caption = escape(_timing_caption(record))
    return table


def _shown(metrics: list[MetricValue]) -> list[MetricValue]:
    first = [metric for metric in metrics if metric.name in COMPONENTS_FIRST]
    return first + [metric for metric in metrics if metric not in first]


def _fold_interval(result: FssFoldResult | GfssFoldResult, metric: MetricValue,
                   record: RunRecord) -> tuple[float, float] | None:
    """A fold's interval of the headline metric, where the task records one (FSS)."""
    if isinstance(result, FssFoldResult) and record.primary is not None and metric.name == record.primary.name:
        return result.miou_ci95
    return None


def _timing_caption(record: RunRecord) -> str:
    timing = record.timing
    setup = f"set-up {_fmt(record.setup_s)} s"
    if timing is None:
        return f"no timing recorded; {setup}"
    return (f"compute median {_fmt(timing.compute_ms_median)} ms/episode, {_fmt(timing.episodes_per_s, 2)} "
            f"episodes/s, peak memory {_fmt(timing.peak_memory_mb, 0)} MB ({timing.memory.kind}), "
            f"{timing.warmup_episodes} warm-up episodes excluded; {setup}")
