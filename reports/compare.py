"""Regression verdicts: is CURRENT worse or slower than BASELINE?

Exit codes: 0 pass, 1 regression, 2 usage error (raised elsewhere), 3 incomparable (a record that does
not check out, reports/integrity.py; different protocol, manifest or evaluation resolution; a run that
is not complete; a missing baseline; no per-unit data for a paired test; no timing verdict possible).
The headline metric is the first one the records declare (mIoU for FSS, the mean of base
and novel for GFSS), and its direction (higher is better, or not) comes from that declaration.
`compare_records` gives a verdict for any two well-formed records: what cannot be compared is
"incomparable" with its reason, never an error.

Timing (`max_slowdown`): the verdict rests on the per-episode compute times of both runs (the timed
episodes, warm-up left out), which the results store keeps and a record file does not: the ratio of
the medians, current / baseline, with its seeded 95% bootstrap interval; a regression when even the
interval's low end is a slowdown beyond the tolerance. No timing verdict (incomparable, with the reason)
when a run's per-episode times are not at hand, when it timed fewer than MIN_TIMED episodes, when its
times are too spread out (IQR / median above `max_spread`), or when its record says the machine was
busy with other work (load average per CPU above `max_load` at the start or, the run's own threads
taken off, at the end), or when the runs were timed on different devices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fssbench.harness.record import FssFoldResult, GfssFoldResult, MetricValue, RunRecord
from fssbench.harness.statistics import (GfssFold, PairedComparison, gfss_paired_comparison, median_ratio_interval,
                                         paired_comparison)
from fssbench.reports.comparable import incomparability
from fssbench.reports.integrity import verify

PASS, REGRESSION, INCOMPARABLE = 0, 1, 3
MIN_TIMED = 10  # timed episodes a run needs for a timing verdict
MAX_SPREAD = 0.25  # default: the largest IQR / median of a run's per-episode compute times that still allows one
MAX_LOAD = 0.5  # default: the largest load average per CPU of other work during a run that still allows one
Timings = Mapping[str, Sequence[float] | str]  # run id -> its timed episodes' compute ms, or why there are none


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
    slowdown_pct: float | None = None  # from the medians of the per-episode compute times
    slowdown_ci95: list[float] | None = None  # its bootstrap 95% interval, in percent

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def incomparable(reason: str, **known: Any) -> Verdict:
    return Verdict(INCOMPARABLE, "incomparable", [reason], **known)


class NotPairable(Exception):
    """Two runs that a paired test cannot pair (the message says why)."""


def compare_records(baseline: RunRecord, current: RunRecord, max_drop: float, max_slowdown: float | None,
                    paired: bool, timings: Timings | None = None, max_spread: float = MAX_SPREAD,
                    max_load: float = MAX_LOAD) -> Verdict:
    """The verdict on `current` against `baseline`; `timings` holds the runs' per-episode compute times
    (a timing verdict needs them)."""
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
        problem = _check_speed(verdict, baseline, current, max_slowdown, timings or {}, max_spread, max_load)
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


def _check_speed(verdict: Verdict, baseline: RunRecord, current: RunRecord, max_slowdown: float, timings: Timings,
                 max_spread: float, max_load: float) -> str | None:
    """Add a regression reason to `verdict` where compute got slower; return why timing cannot tell, if so."""
    for record in (baseline, current):
        if record.timing is None or not record.timing.compute_ms_median:
            return f"run {record.run_id} has no timed episodes to compare"
    base_name, cur_name = baseline.environment.device_name, current.environment.device_name
    if base_name != cur_name:
        return f"timings from different devices: {base_name} vs {cur_name}"
    samples = []
    for record in (baseline, current):
        sample = timings.get(record.run_id)
        problem = _timing_problem(record, sample, max_spread, max_load)
        if problem:
            return f"no timing verdict: {problem}"
        samples.append(sample)
    ratio, (low, high) = median_ratio_interval(*samples)
    verdict.baseline_compute_ms, verdict.current_compute_ms = (float(np.median(sample)) for sample in samples)
    verdict.slowdown_pct = (ratio - 1) * 100
    verdict.slowdown_ci95 = [(low - 1) * 100, (high - 1) * 100]
    if verdict.slowdown_ci95[0] > max_slowdown:
        verdict.reasons.append(
            f"median compute time rose by {verdict.slowdown_pct:.1f}% ({verdict.baseline_compute_ms:.2f} -> "
            f"{verdict.current_compute_ms:.2f} ms/episode); its 95% interval [{verdict.slowdown_ci95[0]:+.1f}%, "
            f"{verdict.slowdown_ci95[1]:+.1f}%] lies above the tolerated {max_slowdown:g}%")
    return None


def _timing_problem(record: RunRecord, sample: Sequence[float] | str | None, max_spread: float,
                    max_load: float) -> str | None:
    """Why `record`'s per-episode compute times (`sample`) cannot back a timing verdict, or None."""
    if sample is None:
        return (f"run {record.run_id}'s per-episode compute times are not at hand (a record file holds only their "
                "summary; the results store of the run's --out folder has them: give --results)")
    if isinstance(sample, str):
        return sample
    if len(sample) < MIN_TIMED:
        return f"run {record.run_id} timed {len(sample)} episodes, fewer than the {MIN_TIMED} a timing verdict needs"
    q25, median, q75 = np.percentile(np.asarray(sample, dtype=np.float64), [25, 50, 75])
    spread = (q75 - q25) / median if median > 0 else math.inf
    if spread > max_spread:
        return (f"run {record.run_id}'s compute times are too spread out to compare (IQR / median {spread:.2f}, "
                f"above {max_spread:g}: a busy or throttling machine, or episodes of very different cost)")
    load = other_load(record)
    if load is not None and load[0] > max_load:
        return (f"the machine was busy during run {record.run_id}: {load[1]}, a load of {load[0]:.2f} per CPU "
                f"besides the run, above {max_load:g}")
    return None


def other_load(record: RunRecord) -> tuple[float, str] | None:
    """The largest load average per CPU of work besides the run, at its start or end, and its description;
    None when the record has no load (written before fssbench recorded it). At the end, the run's own
    threads (torch's on CPU, one on CUDA) are taken off the 1-minute average: an estimate."""
    environment = record.environment
    if not environment.cpu_count:
        return None
    cpus, loads = environment.cpu_count, []
    if environment.load_at_start is not None:
        start = environment.load_at_start.one_minute
        loads.append((start / cpus, f"load average {start:.2f} on {cpus} CPUs at its start"))
    if environment.load_at_end is not None:
        end = environment.load_at_end.one_minute
        own = 1 if environment.device.startswith("cuda") else min(environment.torch_threads, cpus)
        loads.append((max(end - own, 0.0) / cpus,
                      f"load average {end:.2f} on {cpus} CPUs at its end, {own} of it the run's own threads"))
    return max(loads, key=lambda load: load[0]) if loads else None


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
            from fssbench.harness.fss import fold_statistics  # fss.py imports torch: only when pairing

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
        low, high = verdict.slowdown_ci95
        lines.append(f"median compute {verdict.baseline_compute_ms:.2f} -> {verdict.current_compute_ms:.2f} ms "
                     f"({verdict.slowdown_pct:+.1f}%, 95% CI [{low:+.1f}%, {high:+.1f}%])")
    lines += [f"- {reason}" for reason in verdict.reasons]
    return "\n".join(lines)
