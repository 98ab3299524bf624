"""Whether a run record may be believed: the one check that `compare`, `leaderboard` and `upgrade` make
of every record they read.

A record's stated metrics must be those its own per-unit counts give, computed as the tasks compute
them: an FSS fold's mIoU and FB-IoU from its episode scores summed per class (the fold's classes are
the keys of its per-class IoU); a GFSS fold's per-run base, novel, mean and harmonic from each run's
confusion matrix, each matrix being the sum of its queries' cells where those are recorded, and the
fold's metrics the average over its runs; the record's metrics the mean over its folds. A sealed record
(one with a sha256) must also still have the content it was written with: that catches what the sums
cannot, such as counts moved between episodes. A fold without per-unit counts has nothing to
recompute from and only its hash (if any) vouches for it.
"""

from __future__ import annotations

import math

import numpy as np

from fssbench.harness.gfss_metrics import average_over_runs, gfss_scores
from fssbench.harness.metrics import EpisodeScore, FssMetricState
from fssbench.harness.record import FssFoldResult, GfssFoldResult, RunRecord

TOLERANCE = 1e-9  # the figures are recomputed as they were computed; this only absorbs float noise


def verify(record: RunRecord) -> str | None:
    """Why `record` cannot be believed, or None when it checks out."""
    problem = next(filter(None, map(_fold_problem, record.results)), None) or _mean_problem(record)
    if problem:
        return f"record {record.run_id} is inconsistent: {problem}"
    if record.sha256 is not None and record.sha256 != record.content_sha256():
        return f"record {record.run_id} was modified after it was written: its sha256 does not match its content"
    return None


def _fold_problem(result: FssFoldResult | GfssFoldResult) -> str | None:
    try:
        if isinstance(result, FssFoldResult):
            return _fss_problem(result)
        return _gfss_problem(result)
    except (ArithmeticError, LookupError, ValueError) as exc:  # counts that do not fit its classes, labels, runs
        return f"fold {result.fold}'s counts cannot be scored ({type(exc).__name__}: {exc})"


def _fss_problem(result: FssFoldResult) -> str | None:
    if not result.episode_scores:
        return None
    scores = [EpisodeScore(row[0], row[1], (row[2], row[3]), (row[4], row[5])) for row in result.episode_scores]
    state = FssMetricState.from_records(tuple(result.per_class_iou), scores)
    return _differ(f"fold {result.fold}", result.metrics, {"miou": state.miou(), "fbiou": state.fbiou()},
                   "its episodes give")


def _gfss_problem(result: GfssFoldResult) -> str | None:
    where = f"fold {result.fold}"
    if result.query_confusions:
        cells = np.array([(run, *cell) for run, _, query in result.query_confusions for cell in query],
                         dtype=np.int64).reshape(-1, 4)  # run, truth, prediction, pixels
        for run, matrix in result.confusion.items():
            summed = np.zeros_like(np.asarray(matrix, dtype=np.int64))
            ours = cells[cells[:, 0] == run]
            np.add.at(summed, (ours[:, 1], ours[:, 2]), ours[:, 3])
            if not np.array_equal(summed, matrix):
                return f"{where} run {run}'s confusion matrix is not the sum of its queries' confusions"
    if result.base_classes is not None:  # a schema-1 record does not say which classes are base
        base = list(range(1, result.base_classes + 1))
        novel = list(range(result.base_classes + 1, len(result.label_names)))
        for run in result.runs:
            problem = _differ(f"{where} run {run.run}", run.model_dump(include={"base", "novel", "mean", "harmonic"}),
                              gfss_scores(np.asarray(result.confusion[run.run]), base, novel),
                              "its confusion matrix gives")
            if problem:
                return problem
    average = average_over_runs([run.model_dump() for run in result.runs])
    return _differ(where, result.metrics, {"miou": average["mean"], "base": average["base"],
                                           "novel": average["novel"], "harmonic": average["harmonic"]},
                   "its runs give")


def _mean_problem(record: RunRecord) -> str | None:
    if not record.results:
        return None
    for metric in record.metrics:
        values = [result.metrics.get(metric.name) for result in record.results]
        mean = None if None in values else sum(values) / len(values)
        if not _same(metric.value, mean):
            return f"it states {metric.label} {metric.value} for the mean over folds, its folds give {mean}"
    return None


def _differ(where: str, stated: dict[str, float], computed: dict[str, float], source: str) -> str | None:
    """The first metric that `where` states otherwise than its counts give, or None."""
    for name in dict.fromkeys([*computed, *stated]):
        if not _same(stated.get(name), computed.get(name)):
            return f"{where} states {name} {stated.get(name)}, {source} {computed.get(name)}"
    return None


def _same(stated: float | None, computed: float | None) -> bool:
    if stated is None or computed is None:
        return stated is computed
    both_nan = math.isnan(stated) and math.isnan(computed)  # a GFSS group without a scored class
    return both_nan or math.isclose(stated, computed, rel_tol=0, abs_tol=TOLERANCE)
