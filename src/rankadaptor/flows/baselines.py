"""Which recoveries a job compares the search with, and the bootstrap trials meta-pretraining learns from."""

from __future__ import annotations

import dataclasses

import numpy as np

from rankadaptor.infra import storage
from rankadaptor.job import JobConfig
from rankadaptor.report import ADALORA, LOSA, MASKED_UNIFORM, PRUNED, UNIFORM
from rankadaptor.search.sampling import sample_rank_vectors

BOOTSTRAP_POOL = 4  # bootstrap vectors are drawn from a pool this many times larger (at least 64), then shuffled


def baseline_methods(job: JobConfig) -> dict[str, tuple[str, str] | None]:
    """The baseline rows, name -> (recovery method, rank schedule) or None (no recovery): the pruned model,
    uniform LoRA at the baseline rank; for unstructured-sparse jobs masked uniform LoRA (the search's anchor)
    and LoSA's reconstruction-error ranks (masked), which other jobs add with losa_baseline or losa_start;
    optionally AdaLoRA."""
    methods: dict[str, tuple[str, str] | None] = {PRUNED: None, UNIFORM: ("lora", "uniform")}
    if job.is_sparse:
        methods[MASKED_UNIFORM] = ("losa", "uniform")
    if job.is_sparse or job.losa_baseline or job.losa_start:
        methods[LOSA] = (job.trial_method, "losa")
    if job.adalora_baseline:
        methods[ADALORA] = ("adalora", "uniform")
    return methods


def bootstrap_vectors(job: JobConfig, cost_per_rank: list[int]) -> list[list[int]]:
    """The job's bootstrap rank vectors: random, distinct, within the budget, fixed by the seed."""
    sampler = dataclasses.replace(job.search_config(cost_per_rank),
                                  num_samples=max(64, BOOTSTRAP_POOL * job.bootstrap_trials), local_fraction=0.0)
    vectors = sample_rank_vectors(sampler, cost_per_rank, np.random.default_rng([job.seed, 7]))
    return vectors[np.random.default_rng(job.seed).permutation(len(vectors))[:job.bootstrap_trials]].tolist()


def baseline_seconds(baselines_uri: str, name: str) -> float | None:
    """A baseline row's recovery seconds (train_metrics.json beside its adapter; its evaluation covers the
    table's tasks on both splits, more than a trial's, so it is left out); None without a recovery."""
    adapter = storage.join(baselines_uri, name)
    if not storage.exists(adapter):
        return None
    metrics = storage.local_dir(adapter) / "train_metrics.json"
    return float(storage.read_json(metrics)["seconds"]) if metrics.is_file() else None
