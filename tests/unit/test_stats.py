"""Paired bootstrap and Kendall tau against hand computations."""

import numpy as np
import pytest

from rankadaptor.errors import UserError
from rankadaptor.stats import kendall_tau, kendall_tau_interval, paired_bootstrap, rank_correlation_interval


def tasks(**rows):
    return {name: {"rows": r, "row_ids": list(range(len(r)))} for name, r in rows.items()}


def test_paired_bootstrap_degenerate_cases_are_exact():
    a = tasks(boolq=[1, 0, 1, 1], piqa=[0, 1, 0])
    assert paired_bootstrap(a, a, n_boot=200) == (0.0, 0.0, 0.0)
    ones, zeros = tasks(boolq=[1] * 5, piqa=[1] * 3), tasks(boolq=[0] * 5, piqa=[0] * 3)
    assert paired_bootstrap(ones, zeros, n_boot=200) == (1.0, 1.0, 1.0)
    # boolq differs by +1 on every row, piqa never: the mean of task means differs by exactly 0.5
    assert paired_bootstrap(tasks(boolq=[1, 1], piqa=[0, 1]), tasks(boolq=[0, 0], piqa=[0, 1]), n_boot=200) == (0.5, 0.5, 0.5)


def test_paired_bootstrap_matches_a_naive_row_resampling():
    rng = np.random.default_rng(1)
    a = tasks(boolq=rng.integers(0, 2, 40).tolist(), hellaswag=rng.integers(0, 2, 25).tolist())
    b = tasks(boolq=rng.integers(0, 2, 40).tolist(), hellaswag=rng.integers(0, 2, 25).tolist())
    diff, low, high = paired_bootstrap(a, b, n_boot=20000, seed=0)
    d = {t: np.array(a[t]["rows"]) - np.array(b[t]["rows"]) for t in a}
    assert diff == pytest.approx(np.mean([d[t].mean() for t in d]))
    naive = np.mean([d[t][rng.integers(0, len(d[t]), (20000, len(d[t])))].mean(axis=1) for t in d], axis=0)
    assert low == pytest.approx(np.percentile(naive, 2.5), abs=0.015)
    assert high == pytest.approx(np.percentile(naive, 97.5), abs=0.015)
    assert low < diff < high
    assert paired_bootstrap(a, b, n_boot=500, seed=7) == paired_bootstrap(a, b, n_boot=500, seed=7)


def test_paired_bootstrap_refuses_different_rows():
    with pytest.raises(UserError, match="same rows"):
        paired_bootstrap(tasks(boolq=[1, 0]), {"boolq": {"rows": [1, 0], "row_ids": [0, 5]}})
    with pytest.raises(UserError, match="same tasks"):
        paired_bootstrap(tasks(boolq=[1, 0]), tasks(piqa=[1, 0]))


def test_kendall_tau_hand_values():
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # pairs of [1, 3, 2, 4]: 5 concordant, 1 discordant -> (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    with pytest.raises(UserError):
        kendall_tau([1, 2], [1])


def test_rank_correlation_interval_brackets_the_value_and_refuses_other_methods():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=60)
    noisy = truth + rng.normal(scale=0.5, size=60)
    from scipy.stats import spearmanr

    low, high = rank_correlation_interval(noisy, truth, "spearman", n_boot=500)
    assert low < spearmanr(noisy, truth).statistic < high and 0 < low and high <= 1
    assert rank_correlation_interval(noisy, truth, "kendall", n_boot=500) == kendall_tau_interval(noisy, truth, 500)
    assert rank_correlation_interval(list(range(5)), list(range(5)), "spearman", n_boot=50) == pytest.approx((1, 1))
    with pytest.raises(UserError, match="pearson"):
        rank_correlation_interval(noisy, truth, "pearson")
