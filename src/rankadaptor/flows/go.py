"""The go/no-go step's policy: which cheap trials it measures (the screening design), what the bank already holds
of them, what one full trial costs, and the decision (search.go.decide_screen) from those figures. The measuring is the step's
(steps.model.go_check); a cheap trial banked by any earlier run is reused, never paid again."""

from __future__ import annotations

import dataclasses

import numpy as np

from rankadaptor.flows.baselines import baseline_seconds
from rankadaptor.flows.trials import starting_trials, trial_key
from rankadaptor.infra import bank
from rankadaptor.job import JobConfig
from rankadaptor.search.go import GoDecision, decide_screen, screening_vectors
from rankadaptor.search.sampling import sample_rank_vectors
from rankadaptor.trial import Observation, TrialContext, TrialKey, fidelity


def cheap_fidelity(job: JobConfig) -> str:
    return fidelity(job.search.cheap_fraction)


def cheap_plan(job: JobConfig, context: TrialContext) -> list[TrialKey]:
    """The cheap trials the decision needs (target task, select rows, short fidelity): uniform at go_seeds
    seeds (the job's seed first), then go_candidates screening vectors (search.go.screening_vectors) at the job's
    seed."""
    uniform = [job.baseline_rank] * context.num_layers
    cheap = cheap_fidelity(job)
    keys = [trial_key(job, context, job.target_task, "select", uniform, seed=job.seed + i, fidelity=cheap)
            for i in range(job.search.go_seeds)]
    design = screening_vectors(job.search_config(context.cost_per_rank), context.cost_per_rank, uniform,
                               job.search.go_candidates)
    return keys + [trial_key(job, context, job.target_task, "select", v, fidelity=cheap) for v in design]


def screen_candidates(job: JobConfig, context: TrialContext, measured: list[list[int]]) -> list[list[int]]:
    """The budget vectors the screen's fit may call best: random ones whose ranks stay within the measured
    vectors' range (the fit is not trusted beyond it), the measured ones included by decide_screen."""
    config = job.search_config(context.cost_per_rank)
    ranks = [r for v in measured for r in v] or [job.baseline_rank]
    sampler = dataclasses.replace(config, local_fraction=0.0, num_samples=2000,
                                  candidates=[r for r in config.candidates if min(ranks) <= r <= max(ranks)])
    return sample_rank_vectors(sampler, context.cost_per_rank, np.random.default_rng([job.seed, 12])).tolist()


def full_trial_seconds(job: JobConfig, baselines_uri: str, evaluation_seconds: float = 0.0) -> float | None:
    """What one full trial costs: the uniform anchor's recovery (flows.baselines.baseline_seconds) plus a trial's
    evaluation (target task, select rows: measured on the cheap trials, which evaluate the same way)."""
    recovery = baseline_seconds(baselines_uri, starting_trials(job)[0])
    return None if recovery is None else recovery + evaluation_seconds


def trials_a_search_runs(job: JobConfig) -> int:
    """The full trials a search would pay for after the go/no-go: the bootstrap trials and the loop's."""
    return job.bootstrap_trials + job.search.max_iterations


def decide_from_bank(job: JobConfig, context: TrialContext, full_seconds: float | None) -> GoDecision:
    """The decision from every cheap target trial the bank holds for this model, pruning, data, recovery and
    task rows (any seed: earlier runs' cheap trials count too, whatever design chose them): uniform's rows and
    the others all enter the screen's additive fit (search.go.decide_screen); with it, what the bank says of
    earlier tasks' screens on this model and pruning (earlier_screens)."""
    uniform = [job.baseline_rank] * context.num_layers
    config = job.search_config(context.cost_per_rank)
    if config.go != "auto":  # always / never: no cheap trials, no fit
        return decide_screen(config, uniform, [], [], [], [], trials_a_search_runs(job), full_seconds)
    key = trial_key(job, context, job.target_task, "select", uniform, fidelity=cheap_fidelity(job))
    rows = bank.load_observations(
        job.bank.experiment, base_checksum=key.base_checksum, pruning=key.pruning, split=key.split,
        data_checksum=key.data_checksum, recovery=key.recovery, fidelity=key.fidelity, tracking_uri=job.tracking_uri())
    own = bank.load_observations(
        job.bank.experiment, base_checksum=key.base_checksum, pruning=key.pruning, task=key.task, split=key.split,
        data_checksum=key.data_checksum, recovery=key.recovery, task_checksum=key.task_checksum,
        fidelity=key.fidelity, tracking_uri=job.tracking_uri())
    return dataclasses.replace(screen(job, context, own, trials_a_search_runs(job), full_seconds),
                               earlier=earlier_screens(job, context, [o for o in rows if o.task != job.target_task]))


def screen(job: JobConfig, context: TrialContext, rows: list[Observation], trials_skipped: int = 0,
           full_seconds: float | None = None) -> GoDecision:
    """The screen's decision (search.go.decide_screen) from one task's cheap rows: uniform's and the others'."""
    uniform = [job.baseline_rank] * context.num_layers
    vectors = [o.rank_vector for o in rows if o.rank_vector != uniform]
    return decide_screen(job.search_config(context.cost_per_rank), uniform,
                         [o.score for o in rows if o.rank_vector == uniform], vectors,
                         [o.score for o in rows if o.rank_vector != uniform], screen_candidates(job, context, vectors),
                         trials_skipped, full_seconds, sum(o.cost or 0.0 for o in rows))


def earlier_screens(job: JobConfig, context: TrialContext, rows: list[Observation]) -> list[dict]:
    """Every other task's screen the bank can refit on this model, pruning, data and recovery (cheap rows with
    uniform at go_seeds seeds or more: a go/no-go ran for it): its decision's figures. Reported beside the
    decision, not folded into it: another task's scores are on their own scale and its headroom does not
    transfer; it tells a person whether this model has rewarded a search before."""
    uniform = [job.baseline_rank] * context.num_layers
    tasks = sorted({o.task for o in rows})
    result = []
    for task in tasks:
        mine = [o for o in rows if o.task == task]
        if sum(o.rank_vector == uniform for o in mine) >= job.search.go_seeds:
            decision = screen(job, context, mine)
            result.append({"task": task, "go": decision.go, "headroom": decision.headroom, "needed": decision.needed})
    return result
