"""The search's options: rank candidates, budget, stopping rule; the one place their defaults live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rankadaptor.config import option
from rankadaptor.errors import check
from rankadaptor.trial import CHEAP_FRACTION
from rankadaptor.widths import BASELINE_RANK, RANK_CANDIDATES

GO_MODES = ("auto", "always", "never")  # search.go: decide from cheap trials, search regardless, uniform only
PROPOSERS = ("surrogate", "tpe", "random")  # search.proposer: the rules search.proposers implements


@dataclass
class SearchConfig:
    candidates: list[int] = option(RANK_CANDIDATES, "LoRA ranks a searched layer may take")
    num_samples: int = option(10000, "rank vectors sampled and scored by the surrogate per proposal")
    budget: int | None = option(None, "most LoRA parameters a rank vector may train; default: uniform "
                                        f"rank {BASELINE_RANK} on every layer (a job: its recover.rank)")
    searched_layers: list[int] | None = option(
        None, "0-based layers whose rank is searched (default all); the others get fixed_rank")
    fixed_rank: int = option(BASELINE_RANK, "rank of the layers that are not searched (the paper keeps them at 8)")
    local_fraction: float = option(0.5, "share of num_samples drawn as mutations (a few searched layers redrawn) "
                                        "of the best measured vectors; 0 = the paper's purely random sampling")
    kappa: float = option(0.0, "exploration bonus: pick by mean + kappa * ensemble std (0 = the paper's greedy pick)")
    threshold: float = option(0.005, "converged when the RMS prediction error of the last `patience` trials is "
                                     "< threshold, in score units; set it to the trial noise (seed-to-seed sd)")
    patience: int = option(3, "trials whose prediction errors must all count towards convergence")
    max_iterations: int = option(6, "most trials (fine-tune + evaluate) one search runs")
    seed: int = option(0, "seed of the sampler")
    proposer: str = option("surrogate", f"which rule picks the next trial, one of {PROPOSERS}: surrogate = the "
                                        "paper's performance model (the default: it wins the equal-cost replay, "
                                        "benchmarks/RESULTS.md); tpe = Optuna's TPE, one categorical per searched "
                                        "layer; random = a random vector under the budget. With tpe or random the "
                                        "surrogate still predicts each trial (for the report), but convergence by "
                                        "prediction error does not apply: the search runs max_iterations trials")
    tpe_startup: int = option(3, "trials (the uniform anchor included) before proposer tpe models the scores; "
                                 "before that it samples at random (Optuna's n_startup_trials)")
    go: str = option("auto", f"whether the search runs, one of {GO_MODES}: auto = only if cheap trials (uniform at "
                             "go_seeds seeds, go_candidates screening vectors, at cheap_fraction of the recovery "
                             "steps) show headroom beyond the noise, else uniform is registered; always = search "
                             "regardless; never = uniform only, no cheap trials")
    cheap_fraction: float = option(CHEAP_FRACTION, "share of the recovery steps a cheap (short) trial trains")
    go_candidates: int = option(4, "screening vectors the go/no-go measures at the cheap fidelity (each searched "
                                   "layer moved up or down by a two-level orthogonal array; at most "
                                   "2 x (2^ceil(log2(layers + 1)) - 1) exist)")
    go_seeds: int = option(2, "seeds of uniform LoRA the go/no-go measures at the cheap fidelity (the noise)")
    go_step: int = option(2, "candidate steps a screening vector moves a layer up or down from uniform")
    go_z: float = option(2.0, "standard errors the predicted gain of the screen's best budget vector must exceed "
                              "for the search to run (widened for the best of the screen's directions)")
    confirm_top: int = option(2, "searched vectors (the best by select score) re-measured with uniform at "
                                 "confirm_seeds seeds after the search; the best is chosen by seed mean "
                                 "(search.confirm); 0 = the best single trial")
    confirm_seeds: int = option(2, "seeds each finalist is measured at, the job's seed first (1 = no "
                                   "re-measuring: the best single trial)")

    def validate(self) -> None:
        check(len(self.candidates) >= 1 and all(1 <= r <= 4096 for r in self.candidates),
              f"candidates={self.candidates!r} must be a non-empty list of ranks in [1, 4096]")
        check(len(set(self.candidates)) == len(self.candidates), f"candidates={self.candidates!r} has duplicates")
        check(1 <= self.num_samples <= 1_000_000, f"num_samples={self.num_samples} must be in [1, 1000000]")
        check(self.budget is None or self.budget > 0, f"budget={self.budget} must be a positive parameter count or null")
        if self.searched_layers is not None:
            check(len(self.searched_layers) >= 1 and min(self.searched_layers) >= 0
                  and len(set(self.searched_layers)) == len(self.searched_layers),
                  f"searched_layers={self.searched_layers!r} must be distinct non-negative layer indices")
        check(0 <= self.local_fraction <= 1, f"local_fraction={self.local_fraction} must be in [0, 1]")
        check(1 <= self.fixed_rank <= 4096, f"fixed_rank={self.fixed_rank} must be in [1, 4096]")
        check(math.isfinite(self.kappa) and self.kappa >= 0, f"kappa={self.kappa} must be a finite number >= 0")
        check(math.isfinite(self.threshold) and self.threshold > 0,
              f"threshold={self.threshold} can never be met: |predicted - measured| < threshold needs a finite "
              "threshold > 0 (in score units, e.g. 0.005)")
        check(1 <= self.max_iterations <= 10_000, f"max_iterations={self.max_iterations} must be in [1, 10000]")
        check(1 <= self.patience <= 100, f"patience={self.patience} must be in [1, 100]")
        check(self.proposer in PROPOSERS, f"proposer={self.proposer!r} is not accepted; use one of {PROPOSERS}")
        check(1 <= self.tpe_startup <= 1000, f"tpe_startup={self.tpe_startup} must be in [1, 1000]")
        check(self.go in GO_MODES, f"go={self.go!r} is not accepted; use one of {GO_MODES}")
        check(0 < self.cheap_fraction < 1, f"cheap_fraction={self.cheap_fraction} must be in (0, 1): a share of "
                                           "the recovery steps")
        check(1 <= self.go_candidates <= 100, f"go_candidates={self.go_candidates} must be in [1, 100]")
        check(2 <= self.go_seeds <= 20, f"go_seeds={self.go_seeds} must be in [2, 20] (a noise needs two seeds)")
        check(1 <= self.go_step <= 100, f"go_step={self.go_step} must be in [1, 100] (candidate steps)")
        check(math.isfinite(self.go_z) and self.go_z >= 0, f"go_z={self.go_z} must be a finite number >= 0")
        check(0 <= self.confirm_top <= 20, f"confirm_top={self.confirm_top} must be in [0, 20] (searched finalists)")
        check(1 <= self.confirm_seeds <= 20, f"confirm_seeds={self.confirm_seeds} must be in [1, 20]")
