"""Go/no-go: whether a rank search can pay, decided from cheap trials before the expensive part.

A search can only find what lies beyond the trial noise. The cheap trials measure both: uniform LoRA at
several seeds (the noise: their sd) and a few random budget vectors (the headroom: the best of them minus
uniform's mean). The search runs only if the headroom exceeds go_z standard errors of that difference; else
uniform is registered and the trials the search would have run are not paid for. Pure functions: the
measuring is the go step's (steps.model.go_check), the policy's inputs are plain numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rankadaptor.errors import check
from rankadaptor.search.config import SearchConfig
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


def decision_line(decision: GoDecision) -> str:
    """The one terminal line that says what was decided, with its two figures and what was not spent."""
    if decision.go:
        return f"go/no-go: {decision.reason}; the search runs"
    saved = (f"; about {decision.seconds_not_spent:,.0f} s of recovery not spent ({decision.trials_skipped} trials "
             f"x {decision.full_trial_seconds:,.1f} s)" if decision.full_trial_seconds else "")
    return f"go/no-go: {decision.reason}; search skipped, uniform LoRA registered{saved}"
