"""Bootstrap intervals and paired tests: determinism, coverage on a known answer, the paired cases."""

import numpy as np
import pytest

from fssbench.harness.statistics import bootstrap_interval, paired_comparison


def synthetic_fold(rng, true_iou: float, episodes: int = 200, classes=(0, 1)):
    rows = []
    for index in range(episodes):
        union = int(rng.integers(800, 1200))
        rows.append([index, classes[index % len(classes)], 0, int(rng.binomial(union, true_iou)), 0, union])
    return classes, rows


def test_the_interval_is_reproducible_and_brackets_the_point_estimate():
    fold = synthetic_fold(np.random.default_rng(1), 0.6)
    assert bootstrap_interval([fold]) == bootstrap_interval([fold])
    low, high = bootstrap_interval([fold])
    assert low < 60 < high and high - low < 5
    assert bootstrap_interval([fold], seed=1) != (low, high)


def test_coverage_of_the_true_value_is_about_95_percent():
    # episodes whose IoU varies around a known population value: the class-accumulated IoU of an
    # infinite run is sum E[I] / sum E[U] = 0.5 here, so intervals should cover 50 about 95% of the time
    rng = np.random.default_rng(7)
    covered = 0
    trials = 120
    for _ in range(trials):
        rows = []
        for index in range(150):
            union = 1000
            rows.append([index, 0, 0, int(union * rng.uniform(0.2, 0.8)), 0, union])
        low, high = bootstrap_interval([((0,), rows)], replicates=500, seed=int(rng.integers(1 << 30)))
        covered += low <= 50 <= high
    assert 0.88 <= covered / trials <= 0.99


def test_paired_comparison_of_a_run_with_itself_and_with_a_worse_run():
    rng = np.random.default_rng(3)
    base = synthetic_fold(rng, 0.6)
    same = paired_comparison([base], [base])
    assert same.difference == 0 and same.interval == (0.0, 0.0) and same.p_value == 1.0
    classes, rows = base
    worse = (classes, [[i, c, ib, int(f * 0.8), ub, uf] for i, c, ib, f, ub, uf in rows])
    result = paired_comparison([base], [worse])
    assert result.difference < -10 and result.interval[1] < 0 and result.p_value < 0.01
    assert paired_comparison([base], [worse]) == result  # seeded


def test_paired_comparison_refuses_different_episodes():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="same episodes"):
        paired_comparison([synthetic_fold(rng, 0.5)], [synthetic_fold(rng, 0.5, episodes=100)])
