"""Backbone upgrade tables (DiffUp's Table 5, for any method that takes a backbone): one method with the
same options and the same non-backbone weights (e.g. DiffUp's trained decoder), evaluated with several
backbones on the same episodes.

Pure functions of finished run records, the first backbone being the reference: per fold and for the
mean over folds, each backbone's headline metric (mIoU; GFSS: the mean of base and novel), its delta
against the reference with the paired-bootstrap 95% interval of that delta (reports/compare.py), and
the run's s/episode and peak memory. Markdown has one table per fold and one for the mean; CSV one
row per (fold, backbone). Records that do not check out (reports/integrity.py), runs that are not
comparable (reports/comparable.py), timing-only runs and runs whose non-backbone weights differ are
refused with a UsageError that names the difference.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from fssbench.harness.errors import UsageError
from fssbench.harness.record import RunRecord
from fssbench.reports.comparable import incomparability
from fssbench.reports.compare import NotPairable, headline, paired_difference
from fssbench.reports.integrity import verify
from fssbench.reports.leaderboard import digests_label, method_label

MEAN = "mean"


@dataclass(frozen=True)
class UpgradeRow:
    fold: str  # the fold number, or "mean"
    backbone: str
    value: float  # the headline metric
    delta: float | None  # value - the reference backbone's; None on the reference's own row
    interval: tuple[float, float] | None  # paired-bootstrap 95% interval of the delta
    s_per_episode: float | None
    peak_memory_mb: float | None
    run_id: str


def fixed_weights(record: RunRecord) -> dict[str, str]:
    """The run's weights other than its backbone's (recorded under the backbone's name or `backbone`)."""
    if record.weights == "random-init":
        return {}
    return {name: digest for name, digest in record.weights.items() if name not in (record.backbone, "backbone")}


def check_upgrade_runs(records: list[RunRecord]) -> None:
    """Refuse runs that do not make an upgrade table, naming the difference."""
    if len(records) < 2:
        raise UsageError("an upgrade table needs runs with at least two backbones")
    reference = records[0]
    backbones = [record.backbone for record in records]
    for record in records:
        problem = verify(record)
        if problem:
            raise UsageError(problem)
        if record.timing_only:
            raise UsageError(f"run {record.run_id} is timing-only (random weights): its scores say nothing about "
                             "an upgrade")
        if record.backbone is None:
            raise UsageError(f"run {record.run_id} ({record.method}) records no backbone")
        if backbones.count(record.backbone) > 1:
            raise UsageError(f"backbone {record.backbone} appears more than once")
    for record in records[1:]:
        problem = incomparability(reference, record)
        if problem:
            raise UsageError(f"runs {reference.run_id} and {record.run_id} are not comparable: {problem.reason}; "
                             "an upgrade table compares backbones on the same episodes")
        for what, ours, theirs in (("method", method_label(reference), method_label(record)),
                                   ("options", reference.options, record.options)):
            if ours != theirs:
                raise UsageError(f"runs {reference.run_id} and {record.run_id} differ in {what} "
                                 f"({ours!r} vs {theirs!r}); an upgrade table changes the backbone only")
        if fixed_weights(reference) != fixed_weights(record):
            raise UsageError(f"runs {reference.run_id} and {record.run_id} use different non-backbone weights "
                             f"({_weights(fixed_weights(reference))} vs {_weights(fixed_weights(record))}); an "
                             "upgrade keeps them fixed (e.g. one trained decoder)")
    for record in records:
        problem = headline(record)
        if isinstance(problem, str):
            raise UsageError(problem)


def upgrade_rows(records: list[RunRecord]) -> list[UpgradeRow]:
    """Rows per fold (in the reference's order), then for the mean over folds; the reference first in each."""
    check_upgrade_runs(records)
    reference = records[0]
    name = reference.primary.name
    rows = []
    for fold in [*(result.fold for result in reference.results), MEAN]:
        values = [_value(record, fold, name) for record in records]
        for record, value in zip(records, values):
            interval = None if record is reference else _interval(reference, record, fold)
            timing = record.timing
            rows.append(UpgradeRow(str(fold), record.backbone, value,
                                   None if record is reference else value - values[0], interval,
                                   timing.s_per_episode if timing else None,
                                   timing.peak_memory_mb if timing else None, record.run_id))
    return rows


def _value(record: RunRecord, fold: int | str, name: str) -> float:
    if fold == MEAN:
        return record.primary.value
    return next(result.metrics[name] for result in record.results if result.fold == fold)


def _interval(reference: RunRecord, record: RunRecord, fold: int | str) -> tuple[float, float]:
    try:
        return paired_difference(reference, record, None if fold == MEAN else [fold]).interval
    except NotPairable as exc:
        raise UsageError(f"no paired interval for runs {reference.run_id} and {record.run_id}: {exc}") from None


def upgrade_markdown(records: list[RunRecord]) -> str:
    rows = upgrade_rows(records)
    reference, metric = records[0], records[0].primary
    unit = "s/query" if reference.task == "gfss" else "s/episode"
    fixed = _weights(fixed_weights(reference))
    lines = [f"## Backbone upgrade: {method_label(reference)} on {reference.protocol}", "",
             f"Fixed weights: {fixed}. {metric.label} x100; delta against {reference.backbone} with its paired-"
             f"bootstrap 95% interval; {unit} and peak memory of each whole run."]
    header = ("backbone", metric.label, "delta", "95% CI", unit, "peak MB")
    for fold in dict.fromkeys(row.fold for row in rows):
        lines += ["", f"### {'mean over folds' if fold == MEAN else f'fold {fold}'}", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in (row for row in rows if row.fold == fold):
            interval = f"[{row.interval[0]:+.1f}, {row.interval[1]:+.1f}]" if row.interval else "—"
            cells = (row.backbone, f"{row.value:.1f}", "—" if row.delta is None else f"{row.delta:+.1f}", interval,
                     _number(row.s_per_episode, 3), _number(row.peak_memory_mb, 0))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def upgrade_csv(records: list[RunRecord]) -> str:
    rows = upgrade_rows(records)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["fold", "backbone", records[0].primary.name, "delta", "delta_ci_low", "delta_ci_high",
                     "s_per_episode", "peak_memory_mb", "run_id"])
    for row in rows:
        low, high = row.interval or (None, None)
        writer.writerow([row.fold, row.backbone, *(_number(value, 4, "") for value in
                                                   (row.value, row.delta, low, high, row.s_per_episode,
                                                    row.peak_memory_mb)), row.run_id])
    return buffer.getvalue()


def _number(value: float | None, digits: int, missing: str = "—") -> str:
    return missing if value is None else f"{value:.{digits}f}"


def _weights(weights: dict[str, str]) -> str:
    return digests_label(weights) if weights else "none besides the backbones'"
