"""The steps that load a model: data, pruning, recovery, evaluation, the baselines and the bootstrap trials."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from tqdm import tqdm

from rankadaptor import storage
from rankadaptor.bank import find_trial
from rankadaptor.data import sample_corpus
from rankadaptor.evaluate import score
from rankadaptor.job import JobConfig
from rankadaptor.modeling import load_model, resolve_device
from rankadaptor.prune import run_prune
from rankadaptor.recover import run_recover
from rankadaptor.report import UNIFORM
from rankadaptor.search import sample_rank_vectors
from rankadaptor.trial import TrialContext, data_paths, record, trial_context, trial_key


def prepare_data(job: JobConfig, output_uri: str) -> dict:
    """The recovery data: the user's, or a self-distillation corpus (train + held-out) of the base model."""
    with storage.writing_dir(output_uri) as out:
        if job.data:
            info = {"train": job.data, "heldout": job.heldout_text}
        else:
            model, tokenizer = load_model(job.base_model)
            docs = sample_corpus(model, tokenizer, job.corpus_docs, job.corpus_tokens, seed=job.seed)
            n_heldout = max(2, len(docs) // 5)
            (out / "heldout.txt").write_text("\n\n".join(docs[:n_heldout]))
            (out / "train.txt").write_text("\n\n".join(docs[n_heldout:]))
            info = {"train": "train.txt", "heldout": "heldout.txt"}
        storage.write_json_atomic(out / "data.json", info)
    return info


def prune(job: JobConfig, data_uri: str, output_uri: str) -> dict:
    data = data_paths(data_uri)
    return run_prune(job.prune_config(data["train"], data.get("heldout") or None), output_uri)


def recover(job: JobConfig, pruned_uri: str, data_uri: str, rank_vector: list[int] | None, output_uri: str,
            method: str = "lora") -> dict:
    return run_recover(job.recover_config(data_paths(data_uri)["train"], rank_vector, method), pruned_uri, output_uri)


def scores(job: JobConfig, pruned_uri: str, adapter_uri: str | None, data_uri: str, tasks: list[str],
           splits: tuple[str, ...]) -> dict[str, dict]:
    """Load the model (with its adapter) once and score it on each split."""
    heldout = data_paths(data_uri).get("heldout") or None
    model, tokenizer = load_model(pruned_uri, adapter_uri, device=resolve_device(job.runtime.device))
    return {split: score(model, tokenizer, job.eval_config(tasks, split, heldout)) for split in splits}


def evaluate(job: JobConfig, pruned_uri: str, data_uri: str, adapter_uri: str, output_uri: str) -> dict:
    """A search trial's measurement: the target task on the select rows."""
    result = scores(job, pruned_uri, adapter_uri, data_uri, [job.target_task], ("select",))["select"]
    with storage.writing_dir(output_uri) as out:
        storage.write_json_atomic(out / "metrics.json", result)
    return result


def baselines(job: JobConfig, pruned_uri: str, data_uri: str, output_uri: str) -> dict:
    """The comparison rows on both splits: the pruned model without recovery, uniform LoRA at the baseline
    rank, and optionally AdaLoRA. Adapters are kept inside this artifact."""
    tasks = [job.target_task, *job.report_tasks]
    methods = {"pruned": None, UNIFORM: "lora", **({"adalora": "adalora"} if job.adalora_baseline else {})}
    results = {}
    with storage.writing_dir(output_uri) as out:
        for name, method in tqdm(methods.items(), desc="baselines", unit="method"):
            adapter_dir = str(out / name) if method else None
            params = recover(job, pruned_uri, data_uri, None, adapter_dir, method)["trainable_params"] if method else 0
            results[name] = {**scores(job, pruned_uri, adapter_dir, data_uri, tasks, ("select", "report")),
                             "trainable_params": params}
        storage.write_json_atomic(out / "baselines.json", results)
    return results


def bootstrap_vectors(job: JobConfig, cost_per_rank: list[int]) -> list[list[int]]:
    """The job's bootstrap rank vectors: random, distinct, within the budget, fixed by the seed."""
    sampler = dataclasses.replace(job.search_config(cost_per_rank), num_samples=max(64, 4 * job.bootstrap_trials),
                                  local_fraction=0.0)
    vectors = sample_rank_vectors(sampler, cost_per_rank, np.random.default_rng([job.seed, 7]))
    return vectors[np.random.default_rng(job.seed).permutation(len(vectors))[:job.bootstrap_trials]].tolist()


def bootstrap_trial(job: JobConfig, context: TrialContext, pruned_uri: str, data_uri: str, rank_vector: list[int],
                    work_uri: str) -> bool:
    """Measure one rank vector on the source tasks and bank it; False if the bank already had it."""
    keys = [trial_key(job, context, task, "select", rank_vector) for task in job.source_tasks]
    if all(find_trial(k.id, job.bank.experiment, job.tracking_uri()) for k in keys):
        return False
    adapter_uri = storage.join(work_uri, f"trial-{keys[0].id[:16]}")
    started = time.time()
    recover(job, pruned_uri, data_uri, rank_vector, adapter_uri)
    measured = scores(job, pruned_uri, adapter_uri, data_uri, job.source_tasks, ("select",))["select"]["scores"]
    for task in job.source_tasks:
        record(job, context, task, rank_vector, measured[task], "bootstrap", seconds=time.time() - started,
               adapter_uri=adapter_uri)
    return True


def bootstrap(job: JobConfig, pruned_uri: str, data_uri: str, work_uri: str) -> int:
    """Fill the bank with the bootstrap trials it lacks (what meta-pretraining learns from), one after another;
    the bootstrap pipeline runs the same trials in parallel. Returns the number of trials run."""
    context = trial_context(pruned_uri, data_uri, job.base_model)
    return sum(bootstrap_trial(job, context, pruned_uri, data_uri, v, work_uri)
               for v in tqdm(bootstrap_vectors(job, context.cost_per_rank), desc="bootstrap trials", unit="trial"))
