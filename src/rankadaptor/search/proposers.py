"""The proposers other than the surrogate (`search.proposer`): Optuna's TPE and random sampling under the budget.

search.loop.propose is the one entry point: it runs the paper's surrogate itself and, for tpe and random, the
rules here, each returning a full rank vector. All three see the same measured trials and keep the same budget
rule (search.sampling's, the job's `search.budget`), propose only vectors not measured yet, and are
deterministic for the trials and `search.seed` (seeded from the seed and the trial count, so a rerun proposes
the same vector). Which is the default is decided by the equal-cost replay (benchmarks/search/search_replay.py
--cost, benchmarks/RESULTS.md). Only the surrogate chooses by its prediction, so only its search stops by
prediction error (search.loop.converged); tpe and random run max_iterations trials.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import numpy as np

from rankadaptor import widths
from rankadaptor.errors import UserError, check
from rankadaptor.search.config import SearchConfig
from rankadaptor.search.sampling import nearest, sample_rank_vectors, searched_indices
from rankadaptor.trial import Observation
from rankadaptor.widths import lora_parameters

MAX_ASKS = 200  # TPE suggestions (over budget or measured already) refused before proposer tpe gives up


def random_vector(measured: list[Observation], config: SearchConfig, cost_per_rank: list[int]) -> list[int]:
    """Random sampling under the budget: one of sample_rank_vectors' purely random draws (no local mutations,
    over-budget draws repaired the same way) that was not measured yet, chosen at random."""
    rng = np.random.default_rng([config.seed, len(measured)])
    samples = sample_rank_vectors(dataclasses.replace(config, local_fraction=0.0), cost_per_rank, rng)
    seen = {tuple(o.rank_vector) for o in measured}
    fresh = np.flatnonzero([tuple(row) not in seen for row in samples.tolist()])
    check(len(fresh) > 0, f"all {len(samples)} sampled rank vectors were measured already: the search space "
                          f"({len(seen)} trials) is exhausted; stop or widen candidates/searched_layers")
    return [int(r) for r in samples[int(rng.choice(fresh))]]


def tpe_vector(measured: list[Observation], config: SearchConfig, cost_per_rank: list[int],
               pool: np.ndarray | None = None) -> list[int]:
    """Optuna's TPE suggestion for the next rank vector. The study is rebuilt from the measured trials
    (one categorical per searched layer over config.candidates, the other layers at fixed_rank; a trial whose
    ranks lie outside that space, e.g. LoSA's, is left out) and the sampler seeded from (seed, trial count).
    A suggestion over the budget or measured already is told FAIL and asked again, at most MAX_ASKS times.

    With `pool` (vectors [M, L], every layer searched: a replay over a measured pool), each layer's choices are
    the pool's ranks of that layer and the suggestion is snapped to the nearest unmeasured pool vector (L1 over
    ranks, ties broken at random): a replay can only measure what the pool holds."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    config.validate()
    layers = len(pool[0]) if pool is not None else len(cost_per_rank)
    searched = np.arange(layers) if pool is not None else searched_indices(config, layers)
    choices = ([sorted({int(r) for r in pool[:, i]}) for i in searched] if pool is not None
               else [sorted(config.candidates)] * len(searched))
    space = {f"r{i}": CategoricalDistribution(c) for i, c in zip(searched, choices)}
    seen = {tuple(o.rank_vector) for o in measured}
    seed = int(np.random.SeedSequence([config.seed, len(measured)]).generate_state(1)[0])
    with _quiet(optuna):
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=config.tpe_startup))
        for o in measured:
            params = {f"r{i}": int(o.rank_vector[i]) for i in searched}
            if len(o.rank_vector) == layers and all(params[f"r{i}"] in c for i, c in zip(searched, choices)):
                study.add_trial(create_trial(params=params, distributions=space, value=float(o.score)))
        if pool is not None:
            trial = study.ask(space)
            want = np.asarray([trial.params[f"r{i}"] for i in searched])
            index = nearest(pool, want, np.asarray([tuple(v) in seen for v in pool.tolist()]),
                            np.random.default_rng(seed))
            check(index is not None, f"every one of the {len(pool)} pool vectors was measured")
            return [int(r) for r in pool[index]]
        budget = widths.budget(cost_per_rank, config.budget)
        for _ in range(MAX_ASKS):
            trial = study.ask(space)
            vector = [config.fixed_rank] * layers
            for i in searched:
                vector[i] = int(trial.params[f"r{i}"])
            if lora_parameters(vector, cost_per_rank) <= budget and tuple(vector) not in seen:
                return vector
            study.tell(trial, state=TrialState.FAIL)
    raise UserError(f"proposer tpe found no new rank vector within the budget of {budget} LoRA parameters in "
                    f"{MAX_ASKS} suggestions ({len(measured)} trials measured); use proposer surrogate or random, or "
                    "widen the budget, candidates or searched_layers")


@contextlib.contextmanager
def _quiet(optuna) -> Iterator[None]:
    """Optuna's INFO lines (a study created per proposal) off for the call, its verbosity restored after."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)
