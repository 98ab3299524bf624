"""When two runs' scores may be compared: the one predicate that `compare`, the upgrade table and the
leaderboard's columns share.

Two runs are comparable when both are complete, ran the same protocol (its sha256: dataset, task,
shot, sampling rules, resolution), were scored at the same evaluation resolution and on the same
episode manifests, fold by fold. A leaderboard column also holds runs of different folds, so there
only the folds both ran must agree (`shared_folds_only`), and runs of different episode seeds, whose
manifests differ by design (the seed draws the episodes): there the manifests must agree only between
runs of the same seed (`across_seeds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fssbench.harness.record import RunRecord

Aspect = Literal["status", "protocol", "evaluation resolution", "manifests"]


@dataclass(frozen=True)
class Incomparability:
    aspect: Aspect
    reason: str


def incomparability(a: RunRecord, b: RunRecord, shared_folds_only: bool = False,
                    across_seeds: bool = False) -> Incomparability | None:
    """Why runs `a` and `b` cannot be compared, or None when they can."""
    for record in (a, b):
        if record.status != "complete":
            return Incomparability("status", f"run {record.run_id} is {record.status}, not complete")
    if a.protocol_sha256 != b.protocol_sha256:
        return Incomparability("protocol", f"different protocols: {a.protocol} ({a.protocol_sha256[:12]}) vs "
                                           f"{b.protocol} ({b.protocol_sha256[:12]})")
    if a.evaluation_resolution != b.evaluation_resolution:
        return Incomparability("evaluation resolution", f"different evaluation resolutions: "
                                                        f"{a.evaluation_resolution} vs {b.evaluation_resolution}")
    if across_seeds and a.seed != b.seed:
        return None
    ours, theirs = a.manifests(), b.manifests()
    folds = sorted(ours.keys() & theirs.keys()) if shared_folds_only else sorted(ours.keys() | theirs.keys())
    for fold in folds:
        if ours.get(fold) != theirs.get(fold):
            return Incomparability("manifests", f"different episode manifests in fold {fold} "
                                                f"({_short(ours.get(fold))} vs {_short(theirs.get(fold))}; "
                                                "folds, seed or episode cap differ)")
    return None


def _short(sha256: str | None) -> str:
    return sha256[:12] if sha256 else "not run"
