"""Regression verdicts: is CURRENT worse or slower than BASELINE?

Exit codes: 0 pass, 1 regression, 2 usage error (raised elsewhere), 3 incomparable (a record that does
not check out, reports/integrity.py; different protocol, manifest or evaluation resolution; a run that
is not complete; a missing baseline; no per-unit data for a paired test; timings from different
devices). The headline metric is the first one the records declare (mIoU for FSS, the mean of base
and novel for GFSS), and its direction (higher is better, or not) comes from that declaration.
`compare_records` gives a verdict for any two well-formed records: what cannot be compared is
"incomparable" with its reason, never an error.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from fssbench.harness.fss import fold_statistics
from fssbench.harness.record import FssFoldResult, GfssFoldResult, MetricValue, RunRecord
from fssbench.harness.statistics import GfssFold, PairedComparison, gfss_paired_comparison, paired_comparison
from fssbench.reports.comparable import incomparability
from fssbench.reports.integrity import verify

PASS, REGRESSION, INCOMPARABLE = 0, 1, 3


@dataclass
class Verdict:
    exit_code: int
    verdict: str
    reasons: list[str] = field(default_factory=list)
    baseline: str | None = None
    current: str | None = None
    metric: str | None = None  # the headline metric's label
    baseline_value: float | None = None
    current_value: float | None = None
    difference: float | None = None  # current - baseline
    paired: dict[str, Any] | None = None
    baseline_compute_ms: float | None = None
    current_compute_ms: float | None = None
    slowdown_pct: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def incomparable(reason: str, **known: Any) -> Verdict:
    return Verdict(INCOMPARABLE, "incomparable", [reason], **known)


class NotPairable(Exception):
    """Two runs that a paired test cannot pair (the message says why)."""


def compare_records(baseline: RunRecord, current: RunRecord, max_drop: float, max_slowdown: float | None,
                    paired: bool) -> Verdict:
    ids = {"baseline": baseline.run_id, "current": current.run_id}
    problem = verify(baseline) or verify(current)
    if problem is not None:
        return incomparable(problem, **ids)
    difference = incomparability(baseline, current)
    if difference is not None:
        return incomparable(difference.reason, **ids)
    verdict = Verdict(PASS, "pass", **ids)
    timing_only = baseline.timing_only or current.timing_only
    if timing_only and max_slowdown is None:
        return incomparable("a random-init run has no accuracy to compare; give --max-slowdown to compare timing",
                            **ids)
    if not timing_only:
        problem = _check_accuracy(verdict, baseline, current, max_drop, paired)
        if problem:
            return incomparable(problem, **ids)
    if max_slowdown is not None:
        problem = _check_speed(verdict, baseline, current, max_slowdown)
        if problem:
            return incomparable(problem, **ids)
    if verdict.reasons:
        verdict.exit_code, verdict.verdict = REGRESSION, "regression"
    return verdict


def headline(record: RunRecord) -> MetricValue | str:
    """The record's headline metric, or why it has none to compare."""
    primary = record.primary
    if primary is None or primary.value is None:
        return f"run {record.run_id} records no value of its headline metric"
    if math.isnan(primary.value):
        return f"run {record.run_id}'s {primary.label} is undefined (nan: a class group without a scored class)"
    return primary


def _check_accuracy(verdict: Verdict, baseline: RunRecord, current: RunRecord, max_drop: float,
                    paired: bool) -> str | None:
    """Add a regression reason to `verdict` where accuracy dropped; return why it cannot tell, if so."""
    base, cur = headline(baseline), headline(current)
    for problem in (base, cur):
        if isinstance(problem, str):
            return problem
    if (base.name, base.higher_is_better) != (cur.name, cur.higher_is_better):
        return f"different headline metrics: {base.label} vs {cur.label}"
    verdict.metric, verdict.baseline_value, verdict.current_value = base.label, base.value, cur.value
    verdict.difference = cur.value - base.value
    sign = 1 if base.higher_is_better else -1  # sign * difference > 0: better
    worse, beyond = ("dropped", "below") if base.higher_is_better else ("rose", "above")
    if paired:
        try:
            result = paired_difference(baseline, current)
        except NotPairable as exc:
            return f"no paired comparison: {exc}"
        verdict.paired = {"difference": result.difference, "ci95": list(result.interval), "p_value": result.p_value}
        best_case = result.interval[1] if base.higher_is_better else result.interval[0]
        if sign * best_case < -max_drop:
            verdict.reasons.append(f"{base.label} {worse} by {abs(result.difference):.2f}: the paired 95% interval "
                                   f"[{result.interval[0]:.2f}, {result.interval[1]:.2f}] lies {beyond} "
                                   f"{-sign * max_drop:g} (permutation p = {result.p_value:.4f})")
    elif sign * verdict.difference < -max_drop:
        verdict.reasons.append(f"{base.label} {worse} by {abs(verdict.difference):.2f} (from {base.value:.2f} to "
                               f"{cur.value:.2f}), more than the tolerated {max_drop:g}")
    return None


def _check_speed(verdict: Verdict, baseline: RunRecord, current: RunRecord, max_slowdown: float) -> str | None:
    for record in (baseline, current):
        if record.timing is None or not record.timing.compute_ms_median:
            return f"run {record.run_id} has no timed episodes to compare"
    base_name, cur_name = baseline.environment.device_name, current.environment.device_name
    if base_name != cur_name:
        return f"timings from different devices: {base_name} vs {cur_name}"
    base_ms, cur_ms = baseline.timing.compute_ms_median, current.timing.compute_ms_median
    verdict.baseline_compute_ms, verdict.current_compute_ms = base_ms, cur_ms
    verdict.slowdown_pct = (cur_ms / base_ms - 1) * 100
    if verdict.slowdown_pct > max_slowdown:
        verdict.reasons.append(f"median compute time rose by {verdict.slowdown_pct:.1f}% ({base_ms:.2f} -> "
                               f"{cur_ms:.2f} ms/episode), more than the tolerated {max_slowdown:g}%")
    return None


def paired_difference(baseline: RunRecord, current: RunRecord, folds: list[int] | None = None) -> PairedComparison:
    """Paired bootstrap 95% interval and permutation p-value of current - baseline in the headline metric,
    over `folds` (default: all). FSS pairs episodes; GFSS pairs (run, query index). The runs must be
    comparable (same manifests); raises NotPairable when they lack the per-unit data or do not pair."""
    folds = sorted(baseline.manifests()) if folds is None else folds
    if not folds:
        raise NotPairable("the runs record no folds")
    pairs = [(_fold(baseline, fold), _fold(current, fold)) for fold in folds]
    try:
        if all(isinstance(result, FssFoldResult) for pair in pairs for result in pair):
            for pair in pairs:
                for record, result in zip((baseline, current), pair):
                    _require_units(record, result, len(result.episode_scores), "per-episode scores")
            return paired_comparison([fold_statistics(b) for b, _ in pairs], [fold_statistics(c) for _, c in pairs])
        if all(isinstance(result, GfssFoldResult) for pair in pairs for result in pair):
            for pair in pairs:
                for record, result in zip((baseline, current), pair):
                    _require_units(record, result, len(result.query_confusions), "per-query confusions")
            groups = [gfss_label_groups(b, c) for b, c in pairs]
            return gfss_paired_comparison([_gfss_fold(b, group) for (b, _), group in zip(pairs, groups)],
                                          [_gfss_fold(c, group) for (_, c), group in zip(pairs, groups)])
    except ValueError as exc:  # the statistics' own refusals: different units, label spaces
        raise NotPairable(str(exc)) from None
    raise NotPairable("the runs are of different tasks")


def _fold(record: RunRecord, fold: int) -> FssFoldResult | GfssFoldResult:
    result = next((result for result in record.results if result.fold == fold), None)
    if result is None:
        raise NotPairable(f"run {record.run_id} has no fold {fold}")
    return result


def _require_units(record: RunRecord, result: FssFoldResult | GfssFoldResult, units: int, what: str) -> None:
    if units == 0 or units != result.episodes:
        raise NotPairable(f"run {record.run_id} records {units} {what} for the {result.episodes} units of fold "
                          f"{result.fold} (a record converted from an older fssbench?); re-run it to compare paired")


def _gfss_fold(result: GfssFoldResult, groups: tuple[tuple[int, ...], tuple[int, ...]]) -> GfssFold:
    return GfssFold(len(result.label_names), *groups, result.query_confusions)


def gfss_label_groups(*results: GfssFoldResult) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The base and novel label indices of a GFSS fold (label 0 is background, then base, then novel),
    which every result given must share."""
    first = results[0]
    if any((result.label_names, result.base_classes) != (first.label_names, first.base_classes) for result in results):
        raise NotPairable(f"fold {first.fold} has different label spaces in the two runs")
    if first.base_classes is None:
        raise NotPairable(f"fold {first.fold}'s record does not say which classes are base (a record converted from "
                          "an older fssbench?); re-run it to compare paired")
    return tuple(range(1, first.base_classes + 1)), tuple(range(first.base_classes + 1, len(first.label_names)))


def describe(verdict: Verdict) -> str:
    lines = [f"verdict: {verdict.verdict.upper()} (exit {verdict.exit_code})",
             f"baseline {verdict.baseline}  current {verdict.current}"]
    if verdict.difference is not None:
        lines.append(f"{verdict.metric} {verdict.baseline_value:.2f} -> {verdict.current_value:.2f} "
                     f"({verdict.difference:+.2f})")
    if verdict.paired:
        low, high = verdict.paired["ci95"]
        lines.append(f"paired: difference 95% CI [{low:+.2f}, {high:+.2f}], permutation p = {verdict.paired['p_value']:.4f}")
    if verdict.slowdown_pct is not None:
        lines.append(f"median compute {verdict.baseline_compute_ms:.2f} -> {verdict.current_compute_ms:.2f} ms "
                     f"({verdict.slowdown_pct:+.1f}%)")
    lines += [f"- {reason}" for reason in verdict.reasons]
    return "\n".join(lines)
