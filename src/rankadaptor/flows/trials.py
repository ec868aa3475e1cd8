"""What every trial of one job shares, computed once: the pruned model's structure and checksum, its LoRA
cost per rank, and the data's checksum. From it, a trial's identity (TrialKey) and its bank row.

The prune step writes the model's part as a small structure artifact (`structure.json`), so the steps that
need only the structure (meta-pretraining, the bootstrap vectors) never download the weights or the base
model. The context is built when the search starts (meta_pretrain) and carried in the search-state
artifact beside the search, so later steps read it instead of re-reading anything.
"""

from __future__ import annotations

from rankadaptor.evaluate.tasks import task_checksum
from rankadaptor.infra import bank
from rankadaptor.job import JobConfig
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.recover.stage import result_settings
from rankadaptor.report import LOSA, MASKED_UNIFORM, UNIFORM
from rankadaptor.trial import FULL, TrialContext, TrialKey
from rankadaptor.widths import lora_parameters


def recovery_identity(config: RecoverConfig) -> dict:
    """What of a recovery setting decides its result: every option but the runtime ones and those the trial
    key holds itself (data as its checksum, the rank vector, the seed)."""
    return {k: v for k, v in result_settings(config).items() if k not in ("data", "rank_vector", "seed")}


def trial_key(job: JobConfig, context: TrialContext, task: str, split: str, rank_vector: list[int],
              seed: int | None = None, fidelity: str = FULL) -> TrialKey:
    """The key of a trial of this job (at the job's seed and full fidelity unless given)."""
    return TrialKey(base_model=job.base_model, base_checksum=context.model_checksum, pruning=context.pruning,
                         task=task, split=split, rank_vector=list(rank_vector),
                         recovery=recovery_identity(job.recover_config("")), data_checksum=context.data_checksum,
                         seed=job.seed if seed is None else seed, fidelity=fidelity,
                         task_checksum=task_checksum(task, job.eval_data_dir or None, job.task_files))


def bootstrap_keys(job: JobConfig, context: TrialContext, rank_vector: list[int]) -> list[TrialKey]:
    """The bank keys of one bootstrap trial: one per source task (one recovery scored on each), at the job's
    bootstrap fidelity (bootstrap_fraction of the recovery steps)."""
    return [trial_key(job, context, task, "select", rank_vector, fidelity=job.bootstrap_fidelity)
            for task in job.source_tasks]


def starting_trials(job: JobConfig) -> list[str]:
    """Baseline rows banked as measured target trials before the search: first the uniform anchor recovered
    the way trials are (masked for sparse jobs), then LoSA's rank vector when the job asks (losa_start)."""
    return [MASKED_UNIFORM if job.trial_method == "losa" else UNIFORM, *([LOSA] if job.losa_start else [])]


def record(job: JobConfig, context: TrialContext, key: TrialKey, score: float, stage: str,
           predicted: float | None = None, seconds: float | None = None, adapter_uri: str | None = None,
           number: int | None = None) -> dict:
    """Bank one measured trial under the key its caller built; a trial already banked is returned as it is."""
    return bank.record_trial(key, score=score, predicted=predicted, seconds=seconds,
                             layer_features=context.layer_features,
                             trainable_params=lora_parameters(key.rank_vector, context.cost_per_rank), stage=stage,
                             artifact=adapter_uri, experiment=job.bank.experiment, tracking_uri=job.tracking_uri(),
                             number=number)
