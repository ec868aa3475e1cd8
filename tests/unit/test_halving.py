"""Successive halving gated by the go/no-go (search.halving): promotion counts, finalists, go and no-go."""

import numpy as np

from rankadaptor.search.config import SearchConfig
from rankadaptor.search.halving import promote, successive_halving

CONFIG = SearchConfig(threshold=0.005, go="auto", go_seeds=2, go_z=2.0)


def _noisy(values: dict, sd: float):
    def fn(c, seed):
        return values[c] + np.random.default_rng(hash((c, seed)) % 2**32).normal(0, sd)
    return fn


def test_promote_keeps_the_best_fraction_best_first():
    assert promote([0.1, 0.5, 0.3, 0.2, 0.4, 0.0], 1 / 3) == [1, 4]
    assert promote([0.1, 0.5, 0.3], 1 / 3) == [1]
    assert promote([0.2], 1 / 3) == [0]
    assert len(promote(list(range(27)), 1 / 3)) == 9


def test_planted_gain_is_selected_and_finalists_include_uniform():
    values = {i: 0.0 for i in range(27)}
    values[17] = 0.1  # far beyond the 0.005 noise
    r = successive_halving(CONFIG, list(range(27)), 0, [_noisy(values, 0.002), _noisy(values, 0.001)],
                           _noisy(values, 0.001), eta=1 / 3, finalists=2, seeds=2)
    assert r.decision.go
    assert [len(x) for x in r.rungs] == [26, 9]  # 26 others at rung 0, 9 promoted to rung 1
    assert 0 in r.finalists and len(r.finalists) == 3
    assert r.pick == 17
    full = [c for level, c, _ in r.calls if level == 2]
    assert sorted(full) == sorted([*r.finalists, *r.finalists])  # 2 seeds per finalist


def test_flat_scores_are_a_no_go_that_picks_uniform_after_the_cheap_trials_only():
    values = {i: 0.5 for i in range(12)}
    r = successive_halving(CONFIG, list(range(12)), 0, [_noisy(values, 0.001)], _noisy(values, 0.001))
    assert not r.decision.go and r.pick == 0 and r.finalists == []
    assert {level for level, _, _ in r.calls} == {0}
    assert len(r.calls) == 2 + 11  # uniform at go_seeds seeds + each other candidate once


def test_screen_search_measures_the_fits_best_at_full_and_picks_it_or_stops_on_flat():
    from rankadaptor.search.go import screening_vectors
    from rankadaptor.search.halving import screen_search

    config = SearchConfig(threshold=0.005, go_candidates=8)
    uniform, weights = [8] * 6, np.array([3.0, -1.0, 2.0, -2.0, 1.0, -3.0]) * 0.005 / 8
    design = screening_vectors(config, [1] * 6, uniform, 8)
    candidates = [[12, 4, 12, 4, 12, 4], [4, 12, 4, 12, 4, 12], [10, 6, 10, 6, 10, 6], *design]

    def scorer(w, sd):
        return lambda v, seed: 0.5 + float(np.dot(np.asarray(v) - 8, w)) + \
            np.random.default_rng(hash((v, seed)) % 2**32).normal(0, sd)

    r = screen_search(config, design, candidates, uniform, scorer(weights, 0.005), scorer(weights, 0.002))
    assert r.decision.go and r.pick == (12, 4, 12, 4, 12, 4) and r.finalists == [r.pick, tuple(uniform)]
    assert [level for level, _, _ in r.calls].count(1) == 2  # one full trial each: the finalist and uniform
    flat = screen_search(config, design, candidates, uniform, scorer(0 * weights, 0.005), scorer(0 * weights, 0.002))
    assert not flat.decision.go and flat.pick == tuple(uniform) and {level for level, _, _ in flat.calls} == {0}
    assert len(flat.calls) == 2 + len(design)
