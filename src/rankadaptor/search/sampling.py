"""Rank vectors under a LoRA-parameter budget: the one sampler every proposer, the go/no-go and the baselines use.

Budget: a rank vector r trains sum_i r_i * c_i LoRA parameters, c_i being layer i's cost per unit of rank
(modeling.lora_cost_per_rank); the budget is widths.budget (the job's search.budget, else uniform rank 8).
"""

from __future__ import annotations

import numpy as np

from rankadaptor import widths
from rankadaptor.errors import check
from rankadaptor.search.config import SearchConfig


def searched_indices(config: SearchConfig, num_layers: int) -> np.ndarray:
    """The 0-based indices of the searched layers, sorted (all layers when searched_layers is unset)."""
    if config.searched_layers is None:
        return np.arange(num_layers)
    check(max(config.searched_layers) < num_layers,
          f"searched_layers={config.searched_layers!r} names a layer >= {num_layers}, the model's layer count")
    return np.asarray(sorted(config.searched_layers))


def sample_rank_vectors(config: SearchConfig, cost_per_rank: list[int], rng: np.random.Generator,
                        parents: list[list[int]] | None = None) -> np.ndarray:
    """Distinct full rank vectors [M, L], M <= num_samples, each within the budget.

    Searched layers draw uniformly from the candidates, except a local_fraction of the draws, which copy
    a random parent (the best measured vectors) and redraw a few (two on average) of its searched layers: uniform samples of
    6^26 vectors rarely land near the optimum, while the surrogate is most trustworthy next to measured
    points. A vector over budget is repaired by lowering a random searched layer one candidate step at a
    time until it fits: rejection alone would leave few or no vectors for tight budgets, and repair keeps
    every draw and lands on vectors that use the budget."""
    cost = np.asarray(cost_per_rank, np.int64)
    check(len(cost) >= 1 and bool((cost > 0).all()), "cost_per_rank must be one positive count per layer")
    searched = searched_indices(config, len(cost))
    fixed = np.setdiff1d(np.arange(len(cost)), searched)
    candidates = np.sort(np.asarray(config.candidates, np.int64))
    budget = widths.budget(cost_per_rank, config.budget)
    room = budget - config.fixed_rank * int(cost[fixed].sum())  # what the searched layers may spend
    cheapest = int(candidates[0] * cost[searched].sum())
    check(cheapest <= room, f"budget={budget} LoRA parameters cannot be met: the smallest rank vector (searched layers "
                            f"at rank {candidates[0]}, others at fixed_rank={config.fixed_rank}) needs "
                            f"{cheapest + budget - room}; raise the budget or lower fixed_rank/candidates")
    searched_cost = cost[searched]
    idx = rng.integers(0, len(candidates), size=(config.num_samples, len(searched)))
    seeds = np.asarray([[int(np.searchsorted(candidates, p[i])) for i in searched] for p in parents or []
                        if len(p) == len(cost) and all(p[i] in candidates for i in searched)], np.int64)
    local = int(round(config.local_fraction * config.num_samples)) if len(seeds) else 0
    if local:
        copies = seeds[rng.integers(0, len(seeds), size=local)]
        redraw = rng.random((local, len(searched))) < 1.0 / len(searched)
        redraw[np.arange(local), rng.integers(0, len(searched), size=local)] = True  # at least one layer changes
        idx[:local] = np.where(redraw, idx[:local], copies)
    over = candidates[idx] @ searched_cost > room
    while over.any():
        rows = np.flatnonzero(over)
        pick = rng.random((len(rows), len(searched)))
        pick[idx[rows] == 0] = -1.0  # only layers that can still go lower
        idx[rows, pick.argmax(axis=1)] -= 1
        over[rows] = candidates[idx[rows]] @ searched_cost > room
    vectors = np.full((config.num_samples, len(cost)), config.fixed_rank, np.int64)
    vectors[:, searched] = candidates[idx]
    return np.unique(vectors, axis=0)


def nearest(pool: np.ndarray, want: np.ndarray, excluded: np.ndarray, rng: np.random.Generator) -> int | None:
    """The index of the pool vector [M, L] nearest to `want` (L1 over ranks, ties broken at random) that is not
    excluded ([M] bool); None when every one is: how a replay measures a suggestion it can only take from a pool."""
    distance = np.abs(pool - want).sum(axis=1).astype(float) + rng.random(len(pool)) * 1e-3
    distance[np.asarray(excluded, bool)] = np.inf
    return int(np.argmin(distance)) if np.isfinite(distance).any() else None
