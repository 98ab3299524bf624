"""The paper's Table 5: one trained decoder evaluated with a backbone before and after an upgrade.

A pure function of two finished run records (as `fssbench eval` writes them): mIoU before and after
and their difference, per fold and for the mean over folds, as Markdown and as CSV. The two runs must
be comparable: complete, not timing-only, the same method, protocol, shot, seed, folds and episode
manifests, and the same decoder checkpoint (its sha256 in the records' weights).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from fssbench.harness.errors import UsageError

Record = dict[str, Any]
COLUMNS = ("fold", "backbone before", "backbone after", "mIoU before", "mIoU after", "delta")


@dataclass(frozen=True)
class UpgradeRow:
    fold: str  # the fold number, or "mean"
    before: float
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before


def upgrade_rows(before: Record, after: Record) -> list[UpgradeRow]:
    _check_comparable(before, after)
    after_by_fold = {result["fold"]: result["miou"] for result in after["results"]}
    rows = [UpgradeRow(str(result["fold"]), result["miou"], after_by_fold[result["fold"]])
            for result in before["results"]]
    return [*rows, UpgradeRow("mean", before["mean_miou"], after["mean_miou"])]


def upgrade_markdown(before: Record, after: Record) -> str:
    rows = upgrade_rows(before, after)
    title = (f"{before['method']} backbone upgrade without re-training: {before['protocol']}, "
             f"decoder {before['weights']['decoder'][:12]}")
    lines = [title, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = (row.fold, before["backbone"], after["backbone"], f"{row.before:.1f}", f"{row.after:.1f}",
                 f"{row.delta:+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def upgrade_csv(before: Record, after: Record) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([column.replace(" ", "_").lower() for column in COLUMNS])
    for row in upgrade_rows(before, after):
        writer.writerow([row.fold, before["backbone"], after["backbone"], f"{row.before:.4f}", f"{row.after:.4f}",
                         f"{row.delta:.4f}"])
    return buffer.getvalue()


def _check_comparable(before: Record, after: Record) -> None:
    for role, record in (("before", before), ("after", after)):
        if record.get("status") != "complete":
            raise UsageError(f"the {role} run {record.get('run_id')} is {record.get('status')}, not complete")
        if record.get("timing_only"):
            raise UsageError(f"the {role} run {record.get('run_id')} is timing-only (random weights): "
                             "its mIoU says nothing about an upgrade")
        if not isinstance(record.get("weights"), dict) or "decoder" not in record["weights"]:
            raise UsageError(f"the {role} run {record.get('run_id')} records no decoder checkpoint")
    for key in ("method", "protocol_sha256", "shot", "seed", "folds"):
        if before.get(key) != after.get(key):
            raise UsageError(f"the runs differ in {key} ({before.get(key)!r} before, {after.get(key)!r} after); "
                             "an upgrade table compares one decoder on the same episodes")
    manifests = [{result["fold"]: result["manifest_sha256"] for result in record["results"]}
                 for record in (before, after)]
    if manifests[0] != manifests[1]:
        raise UsageError("the runs were scored on different episodes (their manifests differ)")
    if before["weights"]["decoder"] != after["weights"]["decoder"]:
        raise UsageError("the runs use different decoder checkpoints; an upgrade keeps the trained decoder")
