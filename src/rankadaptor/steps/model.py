"""The steps that load a model: data, pruning, recovery, evaluation, the baselines and the bootstrap trials."""

from __future__ import annotations

import dataclasses
import time

from tqdm import tqdm

from rankadaptor.data import data_paths, sample_corpus
from rankadaptor.evaluate.stage import score
from rankadaptor.flows.baselines import baseline_methods, bootstrap_vectors
from rankadaptor.flows.confirm import confirm_plan, confirmed_table
from rankadaptor.flows.go import cheap_plan, decide_from_bank, full_trial_seconds
from rankadaptor.flows.progress import progress
from rankadaptor.flows.trials import bootstrap_keys, record
from rankadaptor.infra import storage
from rankadaptor.infra.bank import find_trial
from rankadaptor.job import JobConfig
from rankadaptor.models.loading import load_model, resolve_device
from rankadaptor.models.structure import trial_context, write_structure
from rankadaptor.prune.stage import run_prune
from rankadaptor.recover.adapters import load_adapted
from rankadaptor.recover.stage import run_recover
from rankadaptor.search.confirm import confirmation_line
from rankadaptor.search.go import decision_line
from rankadaptor.steps.search import GO_DECISION  # the go step's artifact: search.go.GoDecision as JSON
from rankadaptor.trial import Observation, TrialContext, TrialKey, step_fraction


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


def prune(job: JobConfig, data_uri: str, output_uri: str, structure_uri: str) -> dict:
    """The pruned model at output_uri and its structure artifact at structure_uri (trial.write_structure)."""
    data = data_paths(data_uri)
    report = run_prune(job.prune_config(data["train"], data.get("heldout") or None), output_uri)
    write_structure(output_uri, job.base_model, structure_uri)
    return report


def recover(job: JobConfig, pruned_uri: str, data_uri: str, rank_vector: list[int] | None, output_uri: str,
            method: str | None = None, schedule: str | None = None, seed: int | None = None,
            step_fraction: float = 1.0) -> dict:
    """One recovery; method: the job's trial method unless given, schedule: the job's unless given, seed: the
    job's unless given, step_fraction < 1: a short (cheap) recovery."""
    config = job.recover_config(data_paths(data_uri)["train"], rank_vector, method, schedule)
    if seed is not None:
        config = dataclasses.replace(config, seed=seed)
    return run_recover(config, pruned_uri, output_uri, step_fraction)


def scores(job: JobConfig, pruned_uri: str, adapter_uri: str | None, data_uri: str, tasks: list[str],
           splits: tuple[str, ...]) -> dict[str, dict]:
    """Load the model (with its adapter) once and score it on each split; for a sparse job also the merged
    model's sparsity (under "sparsity": what a server would run)."""
    heldout = data_paths(data_uri).get("heldout") or None
    model, tokenizer = load_adapted(pruned_uri, adapter_uri, device=resolve_device(job.runtime.device))
    result = {split: score(model, tokenizer, job.eval_config(tasks, split, heldout)) for split in splits}
    if job.is_sparse:
        from rankadaptor.prune.unstructured import merged_sparsity

        result["sparsity"] = merged_sparsity(model)  # merges in place: last
    return result


def evaluate(job: JobConfig, pruned_uri: str, data_uri: str, adapter_uri: str, output_uri: str) -> dict:
    """A search trial's measurement: the target task on the select rows."""
    result = scores(job, pruned_uri, adapter_uri, data_uri, [job.target_task], ("select",))["select"]
    with storage.writing_dir(output_uri) as out:
        storage.write_json_atomic(out / "metrics.json", result)
    return result


def baselines(job: JobConfig, pruned_uri: str, data_uri: str, output_uri: str) -> dict:
    """The comparison rows (baseline_methods) on both splits, each with its trainable parameters and rank
    vector. Adapters are kept inside this artifact."""
    tasks = job.table_tasks
    results = {}
    with storage.writing_dir(output_uri) as out:
        for name, how in tqdm(baseline_methods(job).items(), desc="baselines", unit="method"):
            adapter_dir = str(out / name) if how else None
            recovered = recover(job, pruned_uri, data_uri, None, adapter_dir, *how) if how else {}
            results[name] = {**scores(job, pruned_uri, adapter_dir, data_uri, tasks, ("select", "report")),
                             "trainable_params": recovered.get("trainable_params", 0),
                             "rank_vector": recovered.get("rank_vector")}
        storage.write_json_atomic(out / "baselines.json", results)
    return results


def bootstrap_trial(job: JobConfig, context: TrialContext, pruned_uri: str, data_uri: str, rank_vector: list[int],
                    work_uri: str) -> bool:
    """Measure one rank vector on the source tasks and bank it; False if the bank already had it."""
    keys = bootstrap_keys(job, context, rank_vector)
    if all(find_trial(k.id, job.bank.experiment, job.tracking_uri()) for k in keys):
        return False
    adapter_uri = storage.join(work_uri, f"trial-{keys[0].id[:16]}")
    started = time.time()
    recover(job, pruned_uri, data_uri, rank_vector, adapter_uri, step_fraction=job.bootstrap_fraction)
    measured = scores(job, pruned_uri, adapter_uri, data_uri, job.source_tasks, ("select",))["select"]["scores"]
    for key in keys:
        record(job, context, key, measured[key.task], "bootstrap", seconds=time.time() - started,
               adapter_uri=adapter_uri)
    return True


def bootstrap(job: JobConfig, pruned_uri: str, structure_uri: str, data_uri: str, work_uri: str) -> int:
    """Fill the bank with the bootstrap trials it lacks (what meta-pretraining learns from), one after another;
    the bootstrap pipeline runs the same trials in parallel. Returns the number of trials run."""
    context = trial_context(structure_uri, data_uri)
    return sum(bootstrap_trial(job, context, pruned_uri, data_uri, v, work_uri)
               for v in tqdm(bootstrap_vectors(job, context.cost_per_rank), desc="bootstrap trials", unit="trial"))


def measure_missing(job: JobConfig, context: TrialContext, pruned_uri: str, data_uri: str, keys: list[TrialKey],
                    stage: str, work_uri: str, desc: str) -> list[float]:
    """Recover and score (target task, select rows) each keyed trial the bank lacks, at its seed and fidelity,
    and bank it under `stage`; adapters under work_uri + ".trials" (a durable URI on a cluster). A trial banked
    by any earlier run is reused, never paid again. Returns each paid trial's evaluation seconds."""
    evaluations = []
    for key in tqdm(keys, desc=desc, unit="trial"):
        if find_trial(key.id, job.bank.experiment, job.tracking_uri()):
            continue
        adapter_uri = storage.join(work_uri.rstrip("/") + ".trials", f"trial-{key.id[:16]}")
        recovered = recover(job, pruned_uri, data_uri, key.rank_vector, adapter_uri, seed=key.seed,
                            step_fraction=step_fraction(key.fidelity))
        measured = scores(job, pruned_uri, adapter_uri, data_uri, [key.task], ("select",))["select"]
        # a trial's seconds as the search's update step counts them: training + scoring (no model loading)
        record(job, context, key, measured["scores"][key.task], stage,
               seconds=recovered["seconds"] + measured["seconds"], adapter_uri=adapter_uri)
        evaluations.append(measured["seconds"])
    return evaluations


def go_check(job: JobConfig, pruned_uri: str, structure_uri: str, data_uri: str, baselines_uri: str,
             output_uri: str, work_uri: str) -> dict:
    """The go/no-go (search.go): measure the cheap trials the bank lacks (flows.go.cheap_plan; none unless
    search.go is auto), decide from all the bank holds, print the one decision line, write the decision (go.json)
    to output_uri."""
    context = trial_context(structure_uri, data_uri)
    plan = cheap_plan(job, context) if job.search.go == "auto" else []
    evaluations = measure_missing(job, context, pruned_uri, data_uri, plan, "go", work_uri, "go/no-go cheap trials")
    full = full_trial_seconds(job, baselines_uri, sum(evaluations) / len(evaluations) if evaluations else 0.0)
    decision = decide_from_bank(job, context, full)
    progress(decision_line(decision))
    result = {**dataclasses.asdict(decision), "cheap_trials_paid": len(evaluations)}
    with storage.writing_dir(output_uri) as out:
        storage.write_json_atomic(out / GO_DECISION, result)
    return result


def confirm_finalists(job: JobConfig, context: TrialContext, trials: list[Observation], pruned_uri: str,
                      data_uri: str, work_uri: str) -> tuple[list[dict], list[float]]:
    """The search's finalists at search.confirm_seeds seeds (flows.confirm): the full trials the bank lacks
    measured, then the seed table (search.confirm.seed_table), its line on the terminal, and the confirmation
    trials' banked seconds; ([], []) with nothing to confirm (no searched trial, or confirm_top 0)."""
    measure_missing(job, context, pruned_uri, data_uri, confirm_plan(job, context, trials), "confirm", work_uri,
                    "finalists at more seeds")
    table, seconds = confirmed_table(job, context, trials)
    if table:
        progress(confirmation_line(job.target_task, table, [job.baseline_rank] * context.num_layers))
    return table, seconds
