"""Uncertainty of FSS results: bootstrap intervals and paired tests over episodes.

Both resample per-episode records and recompute the class-accumulated mIoU (never a mean of
per-episode IoUs). The bootstrap resamples episodes within each class, so every class keeps its
episode count; the mean over folds is taken per replicate. Everything is seeded: the same records
always give the same interval.

A fold is given as (class_ids, rows) with rows = [index, class_id, I_bg, I_fg, U_bg, U_fg], the
`episode_scores` of a run record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    rng = np.random.default_rng(seed)
    means = np.zeros(replicates)
    for fold in folds:
        inter, union = [], []
        for fg_inter, fg_union in _class_columns(fold):
            picks = rng.integers(0, max(len(fg_inter), 1), size=(replicates, len(fg_inter)))
            inter.append(fg_inter[picks].sum(axis=1))
            union.append(fg_union[picks].sum(axis=1))
        means += _fold_miou(inter, union)
    low, high = np.percentile(means / len(folds), [2.5, 97.5])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedComparison:
    difference: float  # current - baseline, mean over folds of mIoU
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
