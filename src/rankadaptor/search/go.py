"""Go/no-go: whether a rank search can pay, decided from cheap trials before the expensive part.

A search can only find what lies beyond the trial noise. The cheap trials measure both: uniform LoRA at
several seeds (the noise) and a few other budget vectors (the headroom). Two designs:

- decide: random vectors, headroom = the best of them minus uniform's mean (the first design; search.halving's
  rungs use it);
- decide_screen, the job's: a screening design (screening_vectors: each searched layer moved go_step candidate
  steps up or down by the sign rows of a two-level orthogonal array), an additive least-squares fit of every
  cheap score (fit_screen: one slope per layer), headroom = the fit's predicted gain of its best budget vector.
  A gain spread over many layers is invisible to a few random vectors but adds up in the fit. The bar is go_z
  standard errors of that prediction, widened (Scheffe) for having picked the best of the fit's directions, so
  that a flat job says go no more often than go_z promises.

The search runs only if the headroom clears the bar; else uniform is registered and the trials the search would
have run are not paid for. Pure functions: the measuring is the go step's (steps.model.go_check), the policy's
inputs are plain numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import linalg, stats

from rankadaptor import widths
from rankadaptor.errors import check
from rankadaptor.search.config import SearchConfig
from rankadaptor.search.sampling import searched_indices
from rankadaptor.trial import fidelity


@dataclass
class GoDecision:
    go: bool
    mode: str  # SearchConfig.go
    reason: str
    noise: float | None = None  # sd of one cheap trial (uniform's seeds; at least the job's threshold)
    headroom: float | None = None  # best cheap candidate minus uniform's cheap mean
    needed: float | None = None  # go_z standard errors of that difference: the headroom must exceed it
    uniform_scores: list[float] | None = None
    candidate_scores: list[float] | None = None
    cheap_seconds: float = 0.0  # what the cheap trials of this decision cost (reused ones included)
    full_trial_seconds: float | None = None  # one full trial (the uniform baseline's recovery + evaluation)
    trials_skipped: int = 0  # the full trials a search would have run (bootstrap + loop), skipped on no-go
    seconds_not_spent: float = 0.0  # trials_skipped x full_trial_seconds, on no-go
    fidelity: str = ""  # the cheap trials' fidelity (trial.fidelity of cheap_fraction)
    finalists: list[list[int]] | None = None  # decide_screen: the fit's best budget vectors, best first
    earlier: list[dict] | None = None  # earlier_line's input: other tasks' screens on this model and pruning


def decide(config: SearchConfig, uniform: list[float], candidates: list[float], trials_skipped: int,
           full_trial_seconds: float | None, cheap_seconds: float = 0.0) -> GoDecision:
    """The decision of mode config.go. uniform: cheap scores of uniform LoRA at different seeds; candidates:
    cheap scores of other budget vectors; trials_skipped: the full trials a search would run. The noise is the
    seeds' sd, never below config.threshold (the job's stated trial noise: two seeds alone can agree by chance);
    the standard error of best-minus-mean is noise * sqrt(1 + 1/len(uniform))."""
    saved = trials_skipped * (full_trial_seconds or 0.0)
    cheap = fidelity(config.cheap_fraction)
    if config.go == "always":
        return GoDecision(True, "always", "search.go is 'always': the search runs without a go/no-go",
                          full_trial_seconds=full_trial_seconds, fidelity=cheap)
    if config.go == "never":
        return GoDecision(False, "never", "search.go is 'never': uniform LoRA only, no search",
                          full_trial_seconds=full_trial_seconds, trials_skipped=trials_skipped,
                          seconds_not_spent=saved, fidelity=cheap)
    check(len(uniform) >= 2, f"the go/no-go needs uniform at 2 or more seeds, got {len(uniform)} score(s)")
    check(len(candidates) >= 1, "the go/no-go needs at least one cheap candidate score")
    check(all(math.isfinite(x) for x in [*uniform, *candidates]), "cheap trial scores must be finite numbers")
    noise = max(float(np.std(uniform, ddof=1)), config.threshold)
    headroom = max(candidates) - float(np.mean(uniform))
    needed = config.go_z * noise * math.sqrt(1 + 1 / len(uniform))
    go = headroom > needed
    figures = f"headroom {headroom:+.4f} (best of {len(candidates)} cheap vectors - uniform's mean), needed " \
              f"{needed:.4f} ({config.go_z:g} x noise sd {noise:.4f} x sqrt(1 + 1/{len(uniform)}))"
    reason = f"go: {figures}" if go else f"no-go: {figures}"
    return GoDecision(go, "auto", reason, noise, headroom, needed, list(uniform), list(candidates), cheap_seconds,
                      full_trial_seconds, 0 if go else trials_skipped, 0.0 if go else saved, cheap)


def screening_vectors(config: SearchConfig, cost_per_rank: list[int], uniform: list[int],
                      runs: int) -> list[list[int]]:
    """Up to `runs` distinct budget vectors for the screen: row i moves each searched layer go_step candidate steps
    up (+1) or down (-1) from uniform by the signs of a Sylvester-Hadamard matrix (all-ones row and column left
    out; then the same rows negated, the fold-over), whose columns are orthogonal, so that least squares separates
    the layers' main effects. A row over the budget lowers its costliest raised layer one step at a time until it
    fits; a row under it raises its lowered layers, cheapest first, while they fit (a screen of vectors that
    use the budget, as the search's own). At most 2 x (2^ceil(log2(layers + 1)) - 1) rows exist."""
    layers = searched_indices(config, len(uniform)).tolist()
    ranks = sorted(config.candidates)
    cost = np.asarray(cost_per_rank, np.int64)
    budget = widths.budget(cost_per_rank, config.budget)
    signs = linalg.hadamard(1 << len(layers).bit_length())[1:, 1:len(layers) + 1]
    out: list[list[int]] = []
    for row in np.concatenate([signs, -signs])[:runs]:
        vector = list(uniform)
        for sign, layer in zip(row, layers):
            at = int(np.argmin([abs(r - uniform[layer]) for r in ranks]))
            vector[layer] = ranks[min(max(at + int(sign) * config.go_step, 0), len(ranks) - 1)]
        while int(np.dot(vector, cost)) > budget:
            lowerable = [x for x in layers if vector[x] > ranks[0]]
            check(bool(lowerable), f"budget={budget} cannot be met by any screening vector")
            raised = [x for x in lowerable if vector[x] > uniform[x]] or lowerable
            layer = max(raised, key=lambda x: cost[x])
            vector[layer] = ranks[ranks.index(vector[layer]) - 1]
        for layer in sorted((x for x in layers if vector[x] < uniform[x]), key=lambda x: cost[x]):
            while vector[layer] < uniform[layer] and int(np.dot(vector, cost)) + (
                    ranks[ranks.index(vector[layer]) + 1] - vector[layer]) * cost[layer] <= budget:
                vector[layer] = ranks[ranks.index(vector[layer]) + 1]  # spend what the row left of the budget
        if vector not in out and vector != list(uniform):
            out.append(vector)
    return out


@dataclass
class ScreenFit:
    """score = coef[0] + sum_l coef[1 + l] * (rank_l - uniform_l), fitted by least squares to every cheap score."""
    coef: np.ndarray
    gram_pinv: np.ndarray  # (X^T X)^+: the coefficients' covariance over noise^2
    noise: float  # sd of one cheap trial: the fit's residual sd, never below config.threshold
    contrasts: int  # estimable rank-change directions (the design matrix's rank, less the intercept)
    dof: int  # residual degrees of freedom
    uniform: np.ndarray


def fit_screen(config: SearchConfig, uniform: list[int], uniform_scores: list[float], vectors: list[list[int]],
               scores: list[float]) -> ScreenFit:
    """The additive fit of uniform's seeds and the other vectors' cheap scores. Its residuals hold both uniform's
    seed-to-seed spread and what the additive model misses; the noise is their sd (the job's threshold where
    there are no residual degrees of freedom or they spread less)."""
    check(len(uniform_scores) >= 2, f"the go/no-go needs uniform at 2 or more seeds, got {len(uniform_scores)} "
                                    "score(s)")
    check(len(vectors) >= 1 and len(vectors) == len(scores), "the screen needs one cheap score per vector, and one "
                                                             "vector at least")
    y = np.asarray([*uniform_scores, *scores], float)
    check(bool(np.isfinite(y).all()), "cheap trial scores must be finite numbers")
    base = np.asarray(uniform, float)
    x = np.asarray([base] * len(uniform_scores) + [np.asarray(v, float) for v in vectors]) - base
    design = np.column_stack([np.ones(len(y)), x])
    coef = np.linalg.pinv(design) @ y
    rank = int(np.linalg.matrix_rank(design))
    dof = len(y) - rank
    residual = float(np.sqrt(np.sum((y - design @ coef) ** 2) / dof)) if dof else 0.0
    return ScreenFit(coef, np.linalg.pinv(design.T @ design), max(residual, config.threshold), rank - 1, dof, base)


def predicted_gains(fit: ScreenFit, vectors: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Each vector's predicted gain over uniform and its standard error; NaN where the design cannot estimate it
    (the vector's rank changes lie outside the directions the screen measured)."""
    c = np.column_stack([np.zeros(len(vectors)), np.asarray(vectors, float) - fit.uniform])
    gain = c @ fit.coef
    projected = c @ fit.gram_pinv @ np.linalg.pinv(fit.gram_pinv)  # c's part in the measured directions
    estimable = np.linalg.norm(c - projected, axis=1) <= 1e-6 * (1.0 + np.linalg.norm(c, axis=1))
    se = fit.noise * np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", c, fit.gram_pinv, c), 0.0))
    return np.where(estimable, gain, np.nan), np.where(estimable, se, np.nan)


def scheffe_z(go_z: float, contrasts: int) -> float:
    """go_z widened for the best of `contrasts` directions: the one-sided normal tail of go_z, as a chi-square
    quantile with that many degrees of freedom (Scheffe); go_z itself when nothing was picked."""
    if contrasts <= 0:
        return go_z
    return float(np.sqrt(stats.chi2.ppf(1.0 - stats.norm.sf(go_z), contrasts)))


def decide_screen(config: SearchConfig, uniform: list[int], uniform_scores: list[float], vectors: list[list[int]],
                  scores: list[float], candidates: list[list[int]], trials_skipped: int,
                  full_trial_seconds: float | None, cheap_seconds: float = 0.0, finalists: int = 2) -> GoDecision:
    """The screen's decision of mode config.go. uniform_scores: cheap scores of uniform at different seeds;
    vectors/scores: the other cheap trials (the screening design's, or any banked); candidates: the budget vectors
    the fit may call best (the measured ones are added). Headroom = the best estimable candidate's predicted gain;
    go when it exceeds scheffe_z(go_z, contrasts) of its standard error. finalists: the top candidates kept."""
    cheap = fidelity(config.cheap_fraction)
    if config.go != "auto":
        return decide(config, uniform_scores, scores, trials_skipped, full_trial_seconds, cheap_seconds)
    fit = fit_screen(config, uniform, uniform_scores, vectors, scores)
    pool = [list(v) for v in dict.fromkeys(tuple(int(r) for r in v) for v in [*vectors, *candidates])
            if list(v) != list(uniform)]
    gain, se = predicted_gains(fit, pool)
    order = [int(i) for i in np.argsort(-np.nan_to_num(gain, nan=-np.inf), kind="stable") if np.isfinite(gain[i])]
    z = scheffe_z(config.go_z, fit.contrasts)
    headroom, needed = (float(gain[order[0]]), float(z * se[order[0]])) if order else (0.0, math.inf)
    go = headroom > needed
    saved = trials_skipped * (full_trial_seconds or 0.0)
    figures = (f"headroom {headroom:+.4f} (the additive fit's best of {len(order)} budget vectors - uniform, from "
               f"{len(scores)} screening vectors and {len(uniform_scores)} uniform seeds), needed {needed:.4f} "
               f"({z:.2f} x its se {needed / z if z else 0.0:.4f}: go_z {config.go_z:g} widened for the best of "
               f"{fit.contrasts} directions; noise sd {fit.noise:.4f})")
    return GoDecision(go, "auto", f"go: {figures}" if go else f"no-go: {figures}", fit.noise, headroom, needed,
                      list(uniform_scores), list(scores), cheap_seconds, full_trial_seconds, 0 if go else trials_skipped,
                      0.0 if go else saved, cheap, [pool[i] for i in order[:finalists]])


def earlier_line(earlier: list[dict] | None) -> str:
    """What the bank says of earlier tasks' screens on the same model and pruning ('' without any): how many
    showed headroom beyond their noise, each task's figures in the decision's JSON."""
    if not earlier:
        return ""
    went = [e["task"] for e in earlier if e["go"]]
    return (f"; earlier tasks on this model and pruning: {len(went)} of {len(earlier)} screens showed headroom beyond "
            f"their noise" + (f" ({', '.join(went)})" if went else ""))


def decision_line(decision: GoDecision) -> str:
    """The one terminal line that says what was decided, with its two figures and what was not spent, and what
    earlier tasks' screens on this model said (earlier_line)."""
    earlier = earlier_line(decision.earlier)
    if decision.go:
        return f"go/no-go: {decision.reason}; the search runs{earlier}"
    saved = (f"; about {decision.seconds_not_spent:,.0f} s of recovery not spent ({decision.trials_skipped} trials "
             f"x {decision.full_trial_seconds:,.1f} s)" if decision.full_trial_seconds else "")
    return f"go/no-go: {decision.reason}; search skipped, uniform LoRA registered{saved}{earlier}"
