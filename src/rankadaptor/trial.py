"""What every trial of one job shares, computed once: the pruned model's structure and checksum, its LoRA
cost per rank, and the data's checksum. From it, a trial's identity (bank.TrialKey) and its bank row.

The prune step writes the model's part as a small structure artifact (`structure.json`), so the steps that
need only the structure (meta-pretraining, the bootstrap vectors) never download the weights or the base
model. The context is built when the search starts (meta_pretrain) and carried in the search-state
artifact beside the search, so later steps read it instead of re-reading anything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from rankadaptor import bank, storage
from rankadaptor.errors import check
from rankadaptor.evaluate import task_checksum
from rankadaptor.job import JobConfig
from rankadaptor.modeling import attn_head_dim, config_widths, lora_cost_per_rank, lora_parameters
from rankadaptor.recover import RecoverConfig, result_settings
from rankadaptor.report import LOSA, MASKED_UNIFORM, UNIFORM
from rankadaptor.search import SearchState, load_search, save_search
from rankadaptor.surrogate import Observation, structure_features

CONTEXT_FILE = "context.json"
STRUCTURE_FILE = "structure.json"
SEARCH_DIR = "search"


@dataclass
class TrialContext:
    model_checksum: str  # the pruned model's weights, config and tokenizer (not its report's timings)
    pruning: dict  # the prune config its report recorded
    cost_per_rank: list[int]  # LoRA parameters per unit of rank of each decoder layer
    layer_features: list[list[float]]  # the surrogate's per-layer structure features
    data_checksum: str

    @property
    def num_layers(self) -> int:
        return len(self.cost_per_rank)


def data_paths(data_uri: str) -> dict[str, str]:
    """data.json of a data artifact, with paths inside the artifact made absolute."""
    directory = storage.local_dir(data_uri)
    info = storage.read_json(directory / "data.json")
    return {k: (str(directory / v) if v and not storage.is_s3(v) and not Path(v).is_absolute()
                and (directory / v).exists() else v) for k, v in info.items()}


def write_structure(pruned_uri: str, base_model: str, output_uri: str) -> dict:
    """The structure artifact of a pruned model: its checksum, pruning, LoRA cost per rank and the surrogate's
    layer features (the trial context but the data's checksum), from the pruned and the base model's configs."""
    from rankadaptor.modeling import load_config

    config, base = load_config(pruned_uri), load_config(base_model)
    directory = storage.local_dir(pruned_uri)
    widths = config_widths(config)
    costs = lora_cost_per_rank(widths, config.hidden_size, attn_head_dim(config))
    report = storage.read_json(directory / "prune_report.json")
    importance = report.get("layer_importance") or None
    structure = {"model_checksum": storage.checksum(directory, skip=("prune_report.json",)),
                 "pruning": report["config"], "cost_per_rank": costs,
                 "layer_features": structure_features(widths, base.num_attention_heads, base.intermediate_size, costs,
                                                      importance if importance and min(importance) >= 0 else None)}
    with storage.writing_dir(output_uri) as out:
        storage.write_json_atomic(out / STRUCTURE_FILE, structure)
    return structure


def trial_context(structure_uri: str, data_uri: str) -> TrialContext:
    """The trial context of a job: its model's structure artifact (write_structure) and its data's checksum."""
    directory = storage.local_dir(structure_uri)
    check((directory / STRUCTURE_FILE).is_file(), f"{structure_uri!r} is not a structure artifact: no "
                                                  f"{STRUCTURE_FILE} (the prune step writes it)")
    return TrialContext(**storage.read_json(directory / STRUCTURE_FILE),
                        data_checksum=storage.checksum(storage.local_dir(data_uri)))


def recovery_identity(config: RecoverConfig) -> dict:
    """What of a recovery setting decides its result: every option but the runtime ones and those the trial
    key holds itself (data as its checksum, the rank vector, the seed)."""
    return {k: v for k, v in result_settings(config).items() if k not in ("data", "rank_vector", "seed")}


def trial_key(job: JobConfig, context: TrialContext, task: str, split: str, rank_vector: list[int]) -> bank.TrialKey:
    return bank.TrialKey(base_model=job.base_model, base_checksum=context.model_checksum, pruning=context.pruning,
                         task=task, split=split, rank_vector=list(rank_vector),
                         recovery=recovery_identity(job.recover_config("")), data_checksum=context.data_checksum,
                         seed=job.seed, task_checksum=task_checksum(task, job.eval_data_dir or None,
                                                                        job.task_files))


def starting_trials(job: JobConfig) -> list[str]:
    """Baseline rows banked as measured target trials before the search: first the uniform anchor recovered
    the way trials are (masked for sparse jobs), then LoSA's rank vector when the job asks (losa_start)."""
    return [MASKED_UNIFORM if job.trial_method == "losa" else UNIFORM, *([LOSA] if job.losa_start else [])]


def record(job: JobConfig, context: TrialContext, task: str, rank_vector: list[int], score: float, stage: str,
           predicted: float | None = None, seconds: float | None = None, adapter_uri: str | None = None) -> dict:
    """Bank one measured trial (on the select split); a trial already banked is returned as it is."""
    return bank.record_trial(trial_key(job, context, task, "select", rank_vector), score=score, predicted=predicted,
                             seconds=seconds, layer_features=context.layer_features,
                             trainable_params=lora_parameters(rank_vector, context.cost_per_rank), stage=stage,
                             artifact=adapter_uri, experiment=job.bank.experiment, tracking_uri=job.tracking_uri())


def save_state(state: SearchState, context: TrialContext, uri: str) -> None:
    """The search-state artifact: the search (search.save_search) and the trial context beside it."""
    with storage.writing_dir(uri) as out:
        save_search(state, str(out / SEARCH_DIR))
        storage.write_json_atomic(out / CONTEXT_FILE, dataclasses.asdict(context))


def load_state(uri: str) -> tuple[SearchState, TrialContext]:
    directory = storage.local_dir(uri)
    check((directory / CONTEXT_FILE).is_file(), f"{uri!r} is not a search-state artifact: no {CONTEXT_FILE}")
    return load_search(str(directory / SEARCH_DIR)), TrialContext(**storage.read_json(directory / CONTEXT_FILE))


def best_trial(state_uri: str) -> tuple[Observation, list[Observation], TrialContext]:
    """The best measured trial of a search state, all its trials and its context (reads the state only)."""
    state, context = load_state(state_uri)
    trials = state.measured()
    check(bool(trials), "the search state holds no measured trial of the target task")
    return max(trials, key=lambda o: o.score), trials, context
