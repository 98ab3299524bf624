"""Regression verdicts: is CURRENT worse or slower than BASELINE?

Exit codes: 0 pass, 1 regression, 2 usage error (raised elsewhere), 3 incomparable (different
protocol, manifest or evaluation resolution; a missing baseline; timings from different devices).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fssbench.harness.statistics import paired_comparison

PASS, REGRESSION, INCOMPARABLE = 0, 1, 3


@dataclass
class Verdict:
    exit_code: int
    verdict: str
    reasons: list[str] = field(default_factory=list)
    baseline: str | None = None
    current: str | None = None
    baseline_miou: float | None = None
    current_miou: float | None = None
    difference: float | None = None
    paired: dict[str, Any] | None = None
    baseline_compute_ms: float | None = None
    current_compute_ms: float | None = None
    slowdown_pct: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def incomparable(reason: str, **known: Any) -> Verdict:
    return Verdict(INCOMPARABLE, "incomparable", [reason], **known)


def _folds(record: dict[str, Any]):
    return [(tuple(int(c) for c in r["per_class_iou"]), r["episode_scores"]) for r in record["results"]]


def compare_records(baseline: dict[str, Any], current: dict[str, Any], max_drop: float,
                    max_slowdown: float | None, paired: bool) -> Verdict:
    ids = {"baseline": baseline["run_id"], "current": current["run_id"]}
    for side, record in (("baseline", baseline), ("current", current)):
        if record["status"] != "complete":
            return incomparable(f"the {side} run is {record['status']}, not complete", **ids)
    if baseline["protocol_sha256"] != current["protocol_sha256"]:
        return incomparable(f"different protocols: {baseline['protocol']} ({baseline['protocol_sha256'][:12]}) vs "
                            f"{current['protocol']} ({current['protocol_sha256'][:12]})", **ids)
    if baseline["evaluation_resolution"] != current["evaluation_resolution"]:
        return incomparable(f"different evaluation resolutions: {baseline['evaluation_resolution']} vs "
                            f"{current['evaluation_resolution']}", **ids)
    base_manifests = {r["fold"]: r["manifest_sha256"] for r in baseline["results"]}
    cur_manifests = {r["fold"]: r["manifest_sha256"] for r in current["results"]}
    if base_manifests != cur_manifests:
        return incomparable("different episode manifests (folds, seed or episode cap differ)", **ids)

    verdict = Verdict(PASS, "pass", **ids)
    timing_only = baseline["timing_only"] or current["timing_only"]
    if timing_only and max_slowdown is None:
        return incomparable("a random-init run has no accuracy to compare; give --max-slowdown to compare timing",
                            **ids)
    if not timing_only:
        _check_accuracy(verdict, baseline, current, max_drop, paired)
    if max_slowdown is not None:
        base_env, cur_env = baseline["environment"], current["environment"]
        if base_env["device_name"] != cur_env["device_name"]:
            return incomparable(f"timings from different devices: {base_env['device_name']} vs "
                                f"{cur_env['device_name']}", **ids)
        _check_speed(verdict, baseline, current, max_slowdown)
    if verdict.reasons:
        verdict.exit_code, verdict.verdict = REGRESSION, "regression"
    return verdict


def _check_accuracy(verdict: Verdict, baseline, current, max_drop: float, paired: bool) -> None:
    verdict.baseline_miou, verdict.current_miou = baseline["mean_miou"], current["mean_miou"]
    verdict.difference = current["mean_miou"] - baseline["mean_miou"]
    if paired:
        result = paired_comparison(_folds(baseline), _folds(current))
        verdict.paired = {"difference": result.difference, "ci95": list(result.interval), "p_value": result.p_value}
        if result.interval[1] < -max_drop:
            verdict.reasons.append(f"mIoU dropped by {-result.difference:.2f}: the paired 95% interval "
                                   f"[{result.interval[0]:.2f}, {result.interval[1]:.2f}] lies below -{max_drop:g} "
                                   f"(permutation p = {result.p_value:.4f})")
    elif verdict.difference < -max_drop:
        verdict.reasons.append(f"mIoU dropped by {-verdict.difference:.2f} (from {baseline['mean_miou']:.2f} to "
                               f"{current['mean_miou']:.2f}), more than the tolerated {max_drop:g}")


def _check_speed(verdict: Verdict, baseline, current, max_slowdown: float) -> None:
    base_ms = baseline["timing"]["compute_ms_median"]
    cur_ms = current["timing"]["compute_ms_median"]
    verdict.baseline_compute_ms, verdict.current_compute_ms = base_ms, cur_ms
    verdict.slowdown_pct = (cur_ms / base_ms - 1) * 100
    if verdict.slowdown_pct > max_slowdown:
        verdict.reasons.append(f"median compute time rose by {verdict.slowdown_pct:.1f}% ({base_ms:.2f} -> "
                               f"{cur_ms:.2f} ms/episode), more than the tolerated {max_slowdown:g}%")


def describe(verdict: Verdict) -> str:
    lines = [f"verdict: {verdict.verdict.upper()} (exit {verdict.exit_code})",
             f"baseline {verdict.baseline}  current {verdict.current}"]
    if verdict.difference is not None:
        lines.append(f"mIoU {verdict.baseline_miou:.2f} -> {verdict.current_miou:.2f} ({verdict.difference:+.2f})")
    if verdict.paired:
        low, high = verdict.paired["ci95"]
        lines.append(f"paired: difference 95% CI [{low:+.2f}, {high:+.2f}], permutation p = {verdict.paired['p_value']:.4f}")
    if verdict.slowdown_pct is not None:
        lines.append(f"median compute {verdict.baseline_compute_ms:.2f} -> {verdict.current_compute_ms:.2f} ms "
                     f"({verdict.slowdown_pct:+.1f}%)")
    lines += [f"- {reason}" for reason in verdict.reasons]
    return "\n".join(lines)
