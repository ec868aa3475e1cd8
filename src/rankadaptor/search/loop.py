"""RankAdaptor's search: propose a rank vector under a LoRA-parameter budget, measure it, update, repeat.

The paper's Iteration phase samples many rank vectors from the candidate set, lets the performance model
pick the best, really fine-tunes and evaluates it, feeds the result back, and stops (Convergence) when
the prediction for the chosen vector is within a threshold of its measurement. `propose` and `update` are
separate plain functions over a serialisable `SearchState` because the Kubeflow pipeline runs them as
separate steps with the trial in between; `run_loop` composes them for local use and the benchmarks.
`search.proposer` picks who proposes: this surrogate (the default), or Optuna TPE or random sampling under the
same budget (search.proposers), the surrogate then only predicting. A state may carry finalists (the go/no-go
screen's best vectors, search.go.decide_screen): they are proposed first, best first, each once, then the proposer.

Convergence (`converged`) is noise-aware: one prediction that lands within the threshold can be luck
when a trial's seed-to-seed noise is as large as the effect being searched for, so the search stops only
when the prediction error over the last `patience` trials (root mean square) is within the threshold.
Set the threshold to the measured seed-to-seed sd of a trial's score (benchmarks/RESULTS.md).

Budget: a rank vector r trains sum_i r_i * c_i LoRA parameters, c_i being layer i's cost per unit of
rank (sum over its 7 projections of in + out features). The default budget is what LoRA at rank 8 on
every layer of the same model trains, the paper's "same level as standard LoRA" (search.sampling draws under it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rankadaptor import config as cfg
from rankadaptor.config import option
from rankadaptor.errors import UserError, check
from rankadaptor.infra import storage
from rankadaptor.search import proposers
from rankadaptor.search.config import SearchConfig
from rankadaptor.search.sampling import sample_rank_vectors
from rankadaptor.search.surrogate import (
    SurrogateState,
    adapt,
    predict,
    read_surrogate_files,
    write_surrogate_files,
)
from rankadaptor.trial import Observation, history
from rankadaptor.widths import lora_parameters

SEARCH_FILE = "search.json"
SURROGATE_DIR = "surrogate"
NUM_PARENTS = 3  # best measured vectors that local samples mutate


@dataclass
class Proposal:
    rank_vector: list[int] = option([], "full rank vector, one rank per decoder layer")
    predicted: float = option(float("nan"), "surrogate's predicted score (ensemble mean)")
    predicted_std: float = option(0.0, "ensemble spread of the prediction")
    trainable_params: int = option(0, "LoRA parameters this rank vector trains")


@dataclass
class Outcome:
    converged: bool
    abs_error: float
    best: Observation  # best measured trial of the task so far


@dataclass
class SearchState:
    """What one search carries between steps: the surrogate and the target task's measured trials."""

    task: str
    surrogate: SurrogateState
    cost_per_rank: list[int]  # LoRA parameters per unit of rank of each decoder layer (modeling.lora_cost_per_rank)
    layer_features: list[list[float]] | None = None  # the pruned model's structure (surrogate.structure_features)
    observations: list[Observation] = dataclasses.field(default_factory=list)
    finalists: list[list[int]] = dataclasses.field(default_factory=list)  # the screen's, best first: proposed first

    def measured(self) -> list[Observation]:
        return [o for o in self.observations if o.task == self.task]


def pending_finalists(state: SearchState) -> list[list[int]]:
    """The finalists not measured yet (at full fidelity: a state holds only full trials), best first. A rerun's
    state is rebuilt from the bank, so a finalist an earlier run measured is never proposed again."""
    measured = {tuple(o.rank_vector) for o in state.measured()}
    return [list(v) for v in state.finalists if tuple(v) not in measured]


def _rng(config: SearchConfig, state: SearchState) -> np.random.Generator:
    """Seeded by the config seed and the trial count: propose is deterministic and keeps no RNG state."""
    return np.random.default_rng([config.seed, len(state.measured())])


def propose(state: SearchState, config: SearchConfig) -> Proposal:
    """The next rank vector to measure, by config.proposer. surrogate (the paper's): the best by mean + kappa * std
    among num_samples budget-respecting vectors (random, and mutations of the best measured ones) not measured
    yet. tpe or random (search.proposers): their vector, with the surrogate's prediction of it (the surrogate is
    adapted to every trial whichever rule proposes, so the terminal, the report's predicted-vs-measured plot
    and Kendall tau judge the same model for every proposer; only the surrogate's search stops by it). Before any
    of them: the state's pending finalists, in order, each with the surrogate's prediction."""
    config.validate()
    queued = pending_finalists(state)
    if queued:
        return propose_from(state, config, np.asarray(queued[:1]))
    if config.proposer != "surrogate":
        rule = proposers.tpe_vector if config.proposer == "tpe" else proposers.random_vector
        return propose_from(state, config, np.asarray([rule(state.measured(), config, state.cost_per_rank)]))
    ranked = sorted(state.measured(), key=lambda o: -o.score)
    parents = [o.rank_vector for o in ranked[:NUM_PARENTS]]
    samples = sample_rank_vectors(config, state.cost_per_rank, _rng(config, state), parents)
    measured = {tuple(o.rank_vector) for o in ranked}
    fresh = np.asarray([tuple(row) not in measured for row in samples.tolist()], bool)
    check(bool(fresh.any()), f"all {len(samples)} sampled rank vectors were measured already: the search space "
                             f"({len(measured)} trials) is exhausted; stop or widen candidates/searched_layers")
    return propose_from(state, config, samples[fresh])


def propose_from(state: SearchState, config: SearchConfig, candidates: np.ndarray) -> Proposal:
    """The best of given unmeasured rank vectors [M, L] by mean + kappa * std (propose's last step; a
    replay over a measured pool calls it with the pool's unmeasured vectors)."""
    check(len(candidates) > 0, "no candidate rank vectors to propose from")
    mean, std = predict(state.surrogate, candidates, state.layer_features, state.task)
    best = int(np.argmax(mean + config.kappa * std))
    vector = [int(r) for r in candidates[best]]
    return Proposal(vector, float(mean[best]), float(std[best]), lora_parameters(vector, state.cost_per_rank))


def converged(state: SearchState, config: SearchConfig) -> bool:
    """Whether the search may stop: at least `patience` searched trials, and the root mean square of
    |predicted - measured| over the last `patience` of them is below the threshold (the trial noise).
    One lucky prediction after poor ones is not convergence; the baseline anchor (no prediction) is not
    counted. Only the surrogate proposer chooses by that prediction: with tpe or random it never converges
    (search.proposers), the search runs max_iterations trials."""
    if config.proposer != "surrogate":
        return False
    predicted = [o for o in state.measured() if o.predicted is not None]
    if len(predicted) < config.patience:
        return False
    errors = np.asarray([o.predicted - o.score for o in predicted[-config.patience:]], np.float64)
    return bool(np.sqrt(np.mean(errors ** 2)) < config.threshold)


def stop_reason(state: SearchState, config: SearchConfig) -> str:
    """Why a finished search stopped, in one plain phrase (the report and the terminal say it): the
    convergence rule met, or max_iterations search trials done without it."""
    predicted = [o for o in state.measured() if o.predicted is not None]
    if not predicted:
        return "no search trial ran"
    window = predicted[-config.patience:]
    rms = float(np.sqrt(np.mean([(o.predicted - o.score) ** 2 for o in window])))
    error = f"RMS prediction error of the last {len(window)} trials {rms:.4f}"
    if converged(state, config):
        return f"threshold met: {error} < threshold {config.threshold:.4f}"
    if config.proposer != "surrogate":
        return (f"max_iterations reached: {len(predicted)} search trials (max_iterations={config.max_iterations}); "
                f"proposer {config.proposer}: convergence by prediction error does not apply (the surrogate's "
                f"{error}, reported only)")
    return (f"max_iterations reached: {len(predicted)} search trials (max_iterations={config.max_iterations}), "
            f"{error} >= threshold {config.threshold:.4f}")


def update(state: SearchState, proposal: Proposal, score: float, config: SearchConfig,
           cost: float | None = None, artifact: str | None = None) -> tuple[SearchState, Outcome]:
    """Record the measured score of a proposal, adapt the surrogate online, and say whether the search
    converged (see `converged`) and which trial is best so far."""
    config.validate()
    vector = [int(r) for r in proposal.rank_vector]
    check(len(vector) == len(state.cost_per_rank),
          f"rank vector has {len(vector)} layers; this search's model has {len(state.cost_per_rank)}")
    check(math.isfinite(score), f"measured score={score!r} must be a finite number")
    check(vector not in [o.rank_vector for o in state.measured()],
          f"rank vector {vector} was measured already for task {state.task!r}; a search never re-runs a trial")
    observation = Observation(state.task, vector, float(score), state.layer_features, cost, proposal.predicted,
                              artifact)
    observations = [*state.observations, observation]
    new_state = dataclasses.replace(state, observations=observations,
                                    surrogate=adapt(state.surrogate, observations, state.task))
    abs_error = abs(proposal.predicted - float(score))
    best = max(new_state.measured(), key=lambda o: o.score)
    return new_state, Outcome(converged(new_state, config), abs_error, best)


def run_loop(trial_fn: Callable[[list[int]], float], state: SearchState, config: SearchConfig,
             progress: bool = True) -> tuple[SearchState, list[dict[str, Any]]]:
    """Propose (by config.proposer) -> trial -> update until converged or max_iterations; returns the final state
    and this loop's trials as trial.history rows (iteration, rank_vector, predicted, measured, abs_error, best, parameters)."""
    config.validate()
    start_count = len(state.observations)
    bar = tqdm(range(1, config.max_iterations + 1), desc="rank search", disable=not progress)
    for _ in bar:
        proposal = propose(state, config)
        start = time.perf_counter()
        score = float(trial_fn(list(proposal.rank_vector)))
        state, outcome = update(state, proposal, score, config, cost=time.perf_counter() - start)
        bar.set_postfix(best=f"{outcome.best.score:.4g}", abs_error=f"{outcome.abs_error:.3g}")
        if outcome.converged:
            break
    return state, history(state.observations[start_count:], state.cost_per_rank)


def save_search(state: SearchState, uri: str) -> None:
    """One artifact for a search in progress: surrogate/ (as save_surrogate writes it) + search.json."""
    with storage.writing_dir(uri) as directory:
        (directory / SURROGATE_DIR).mkdir()
        write_surrogate_files(state.surrogate, directory / SURROGATE_DIR)
        storage.write_json_atomic(directory / SEARCH_FILE, {
            "task": state.task, "cost_per_rank": state.cost_per_rank, "layer_features": state.layer_features,
            "observations": [cfg.to_dict(o) for o in state.observations], "finalists": state.finalists})


def load_search(uri: str) -> SearchState:
    directory: Path = storage.local_dir(uri)
    check((directory / SEARCH_FILE).is_file(), f"{uri!r} is not a search artifact: no {SEARCH_FILE}")
    meta = storage.read_json(directory / SEARCH_FILE)
    try:
        observations = [cfg.from_dict(Observation, o) for o in meta["observations"]]
    except UserError as e:
        raise UserError(f"search artifact {uri!r} holds a bad observation: {e}") from None
    return SearchState(meta["task"], read_surrogate_files(directory / SURROGATE_DIR, uri),
                       [int(c) for c in meta["cost_per_rank"]], meta["layer_features"], observations,
                       [[int(r) for r in v] for v in meta.get("finalists", [])])
