"""The search's steps, which load no model: meta-pretraining, propose, update and the loop gate.

Each reads the search-state artifact (the search plus the trial context computed once by meta_pretrain) and
writes the next one; trials go to the bank as they are measured.
"""

from __future__ import annotations

from rankadaptor.config import from_dict, to_dict
from rankadaptor.flows.search import add_trial, screen_finalists, start_search
from rankadaptor.infra import storage
from rankadaptor.job import JobConfig
from rankadaptor.models.structure import trial_context
from rankadaptor.search.loop import (
    Proposal,
    converged,
)
from rankadaptor.search.loop import (
    propose as next_proposal,
)
from rankadaptor.search.state import load_state, save_state


GO_DECISION = "go.json"  # the go/no-go step's artifact (steps.model.go_check writes it; go_gate, meta_pretrain read)


def _read(uri: str, name: str):
    return storage.read_json(storage.local_dir(uri) / name)


def meta_pretrain(job: JobConfig, structure_uri: str, data_uri: str, baselines_uri: str, output_uri: str,
                  pretrain: bool = True, decision_uri: str | None = None) -> dict:
    """The search's starting state (flows.search.start_search), with the trial context, as one artifact;
    pretrain False (the go/no-go said no): the uniform anchor alone, no meta-pretraining. decision_uri: the
    go/no-go's decision, whose finalists (on a go) the search measures first."""
    context = trial_context(structure_uri, data_uri)
    finalists = screen_finalists(_read(decision_uri, GO_DECISION) if decision_uri else None)
    state, info = start_search(job, context, _read(baselines_uri, "baselines.json"), baselines_uri, pretrain,
                               finalists)
    save_state(state, context, output_uri)
    return info


def propose(job: JobConfig, state_uri: str, output_uri: str) -> dict:
    """The next trial's rank vector by the job's search.proposer (search.loop.propose)."""
    state, context = load_state(state_uri)
    proposal = to_dict(next_proposal(state, job.search_config(context.cost_per_rank)))
    with storage.writing_dir(output_uri) as out:
        storage.write_json_atomic(out / "proposal.json", proposal)
    return proposal


def proposal_vector(proposal_uri: str) -> list[int]:
    return _read(proposal_uri, "proposal.json")["rank_vector"]


def update(job: JobConfig, state_uri: str, proposal_uri: str, metrics_uri: str, adapter_uri: str,
           output_uri: str) -> dict:
    """The measured trial into the search (flows.search.add_trial): the next search state."""
    state, context = load_state(state_uri)
    proposal = from_dict(Proposal, _read(proposal_uri, "proposal.json"))
    metrics = _read(metrics_uri, "metrics.json")
    score = metrics["scores"][job.target_task]
    seconds = _read(adapter_uri, "train_metrics.json")["seconds"] + metrics["seconds"]
    new_state, outcome = add_trial(job, state, context, proposal, score, seconds, adapter_uri)
    save_state(new_state, context, output_uri)
    return {"converged": outcome.converged, "abs_error": outcome.abs_error, "score": score,
            "best": outcome.best.score}


def gate(job: JobConfig, state_uri: str, iteration: int) -> bool:
    """The loop gate after search iteration `iteration`: stop when the search converged or when the job's
    max_iterations trials are done (the compiled loop's own cap may be higher)."""
    state, context = load_state(state_uri)
    return converged(state, job.search_config(context.cost_per_rank)) or iteration >= job.search.max_iterations


def go_gate(decision_uri: str) -> bool:
    """Whether the search runs: the go/no-go step's decision (steps.model.go_check's go.json)."""
    return bool(_read(decision_uri, GO_DECISION)["go"])
