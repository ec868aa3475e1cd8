"""How a job's search starts and how each trial enters it: the policy the search steps only adapt."""

from __future__ import annotations

from rankadaptor.flows.baselines import baseline_seconds
from rankadaptor.flows.progress import progress
from rankadaptor.flows.trials import record, starting_trials, trial_key
from rankadaptor.infra import bank, storage
from rankadaptor.job import JobConfig
from rankadaptor.search.loop import Outcome, Proposal, SearchState, pending_finalists, update
from rankadaptor.search.surrogate import adapt, meta_pretrain, new_surrogate
from rankadaptor.trial import FULL, TrialContext


def screen_finalists(decision: dict | None) -> list[list[int]]:
    """What the search measures first: on a go, the go/no-go screen's finalists (go.json, best first); none on a
    no-go, without a screen (search.go always) or without a decision."""
    if not decision or not decision["go"]:
        return []
    return [[int(r) for r in v] for v in decision.get("finalists") or []]


def start_search(job: JobConfig, context: TrialContext, baselines: dict, baselines_uri: str,
                 pretrain: bool = True, finalists: list[list[int]] | None = None) -> tuple[SearchState, dict]:
    """The search's starting state: a surrogate meta-pretrained (unless not `pretrain`: a job whose go/no-go
    said no only registers uniform) on every other task's trials in the bank, at every fidelity (the bootstrap's
    short trials, other catalog tasks' go/no-go and search trials; search.surrogate.group_key keeps each
    fidelity's scores apart),
    then adapted to the target's trials on this model, data and recovery setting: the starting trials
    (flows.trials.starting_trials, banked here first: the uniform anchor ties the surrogate to the target's score
    level) and any trial an earlier run measured whose adapter still exists (a rerun continues where it stopped).
    finalists (screen_finalists): queued in the state, proposed first (search.loop.pending_finalists skips the
    measured ones, so a rerun pays none twice)."""
    sources = [o for o in bank.load_observations(job.bank.experiment, tracking_uri=job.tracking_uri())
               if o.task != job.target_task] if pretrain else []
    surrogate = new_surrogate(job.surrogate_config(), job.search.candidates, context.num_layers,
                              len(context.layer_features[0]))
    if sources:
        surrogate = meta_pretrain(surrogate, sources)
    uniform = [job.baseline_rank] * context.num_layers
    for name in starting_trials(job):  # the uniform anchor (masked for sparse jobs), then LoSA's ranks if asked
        vector = baselines[name].get("rank_vector") or uniform
        record(job, context, trial_key(job, context, job.target_task, "select", vector),
               baselines[name]["select"]["scores"][job.target_task], "baseline",
               seconds=baseline_seconds(baselines_uri, name), adapter_uri=storage.join(baselines_uri, name))
    key = trial_key(job, context, job.target_task, "select", uniform)
    rows = bank.load_observations(job.bank.experiment, base_checksum=key.base_checksum, task=job.target_task,
                                  split="select", data_checksum=key.data_checksum, recovery=key.recovery,
                                  seed=key.seed, task_checksum=key.task_checksum, fidelity=FULL,
                                  tracking_uri=job.tracking_uri())
    measured = [o for o in rows if o.artifact and storage.exists(o.artifact)]
    state = SearchState(job.target_task, adapt(surrogate, measured, job.target_task), context.cost_per_rank,
                        context.layer_features, measured, list(finalists or []))
    return state, {"source_observations": len(sources), "source_tasks": sorted({o.task for o in sources}),
                   "target_trials": len(measured), "finalists": len(pending_finalists(state))}


def add_trial(job: JobConfig, state: SearchState, context: TrialContext, proposal: Proposal, score: float,
              seconds: float, adapter_uri: str) -> tuple[SearchState, Outcome]:
    """Bank a measured proposal, adapt the surrogate online, and say so on the terminal."""
    new_state, outcome = update(state, proposal, score, job.search_config(context.cost_per_rank),
                                cost=seconds, artifact=adapter_uri)
    number = sum(o.predicted is not None for o in new_state.measured())  # trial.history's iteration
    finalist = (f" (the go/no-go screen's finalist {state.finalists.index(proposal.rank_vector) + 1} of "
                f"{len(state.finalists)})" if proposal.rank_vector in state.finalists else "")
    record(job, context, trial_key(job, context, job.target_task, "select", proposal.rank_vector), score, "search",
           predicted=proposal.predicted, seconds=seconds, adapter_uri=adapter_uri, number=number)
    progress(f"{job.target_task} search #{number}{finalist}: ranks {proposal.rank_vector}, predicted {proposal.predicted:.4f}, "
             f"measured {score:.4f}, best so far {outcome.best.score:.4f} (the uniform baseline counts)")
    return new_state, outcome
