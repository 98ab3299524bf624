"""Uncertainty of results: bootstrap intervals and paired tests over episodes (FSS) and queries (GFSS).

All of them resample per-unit records and recompute the accumulated metric (never a mean of
per-episode IoUs). The FSS bootstrap resamples episodes within each class, so every class keeps its
episode count; the mean over folds is taken per replicate. Everything is seeded: the same records
always give the same interval.

An FSS fold is given as (class_ids, rows) with rows = [index, class_id, I_bg, I_fg, U_bg, U_fg], the
`episode_scores` of a run record. A GFSS fold is a `GfssFold`: its label space and the sparse
confusion cells of every query, the `query_confusions` of a run record.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np
from scipy import sparse

REPLICATES = 2000
SEED = 0
Fold = tuple[tuple[int, ...], list[list[int]]]


def _class_columns(fold: Fold) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per class of the fold: its episodes' foreground I and U (sorted by episode index)."""
    class_ids, rows = fold
    table = np.asarray(sorted(rows), dtype=np.int64).reshape(-1, 6)
    return [(table[table[:, 1] == c, 3], table[table[:, 1] == c, 5]) for c in class_ids]


def _fold_miou(inter: list[np.ndarray], union: list[np.ndarray]) -> np.ndarray:
    """mIoU x100 from per-class summed counts (each [..]) -> [..]."""
    return np.mean([i / np.maximum(u, 1) for i, u in zip(inter, union)], axis=0) * 100


def bootstrap_interval(folds: list[Fold], replicates: int = REPLICATES, seed: int = SEED) -> tuple[float, float]:
    """95% percentile interval of the mean over folds of the class-accumulated mIoU."""
    return seeds_bootstrap_interval([folds], replicates, seed)


def seeds_bootstrap_interval(runs: list[list[Fold]], replicates: int = REPLICATES,
                             seed: int = SEED) -> tuple[float, float]:
    """95% percentile interval of the mean over runs (one per episode seed) of each run's mean over folds of
    the class-accumulated mIoU: every run's episodes are resampled within class, independently of the other
    runs'. One run gives exactly `bootstrap_interval`'s interval (the same draws)."""
    rng = np.random.default_rng(seed)
    total = np.zeros(replicates)
    for folds in runs:
        means = np.zeros(replicates)
        for fold in folds:
            inter, union = [], []
            for fg_inter, fg_union in _class_columns(fold):
                picks = rng.integers(0, max(len(fg_inter), 1), size=(replicates, len(fg_inter)))
                inter.append(fg_inter[picks].sum(axis=1))
                union.append(fg_union[picks].sum(axis=1))
            means += _fold_miou(inter, union)
        total += means / len(folds)
    low, high = np.percentile(total / len(runs), [2.5, 97.5])
    return float(low), float(high)


def median_ratio_interval(baseline: list[float], current: list[float], replicates: int = REPLICATES,
                          seed: int = SEED) -> tuple[float, tuple[float, float]]:
    """The ratio median(current) / median(baseline) of two latency samples and its 95% bootstrap percentile
    interval, each sample resampled on its own (timings of two runs do not pair: each saw its own machine)."""
    base, cur = np.asarray(baseline, dtype=np.float64), np.asarray(current, dtype=np.float64)
    rng = np.random.default_rng(seed)
    ratios = np.empty(replicates)
    for start in range(0, replicates, CHUNK):
        count = min(CHUNK, replicates - start)
        base_medians = np.median(base[rng.integers(0, base.size, size=(count, base.size))], axis=1)
        cur_medians = np.median(cur[rng.integers(0, cur.size, size=(count, cur.size))], axis=1)
        ratios[start:start + count] = cur_medians / base_medians
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(np.median(cur) / np.median(base)), (float(low), float(high))


@dataclass(frozen=True)
class PairedComparison:
    difference: float  # current - baseline in the headline metric (mean over folds)
    interval: tuple[float, float]  # paired bootstrap 95% interval of the difference
    p_value: float  # paired permutation test, two-sided


def paired_comparison(baseline: list[Fold], current: list[Fold], replicates: int = REPLICATES,
                      seed: int = SEED) -> PairedComparison:
    """Compare two runs on the same manifests, episode by episode."""
    rng = np.random.default_rng(seed)
    observed = 0.0
    boot = np.zeros(replicates)
    perm = np.zeros(replicates)
    for base_fold, cur_fold in zip(baseline, current):
        if sorted(r[:2] for r in base_fold[1]) != sorted(r[:2] for r in cur_fold[1]):
            raise ValueError("paired comparison needs the same episodes in both runs")
        base, cur = _class_columns(base_fold), _class_columns(cur_fold)
        observed += (_fold_miou([i.sum() for i, _ in cur], [u.sum() for _, u in cur])
                     - _fold_miou([i.sum() for i, _ in base], [u.sum() for _, u in base]))
        boot_terms = {"cur_i": [], "cur_u": [], "base_i": [], "base_u": []}
        perm_terms = {"cur_i": [], "cur_u": [], "base_i": [], "base_u": []}
        for (bi, bu), (ci, cu) in zip(base, cur):
            n = len(bi)
            picks = rng.integers(0, max(n, 1), size=(replicates, n))
            for name, values in (("cur_i", ci), ("cur_u", cu), ("base_i", bi), ("base_u", bu)):
                boot_terms[name].append(values[picks].sum(axis=1))
            swap = rng.random((replicates, n)) < 0.5
            perm_terms["cur_i"].append(np.where(swap, bi, ci).sum(axis=1))
            perm_terms["cur_u"].append(np.where(swap, bu, cu).sum(axis=1))
            perm_terms["base_i"].append(np.where(swap, ci, bi).sum(axis=1))
            perm_terms["base_u"].append(np.where(swap, cu, bu).sum(axis=1))
        boot += _fold_miou(boot_terms["cur_i"], boot_terms["cur_u"]) - _fold_miou(boot_terms["base_i"], boot_terms["base_u"])
        perm += _fold_miou(perm_terms["cur_i"], perm_terms["cur_u"]) - _fold_miou(perm_terms["base_i"], perm_terms["base_u"])
    count = len(baseline)
    observed, boot, perm = observed / count, boot / count, perm / count
    low, high = np.percentile(boot, [2.5, 97.5])
    p_value = (1 + np.sum(np.abs(perm) >= abs(observed) - 1e-9)) / (replicates + 1)
    return PairedComparison(float(observed), (float(low), float(high)), float(p_value))


# --- generalized FSS: paired comparisons over queries, DIaM's metric ---

GfssQueries = list[tuple[int, int, list[tuple[int, int, int]]]]  # run, query index, (truth, prediction, pixels)
CHUNK = 250  # replicates drawn at a time: bounds the [queries, replicates] weight matrices


@dataclass(frozen=True)
class GfssFold:
    """A GFSS fold as the paired test takes it: the label-space size, the base and novel label indices
    (background is 0 and in neither) and every query's sparse confusion cells."""

    classes: int
    base: tuple[int, ...]
    novel: tuple[int, ...]
    queries: GfssQueries


def _run_counts(fold: GfssFold) -> dict[int, tuple[tuple[int, ...], sparse.csr_matrix]]:
    """Per run: its query indices (ascending) and their per-class counts as a sparse [queries, 2 * classes]
    matrix, intersections in the first `classes` columns and unions in the others. Both are additive over
    queries, so a run's (or a resample's) DIaM scores follow from column sums; a cell (t, p, n) adds n to
    the union of t and, when p != t, of p."""
    by_run: dict[int, list[tuple[int, list[tuple[int, int, int]]]]] = {}
    for run, index, cells in fold.queries:
        by_run.setdefault(run, []).append((index, cells))
    counts = {}
    for run, queries in sorted(by_run.items()):
        queries.sort(key=lambda query: query[0])
        sizes = [len(cells) for _, cells in queries]
        rows = np.repeat(np.arange(len(queries)), sizes)
        flat = np.fromiter(chain.from_iterable(chain.from_iterable(cells for _, cells in queries)), dtype=np.int64,
                           count=3 * sum(sizes))
        truth, prediction, pixels = flat.reshape(-1, 3).T
        hit, miss = truth == prediction, truth != prediction
        c = fold.classes
        matrix = sparse.coo_matrix(
            (np.concatenate([pixels[hit], pixels, pixels[miss]]).astype(np.float64),
             (np.concatenate([rows[hit], rows, rows[miss]]),
              np.concatenate([truth[hit], c + truth, c + prediction[miss]]))),
            shape=(len(queries), 2 * c)).tocsr()
        counts[run] = (tuple(index for index, _ in queries), matrix)
    return counts


def _headline(counts: np.ndarray, fold: GfssFold) -> np.ndarray:
    """DIaM's (base + novel) / 2 (x100) of summed counts [..., 2 * classes]: IoU = I / (U + 1e-10), classes
    of empty union skipped, nan where a group has no class of nonzero union."""
    inter, union = counts[..., :fold.classes], counts[..., fold.classes:]
    iou, scored = inter / (union + 1e-10), union > 0

    def group(indices: tuple[int, ...]) -> np.ndarray:
        index = list(indices)
        total = np.where(scored[..., index], iou[..., index], 0.0).sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return 100.0 * total / scored[..., index].sum(axis=-1)

    return (group(fold.base) + group(fold.novel)) / 2


def _resample_weights(rng: np.random.Generator, replicates: int, queries: int) -> np.ndarray:
    """How often each query is drawn in each bootstrap replicate: [replicates, queries]."""
    picks = rng.integers(0, queries, size=(replicates, queries), dtype=np.int64)
    picks += np.arange(replicates)[:, None] * queries
    return np.bincount(picks.ravel(), minlength=replicates * queries).reshape(replicates, queries).astype(np.float64)


def gfss_paired_comparison(baseline: list[GfssFold], current: list[GfssFold], replicates: int = REPLICATES,
                           seed: int = SEED) -> PairedComparison:
    """Compare two GFSS runs on the same manifests, query by query (paired by fold, run and query index).

    The headline is DIaM's mean of base and novel mIoU, averaged over runs, then folds. The bootstrap
    resamples each run's queries (the same draws for both methods); the permutation test swaps each
    query's confusion cells between the two methods. Only per-query class counts are built (sparse
    [queries, 2 * classes]), never a dense [queries, classes^2] array."""
    if len(baseline) != len(current):
        raise ValueError("paired comparison needs the same folds in both runs")
    rng = np.random.default_rng(seed)
    observed, boot, perm = 0.0, np.zeros(replicates), np.zeros(replicates)
    for base_fold, cur_fold in zip(baseline, current):
        if (base_fold.classes, base_fold.base, base_fold.novel) != (cur_fold.classes, cur_fold.base, cur_fold.novel):
            raise ValueError("paired comparison needs the same label space (base and novel classes) in both runs")
        if not base_fold.queries or not cur_fold.queries:
            raise ValueError("paired comparison needs per-query confusions, and a run has none")
        base_runs, cur_runs = _run_counts(base_fold), _run_counts(cur_fold)
        if {run: keys for run, (keys, _) in base_runs.items()} != {run: keys for run, (keys, _) in cur_runs.items()}:
            raise ValueError("paired comparison needs the same queries (runs and query indices) in both runs")
        share = 1 / (len(base_runs) * len(baseline))  # a run's weight in the mean over runs, then folds
        for run, (_, base_counts) in base_runs.items():
            cur_counts = cur_runs[run][1]
            base_total, cur_total = base_counts.sum(axis=0).A1, cur_counts.sum(axis=0).A1
            observed += share * float(_headline(cur_total, cur_fold) - _headline(base_total, base_fold))
            moved_if_swapped = base_counts - cur_counts  # per query: what a swap carries from baseline to current
            for start in range(0, replicates, CHUNK):
                block = slice(start, min(start + CHUNK, replicates))
                weights = _resample_weights(rng, block.stop - block.start, base_counts.shape[0])
                boot[block] += share * (_headline(weights @ cur_counts, cur_fold)
                                        - _headline(weights @ base_counts, base_fold))
                swaps = (rng.random((block.stop - block.start, base_counts.shape[0])) < 0.5).astype(np.float64)
                moved = swaps @ moved_if_swapped
                perm[block] += share * (_headline(cur_total + moved, cur_fold) - _headline(base_total - moved, base_fold))
    if np.isnan(observed):
        raise ValueError("the headline metric is undefined (a group of classes without a scored class)")
    low, high = np.nanpercentile(boot, [2.5, 97.5])
    p_value = (1 + np.sum(np.abs(perm) >= abs(observed) - 1e-9)) / (replicates + 1)
    return PairedComparison(float(observed), (float(low), float(high)), float(p_value))
