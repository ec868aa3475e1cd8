"""Successive halving across fidelities, gated by the go/no-go: many candidates cheap, few finalists full.

Rung 0 scores every candidate and uniform (at config.go_seeds seeds) at the cheapest fidelity; its scores are the
go/no-go's inputs (go.decide: noise from uniform's seeds, headroom = best candidate minus uniform's mean). On a
no-go the search stops there and picks uniform. Else each rung keeps the best fraction eta of its survivors and
scores them at the next fidelity; the finalists (the top `finalists` of the last rung, plus uniform always) are
measured at full fidelity at `seeds` seeds each and the pick is the best seed mean. Pure: the scoring functions
are the caller's, and every call is listed so that the caller can price it.

screen_search is the cheaper variant: one cheap rung of a screening design (search.go.decide_screen: an additive
fit, not a tournament), and on a go only the fit's best `finalists` vectors and uniform measured at full fidelity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rankadaptor.errors import check
from rankadaptor.search.config import SearchConfig
from rankadaptor.search.go import GoDecision, decide, decide_screen

Score = Callable[[Hashable, int], float]  # (candidate, seed) -> score, higher is better


@dataclass
class HalvingResult:
    decision: GoDecision
    pick: Hashable  # uniform on a no-go
    rungs: list[list[Hashable]] = field(default_factory=list)  # the candidates scored at each cheap rung
    finalists: list[Hashable] = field(default_factory=list)  # measured at full fidelity (uniform included)
    full_means: dict[Hashable, float] = field(default_factory=dict)  # seed mean of each finalist at full
    calls: list[tuple[int, Hashable, int]] = field(default_factory=list)  # (fidelity index, candidate, seed);
    # index len(cheap) is the full fidelity


def promote(scores: Sequence[float], eta: float) -> list[int]:
    """Indices of the best ceil(eta * n) scores (at least one), best first: the survivors of a rung."""
    check(0 < eta <= 1, f"eta={eta} must be in (0, 1]: the share of a rung promoted")
    keep = max(1, math.ceil(eta * len(scores) - 1e-9))
    return [int(i) for i in np.argsort(-np.asarray(scores, dtype=float), kind="stable")[:keep]]


def successive_halving(config: SearchConfig, candidates: Sequence[Hashable], uniform: Hashable,
                       cheap: Sequence[Score], full: Score, eta: float = 1 / 3, finalists: int = 2,
                       seeds: int = 2, trials_skipped: int = 0,
                       full_trial_seconds: float | None = None) -> HalvingResult:
    """Run the gated halving; cheap: the cheap fidelities' score functions, cheapest first (at least one)."""
    check(len(cheap) >= 1, "successive halving needs at least one cheap fidelity")
    check(finalists >= 1, f"finalists={finalists} must be >= 1 (the top candidates measured at full fidelity)")
    check(seeds >= 2, f"seeds={seeds} must be >= 2: finalists are selected by a seed mean")
    others = [c for c in dict.fromkeys(candidates) if c != uniform]
    check(len(others) >= 1, "successive halving needs at least one candidate other than uniform")
    calls: list[tuple[int, Hashable, int]] = []

    def score(level: int, fn: Score, c: Hashable, seed: int) -> float:
        calls.append((level, c, seed))
        return float(fn(c, seed))

    uniform_cheap = [score(0, cheap[0], uniform, s) for s in range(config.go_seeds)]
    rung_scores = [score(0, cheap[0], c, 0) for c in others]
    decision = decide(config, uniform_cheap, rung_scores, trials_skipped, full_trial_seconds)
    result = HalvingResult(decision, uniform, [list(others)], calls=calls)
    if not decision.go:
        return result
    alive = others
    for level in range(1, len(cheap)):
        alive = [alive[i] for i in promote(rung_scores, eta)]
        result.rungs.append(list(alive))
        rung_scores = [score(level, cheap[level], c, 0) for c in alive]
    top = [alive[i] for i in promote(rung_scores, eta)][:finalists]
    result.finalists = [*top, uniform]
    full_level = len(cheap)
    result.full_means = {c: float(np.mean([score(full_level, full, c, s) for s in range(seeds)]))
                         for c in result.finalists}
    result.pick = max(result.finalists, key=lambda c: result.full_means[c])
    return result


def screen_search(config: SearchConfig, design: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]],
                  uniform: Sequence[int], cheap: Score, full: Score, finalists: int = 1, seeds: int = 1,
                  trials_skipped: int = 0, full_trial_seconds: float | None = None) -> HalvingResult:
    """Uniform at config.go_seeds seeds and each design vector once at the cheap fidelity; decide_screen over
    `candidates`; on a go its top `finalists` and uniform at full fidelity at `seeds` seeds each, the pick their
    best seed mean. Candidates are passed to the score functions as tuples."""
    check(finalists >= 1, f"finalists={finalists} must be >= 1 (the fit's best vectors measured at full fidelity)")
    check(seeds >= 1, f"seeds={seeds} must be >= 1")
    base = tuple(int(r) for r in uniform)
    vectors = [list(v) for v in dict.fromkeys(tuple(int(r) for r in v) for v in design) if v != base]
    check(len(vectors) >= 1, "the screen needs at least one design vector other than uniform")
    calls: list[tuple[int, Hashable, int]] = []

    def score(level: int, fn: Score, c: tuple, seed: int) -> float:
        calls.append((level, c, seed))
        return float(fn(c, seed))

    uniform_cheap = [score(0, cheap, base, s) for s in range(config.go_seeds)]
    scores = [score(0, cheap, tuple(v), 0) for v in vectors]
    decision = decide_screen(config, list(base), uniform_cheap, vectors, scores, [list(c) for c in candidates],
                             trials_skipped, full_trial_seconds, finalists=finalists)
    result = HalvingResult(decision, base, [[tuple(v) for v in vectors]], calls=calls)
    if not decision.go:
        return result
    result.finalists = [*[tuple(v) for v in decision.finalists or []], base]
    result.full_means = {c: float(np.mean([score(1, full, c, s) for s in range(seeds)])) for c in result.finalists}
    result.pick = max(result.finalists, key=lambda c: result.full_means[c])
    return result
