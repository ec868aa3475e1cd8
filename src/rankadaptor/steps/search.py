"""The search's steps, which load no model: meta-pretraining, propose, update and the loop gate.

Each reads the search-state artifact (the search plus the trial context computed once by meta_pretrain) and
writes the next one; trials go to the bank as they are measured.
"""

from __future__ import annotations

from rankadaptor import bank, storage
from rankadaptor.config import from_dict, to_dict
from rankadaptor.job import JobConfig
from rankadaptor.search import Proposal, SearchState, converged, propose as next_proposal, update as record_score
from rankadaptor.surrogate import adapt, meta_pretrain as reptile, new_surrogate
from rankadaptor.trial import load_state, record, save_state, starting_trials, trial_context, trial_key


def _read(uri: str, name: str):
    return storage.read_json(storage.local_dir(uri) / name)


def meta_pretrain(job: JobConfig, structure_uri: str, data_uri: str, baselines_uri: str, output_uri: str) -> dict:
    """The search's starting state: a surrogate meta-pretrained on every other task's trials in the bank,
    then adapted to the target's trials on this model, data and recovery setting: the starting trials
    (trial.starting_trials, banked here first: the uniform anchor ties the surrogate to the target's score
    level) and any trial an earlier run measured whose adapter still exists (a rerun continues where it stopped)."""
    context = trial_context(structure_uri, data_uri)
    sources = [o for o in bank.load_observations(job.bank.experiment, tracking_uri=job.tracking_uri())
               if o.task != job.target_task]
    surrogate = new_surrogate(job.surrogate_config(), job.search.candidates, context.num_layers,
                              len(context.layer_features[0]))
    if sources:
        surrogate = reptile(surrogate, sources)
    uniform = [job.baseline_rank] * context.num_layers
    baselines = _read(baselines_uri, "baselines.json")
    for name in starting_trials(job):  # the uniform anchor (masked for sparse jobs), then LoSA's ranks if asked
        record(job, context, job.target_task, baselines[name].get("rank_vector") or uniform,
               baselines[name]["select"]["scores"][job.target_task], "baseline",
               adapter_uri=storage.join(baselines_uri, name))
    key = trial_key(job, context, job.target_task, "select", uniform)
    rows = bank.load_observations(job.bank.experiment, base_checksum=key.base_checksum, task=job.target_task,
                                  split="select", data_checksum=key.data_checksum, recovery=key.recovery,
                                  seed=key.seed, task_checksum=key.task_checksum, tracking_uri=job.tracking_uri())
    measured = [o for o in rows if o.artifact and storage.exists(o.artifact)]
    state = SearchState(job.target_task, adapt(surrogate, measured, job.target_task), context.cost_per_rank,
                        context.layer_features, measured)
    save_state(state, context, output_uri)
    return {"source_observations": len(sources), "source_tasks": sorted({o.task for o in sources}),
            "target_trials": len(measured)}


def propose(job: JobConfig, state_uri: str, output_uri: str) -> dict:
    state, context = load_state(state_uri)
    proposal = to_dict(next_proposal(state, job.search_config(context.cost_per_rank)))
    with storage.writing_dir(output_uri) as out:
        storage.write_json_atomic(out / "proposal.json", proposal)
    return proposal


def proposal_vector(proposal_uri: str) -> list[int]:
    return _read(proposal_uri, "proposal.json")["rank_vector"]


PROGRESS = "progress: "  # a step's line the local runner shows on the terminal (the rest goes to the log)


def update(job: JobConfig, state_uri: str, proposal_uri: str, metrics_uri: str, adapter_uri: str,
           output_uri: str) -> dict:
    """Bank the trial, adapt the surrogate online, write the next search state."""
    state, context = load_state(state_uri)
    proposal = from_dict(Proposal, _read(proposal_uri, "proposal.json"))
    metrics = _read(metrics_uri, "metrics.json")
    score = metrics["scores"][job.target_task]
    seconds = _read(adapter_uri, "train_metrics.json")["seconds"] + metrics["seconds"]
    new_state, outcome = record_score(state, proposal, score, job.search_config(context.cost_per_rank),
                                      cost=seconds, artifact=adapter_uri)
    record(job, context, job.target_task, proposal.rank_vector, score, "search", predicted=proposal.predicted,
           seconds=seconds, adapter_uri=adapter_uri)
    save_state(new_state, context, output_uri)
    print(f"{PROGRESS}{job.target_task} trial {len(new_state.measured())}: ranks {proposal.rank_vector}, predicted "
          f"{proposal.predicted:.4f}, measured {score:.4f}, best so far {outcome.best.score:.4f}", flush=True)
    return {"converged": outcome.converged, "abs_error": outcome.abs_error, "score": score,
            "best": outcome.best.score}


def gate(job: JobConfig, state_uri: str, iteration: int) -> bool:
    """The loop gate after search iteration `iteration`: stop when the search converged or when the job's
    max_iterations trials are done (the compiled loop's own cap may be higher)."""
    state, context = load_state(state_uri)
    return converged(state, job.search_config(context.cost_per_rank)) or iteration >= job.search.max_iterations
