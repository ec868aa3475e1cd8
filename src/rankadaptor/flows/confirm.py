"""The confirmation's policy: which full trials re-measure the search's finalists at more seeds (search.confirm),
and their seed means from the bank. The measuring is evaluate-best's (steps.model.confirm_finalists); a trial
banked by an earlier attempt is reused, never paid again."""

from __future__ import annotations

from typing import Any

from rankadaptor.flows.trials import trial_key
from rankadaptor.infra.bank import find_trial
from rankadaptor.job import JobConfig
from rankadaptor.search.confirm import finalist_vectors, seed_table
from rankadaptor.trial import Observation, TrialContext, TrialKey


def _finalists(job: JobConfig, context: TrialContext, trials: list[Observation]) -> list[list[int]]:
    """search.confirm.finalist_vectors of the target's trials; none with confirm_seeds 1 (nothing to re-measure)."""
    if job.search.confirm_seeds < 2:
        return []
    return finalist_vectors(trials, [job.baseline_rank] * context.num_layers, job.search.confirm_top)


def confirm_plan(job: JobConfig, context: TrialContext, trials: list[Observation]) -> list[TrialKey]:
    """The full trials the confirmation needs: each finalist (search.confirm.finalist_vectors of the target's
    trials) at the seeds after the job's, up to search.confirm_seeds seeds (the job's seed is the search's own
    trial)."""
    return [trial_key(job, context, job.target_task, "select", v, seed=job.seed + i)
            for v in _finalists(job, context, trials) for i in range(1, job.search.confirm_seeds)]


def confirmed_table(job: JobConfig, context: TrialContext,
                    trials: list[Observation]) -> tuple[list[dict[str, Any]], list[float]]:
    """The finalists' seed table (search.confirm.seed_table): the job seed's score from the search's trials, the
    other seeds' from the bank (confirm_plan's keys, measured first); with it, those banked trials' seconds
    (whichever attempt paid them: the report's cost row)."""
    scores, seconds = {tuple(o.rank_vector): [o.score] for o in trials}, []
    for key in confirm_plan(job, context, trials):
        row = find_trial(key.id, job.bank.experiment, job.tracking_uri())
        if row is not None:
            scores[tuple(key.rank_vector)].append(float(row["score"]))
            if row.get("cost") is not None:
                seconds.append(row["cost"])
    return seed_table(_finalists(job, context, trials), scores), seconds
