"""The RankAdaptor job as steps over artifacts: each function is what one Kubeflow component runs.

prepare_data -> prune -> baselines, bootstrap -> meta_pretrain -> {propose -> recover -> evaluate ->
update} x N -> finish (held-out evaluation of the best trial, report, registration). Every step reads its
inputs from artifact URIs and writes one artifact, so a pipeline can run the steps in separate pods, and a
notebook can call them one after another. Trials go to the observation bank in MLflow; a trial already in
the bank (same model, pruning, task, rank vector, recovery, data and seed) is reused, never paid twice.

Scores. A task is an lm-eval task name (accuracy per row) or `ppl:<text>` (mean log-likelihood per token
per document; `ppl:heldout` is the held-out part of the recovery corpus, `ppl:<lm-eval task>` the text of
that task's rows). Every score is a mean over rows, so the same paired bootstrap compares any two models.
Rows are split into `select` (drives the search) and `report` (held out for the final comparison).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rankadaptor import bank, storage
from rankadaptor import config as cfg
from rankadaptor.config import option
from rankadaptor.data import read_records, read_texts, sample_corpus
from rankadaptor.errors import UserError, check
from rankadaptor.evaluate import TASKS, EvalConfig, data_files, evaluate, split_rows
from rankadaptor.modeling import (attn_head_dim, config_widths, load_config, load_model, lora_cost_per_rank,
                                  lora_parameters, resolve_device)
from rankadaptor.perplexity import document_log_likelihoods
from rankadaptor.prune import PruneConfig, run_prune
from rankadaptor.recover import RecoverConfig, run_recover
from rankadaptor.registry import RegistryConfig, register
from rankadaptor.search import (Proposal, SearchConfig, SearchState, load_search, propose,
                                sample_rank_vectors, save_search, update)
from rankadaptor.surrogate import Observation, SurrogateConfig, adapt, meta_pretrain, new_surrogate, structure_features

PPL = "ppl:"


@dataclass
class JobConfig:
    base_model: str = option("", "base model: local checkpoint directory, s3:// URI or hub id")
    data: str = option("", "recovery data (Alpaca JSON/JSONL or text, local or s3://); empty: a self-distillation "
                           "corpus sampled from the base model")
    heldout_text: str = option("", "held-out text for the ppl:heldout task when `data` is given")
    corpus_docs: int = option(400, "documents sampled for the self-distillation corpus")
    corpus_tokens: int = option(96, "tokens per sampled document")
    target_task: str = option("ppl:heldout", "what the search maximises: an lm-eval task or ppl:<text>")
    source_tasks: list[str] = option(["ppl:boolq", "ppl:piqa", "ppl:hellaswag", "ppl:openbookqa"],
                                     "tasks of the bootstrap trials the surrogate is meta-pretrained on")
    report_tasks: list[str] = option(list(TASKS), "zero-shot tasks in the final comparison table")
    eval_data_dir: str | None = option(None, "directory of <task>_<split>.jsonl files (local or s3://); "
                                             "empty: lm-eval's hub datasets")
    bootstrap_trials: int = option(6, "random rank vectors measured on the source tasks when the bank lacks them")
    adalora_baseline: bool = option(False, "also run the AdaLoRA baseline")
    losa_baseline: bool = option(False, "also run LoSA's rank allocation (ranks from reconstruction error, same "
                                        "budget) as a baseline row; always on for unstructured-sparse jobs")
    losa_start: bool = option(False, "give the search LoSA's rank vector as a measured starting trial "
                                     "(runs the LoSA baseline)")
    experiment: str = option(bank.DEFAULT_EXPERIMENT, "MLflow experiment of the observation bank")
    seed: int = option(0, "seed of the corpus, bootstrap vectors, recovery and splits")
    prune: dict = option({}, "PruneConfig options (model and calibration are filled in)")
    recover: dict = option({}, "RecoverConfig options (data and rank vector are filled in)")
    evaluate: dict = option({}, "EvalConfig options (tasks, split and data_dir are filled in)")
    surrogate: dict = option({}, "SurrogateConfig options")
    search: dict = option({}, "SearchConfig options (threshold, max_iterations, budget, ...)")
    registry: dict = option({}, "RegistryConfig options (model_name, tracking_uri, ...)")

    def validate(self) -> None:
        check(bool(self.base_model), "base_model is required: a local checkpoint directory, s3:// URI or hub id")
        for task in [self.target_task, *self.source_tasks, *self.report_tasks]:
            check(task.startswith(PPL) or task in TASKS,
                  f"task {task!r} is not accepted: use an lm-eval task {list(TASKS)} or ppl:<heldout|task>")
        check(self.target_task not in self.source_tasks,
              f"target_task {self.target_task!r} is also a source task: meta-pretraining must not see it")
        check(self.bootstrap_trials == 0 or self.bootstrap_trials >= 3,
              f"bootstrap_trials={self.bootstrap_trials}: meta-pretraining needs 0 (none) or at least 3 per source task")
        check(self.corpus_docs >= 10 and self.corpus_tokens >= 16,
              f"corpus_docs={self.corpus_docs} must be >= 10 and corpus_tokens={self.corpus_tokens} >= 16")
        for name, cls in STAGES.items():
            stage(self, name, cls)  # refuses a bad stage option now, before any step runs

    def tracking_uri(self) -> str | None:
        return self.registry.get("tracking_uri") or None


STAGES = {"prune": PruneConfig, "recover": RecoverConfig, "evaluate": EvalConfig, "surrogate": SurrogateConfig,
          "search": SearchConfig, "registry": RegistryConfig}
# Required options the job fills in from its artifacts at run time; a placeholder lets the job check a
# stage's other options when it loads, before any step has produced those artifacts.
FILLED = {"prune": {"model": "-", "calibration": "-"}, "recover": {"data": "-"}}


def stage(job: JobConfig, name: str, cls, **filled: Any):
    """The typed config of one stage: the job's options for it plus the values the job fills in."""
    values = {**FILLED.get(name, {}), **getattr(job, name), **filled}
    try:
        return cfg.from_dict(cls, values)
    except UserError as e:
        raise UserError(f"{name}: {e}") from None


def job_from_json(text: str) -> JobConfig:
    return cfg.from_dict(JobConfig, json.loads(text))


BUNDLED = Path(__file__).parent / "bundled"


def load_job(yaml_path: str | None = None, overrides: dict | None = None) -> JobConfig:
    """A job from YAML (default: the bundled tiny-model job, its relative paths made absolute)."""
    import yaml

    if yaml_path is None:
        values = yaml.safe_load((BUNDLED / "default.yaml").read_text())
        for key in ("base_model", "eval_data_dir"):
            values[key] = str(BUNDLED / values[key])
        job = cfg.from_dict(JobConfig, {**values, **(overrides or {})})
    else:
        job = cfg.load(JobConfig, yaml_path, overrides)
    job.validate()
    return job


def _read(uri: str, name: str) -> Any:
    return storage.read_json(storage.local_dir(uri) / name)


# ------------------------------------------------------------------------------------------------- data

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


def data_paths(data_uri: str) -> dict[str, str]:
    """data.json with paths inside the artifact made absolute; checksum = the data artifact's."""
    directory = storage.local_dir(data_uri)
    info = storage.read_json(directory / "data.json")
    resolved = {k: (str(directory / v) if v and not storage.is_s3(v) and not Path(v).is_absolute()
                    and (directory / v).exists() else v) for k, v in info.items()}
    return {**resolved, "checksum": storage.checksum(directory)}


def task_texts(task: str, data: dict[str, str], job: JobConfig) -> list[str]:
    name = task[len(PPL):]
    if name == "heldout":
        check(bool(data.get("heldout")), "task ppl:heldout needs held-out text: set heldout_text with your data")
        return read_texts(data["heldout"])
    check(job.eval_data_dir is not None, f"task {task!r} reads the task rows from eval_data_dir; set it")
    check(name in TASKS, f"task {task!r}: {name!r} is not an lm-eval task {list(TASKS)} nor 'heldout'")
    rows = read_records(str(data_files(job.eval_data_dir, [name])[name]))
    return [" ".join(str(v) for v in row.values() if isinstance(v, str) and v) for row in rows]


# ------------------------------------------------------------------------------------------ measuring

def measure(model, tokenizer, tasks: list[str], split: str, data: dict[str, str], job: JobConfig) -> dict:
    """Scores per task on one split, with the per-row values behind each (for paired comparisons)."""
    zero_shot = [t for t in tasks if not t.startswith(PPL)]
    # With only ppl: tasks the config still needs a task name; its split, limit and sizes are what is used.
    eval_config = stage(job, "evaluate", EvalConfig, split=split, data_dir=job.eval_data_dir,
                        tasks=zero_shot or [next(iter(TASKS))])
    started = time.time()
    result: dict[str, Any] = {"split": split, "tasks": {}}
    if zero_shot:
        result["tasks"].update(evaluate(model, tokenizer, eval_config)["tasks"])
    for task in (t for t in tasks if t.startswith(PPL)):
        texts = task_texts(task, data, job)
        row_ids = split_rows(task, len(texts), split, eval_config.select_fraction, eval_config.seed,
                             eval_config.limit)
        rows = document_log_likelihoods(model, tokenizer, [texts[i] for i in row_ids],
                                        eval_config.max_length or model.config.max_position_embeddings,
                                        eval_config.batch_size)
        result["tasks"][task] = {"metric": "loglik_per_token", "value": float(np.mean(rows)),
                                 "stderr": float(np.std(rows, ddof=1) / math.sqrt(len(rows))) if len(rows) > 1 else None,
                                 "n": len(rows), "rows": rows, "row_ids": row_ids,
                                 "perplexity": float(math.exp(-np.mean(rows)))}
    result["scores"] = {t: result["tasks"][t]["value"] for t in tasks}
    result["seconds"] = time.time() - started
    return result


def evaluate_step(job: JobConfig, pruned_uri: str, data_uri: str, adapter_uri: str | None, tasks: list[str],
                  split: str, output_uri: str) -> dict:
    device = resolve_device(stage(job, "evaluate", EvalConfig).device)
    model, tokenizer = load_model(pruned_uri, adapter_uri, device=device)
    result = measure(model, tokenizer, tasks, split, data_paths(data_uri), job)
    with storage.writing_dir(output_uri) as out:
        storage.write_json_atomic(out / "metrics.json", result)
    return result


def recover_step(job: JobConfig, pruned_uri: str, data_uri: str, rank_vector: list[int] | None,
                 output_uri: str, method: str | None = None, schedule: str | None = None) -> dict:
    recover_config = stage(job, "recover", RecoverConfig, data=data_paths(data_uri)["train"],
                           method=method or trial_method(job), rank_vector=rank_vector, seed=job.seed,
                           **({"schedule": schedule} if schedule else {}))
    return run_recover(recover_config, pruned_uri, output_uri)


# --------------------------------------------------------------------------------------------- model

def model_structure(pruned_uri: str, base_model: str) -> dict:
    """What the search needs of the pruned model: LoRA cost per unit rank and per-layer features."""
    config, base = load_config(pruned_uri), load_config(base_model)
    directory = storage.local_dir(pruned_uri)
    widths = config_widths(config)
    costs = lora_cost_per_rank(widths, config.hidden_size, attn_head_dim(config))
    report = storage.read_json(directory / "prune_report.json")
    importance = report.get("layer_importance") or None
    features = structure_features(widths, base.num_attention_heads, base.intermediate_size, costs,
                                  importance if importance and min(importance) >= 0 else None)
    # The weights, config and tokenizer identify the model; the report's timings must not.
    return {"cost_per_rank": costs, "layer_features": features,
            "checksum": storage.checksum(directory, skip=("prune_report.json",)),
            "pruning": report["config"], "num_layers": config.num_hidden_layers}


# Recovery settings that say how a trial runs, not what it computes (or that the key holds elsewhere):
# changing them must not make a measured trial look new.
NOT_IN_TRIAL_KEY = ("data", "rank_vector", "seed", "checkpoint", "save_steps", "device", "micro_batch_tokens",
                    "compile")


def trial_key(job: JobConfig, structure: dict, data: dict, task: str, split: str, rank_vector: list[int]) -> bank.TrialKey:
    recovery = {k: v for k, v in cfg.to_dict(stage(job, "recover", RecoverConfig, method=trial_method(job))).items()
                if k not in NOT_IN_TRIAL_KEY}
    return bank.TrialKey(base_model=job.base_model, base_checksum=structure["checksum"], pruning=structure["pruning"],
                         task=task, split=split, rank_vector=list(rank_vector), recovery=recovery,
                         data_checksum=data["checksum"], seed=job.seed)


def _record(job, structure, data, task, split, rank_vector, score, stage_name, predicted=None, seconds=None,
            adapter_uri: str | None = None) -> dict:
    return bank.record_trial(trial_key(job, structure, data, task, split, rank_vector), score=score,
                             predicted=predicted, seconds=seconds, layer_features=structure["layer_features"],
                             trainable_params=lora_parameters(rank_vector, structure["cost_per_rank"]),
                             stage=stage_name, artifact=adapter_uri, experiment=job.experiment,
                             tracking_uri=job.tracking_uri())


def prune_step(job: JobConfig, data_uri: str, output_uri: str) -> dict:
    data = data_paths(data_uri)
    prune_config = stage(job, "prune", PruneConfig, model=job.base_model, calibration=data["train"],
                         ppl_text=data.get("heldout") or None, seed=job.seed)
    return run_prune(prune_config, output_uri)


# ------------------------------------------------------------------- sparse jobs (LoSA, issue 19)

def is_sparse(job: JobConfig) -> bool:
    """An unstructured-sparse job: the prune step's mode decides how every later step recovers."""
    return job.prune.get("mode") == "unstructured"


def trial_method(job: JobConfig) -> str:
    """How trials recover: the job's recover.method, else masked LoRA for sparse jobs (the merged model
    keeps its zeros), else LoRA."""
    return job.recover.get("method") or ("losa" if is_sparse(job) else "lora")


def sparse_baselines(job: JobConfig) -> dict[str, tuple[str, str]]:
    """Extra baseline rows, name -> (method, schedule): masked LoRA at the uniform rank (a sparse job's
    search anchor) and LoSA's reconstruction-error ranks (masked for sparse jobs)."""
    rows = {"losa_masked_r8": ("losa", "uniform")} if is_sparse(job) else {}
    if is_sparse(job) or job.losa_baseline or job.losa_start:
        rows["losa"] = (trial_method(job), "losa")
    return rows


def starting_trials(job: JobConfig) -> list[str]:
    """Baseline rows banked as measured target trials before the search: the uniform-rank anchor, run
    the way trials run, and LoSA's rank vector when the job asks for it."""
    return ["losa_masked_r8" if trial_method(job) == "losa" else "lora_r8", *(["losa"] if job.losa_start else [])]


# ------------------------------------------------------------------------------------------ baselines

def baselines_step(job: JobConfig, pruned_uri: str, data_uri: str, output_uri: str) -> dict:
    """The paper's comparison rows on both splits: the pruned model without recovery, uniform LoRA r=8,
    and optionally AdaLoRA. Adapters are kept inside this artifact."""
    from rankadaptor.prune.unstructured import merged_sparsity

    data = data_paths(data_uri)
    tasks = [job.target_task, *job.report_tasks]
    methods = {"pruned": (None, None), "lora_r8": ("lora", "uniform"), **sparse_baselines(job),
               **({"adalora": ("adalora", None)} if job.adalora_baseline else {})}
    results = {}
    with storage.writing_dir(output_uri) as out:
        for name, (method, schedule) in tqdm(methods.items(), desc="baselines", unit="method"):
            adapter_dir = None
            if method:
                adapter_dir = str(out / name)
                recovered = recover_step(job, pruned_uri, data_uri, None, adapter_dir, method=method, schedule=schedule)
            model, tokenizer = load_model(pruned_uri, adapter_dir)
            results[name] = {split: measure(model, tokenizer, tasks, split, data, job) for split in ("select", "report")}
            results[name]["trainable_params"] = recovered["trainable_params"] if method else 0
            results[name]["rank_vector"] = recovered["rank_vector"] if method else None
            results[name]["sparsity"] = merged_sparsity(model)
        storage.write_json_atomic(out / "baselines.json", results)
    return results


# ------------------------------------------------------------------------------------ bank and search

def bootstrap_vectors(job: JobConfig, pruned_uri: str) -> list[list[int]]:
    """The job's bootstrap rank vectors: random, distinct, within the budget, fixed by the seed."""
    return _bootstrap_vectors(job, model_structure(pruned_uri, job.base_model))


def _bootstrap_vectors(job: JobConfig, structure: dict) -> list[list[int]]:
    sampler = dataclasses.replace(stage(job, "search", SearchConfig), num_samples=max(64, 4 * job.bootstrap_trials),
                                  local_fraction=0.0)
    vectors = sample_rank_vectors(sampler, structure["cost_per_rank"], np.random.default_rng([job.seed, 7]))
    return vectors[np.random.default_rng(job.seed).permutation(len(vectors))[:job.bootstrap_trials]].tolist()


def bootstrap_trial(job: JobConfig, pruned_uri: str, data_uri: str, rank_vector: list[int], work_uri: str) -> bool:
    """Measure one rank vector on the source tasks and bank it; False if the bank already had it."""
    structure, data = model_structure(pruned_uri, job.base_model), data_paths(data_uri)
    return _bootstrap_trial(job, pruned_uri, data_uri, structure, data, rank_vector, work_uri)


def _bootstrap_trial(job: JobConfig, pruned_uri: str, data_uri: str, structure: dict, data: dict,
                     rank_vector: list[int], work_uri: str) -> bool:
    keys = [trial_key(job, structure, data, task, "select", rank_vector) for task in job.source_tasks]
    if all(bank.find_trial(k.id, job.experiment, job.tracking_uri()) for k in keys):
        return False
    adapter_uri = storage.join(work_uri, f"trial-{keys[0].id[:16]}")
    started = time.time()
    recover_step(job, pruned_uri, data_uri, rank_vector, adapter_uri)
    model, tokenizer = load_model(pruned_uri, adapter_uri)
    scores = measure(model, tokenizer, job.source_tasks, "select", data, job)["scores"]
    for task in job.source_tasks:
        _record(job, structure, data, task, "select", rank_vector, scores[task], "bootstrap",
                seconds=time.time() - started, adapter_uri=adapter_uri)
    return True


def bootstrap_step(job: JobConfig, pruned_uri: str, data_uri: str, work_uri: str) -> int:
    """Fill the bank with the bootstrap trials it lacks (what meta-pretraining learns from), one after
    another; the bootstrap pipeline runs the same trials in parallel. Returns the number of trials run.
    The model's structure and the data checksum are computed once, not per trial (each hashes files)."""
    structure, data = model_structure(pruned_uri, job.base_model), data_paths(data_uri)
    return sum(_bootstrap_trial(job, pruned_uri, data_uri, structure, data, v, work_uri)
               for v in tqdm(_bootstrap_vectors(job, structure), desc="bootstrap trials", unit="trial"))


def _observations(rows: list[dict]) -> list[Observation]:
    return [Observation(**{**row, "layer_features": row["layer_features"] or None}) for row in rows]


def meta_pretrain_step(job: JobConfig, pruned_uri: str, data_uri: str, baselines_uri: str, output_uri: str) -> dict:
    """The search's starting state: a surrogate meta-pretrained on every other task's trials in the bank,
    then adapted to the target task's trials on this model, data and recovery setting: the uniform-rank
    baseline (banked here as the first trial: it anchors the surrogate to the target's score level) and
    any trial an earlier run measured whose adapter still exists (a rerun continues where it stopped)."""
    data, structure = data_paths(data_uri), model_structure(pruned_uri, job.base_model)
    surrogate_config, search_config = stage(job, "surrogate", SurrogateConfig), stage(job, "search", SearchConfig)
    sources = [o for o in _observations(bank.load_observations(job.experiment, tracking_uri=job.tracking_uri()))
               if o.task != job.target_task]
    surrogate = new_surrogate(surrogate_config, search_config.candidates, structure["num_layers"],
                              len(structure["layer_features"][0]))
    if sources:
        surrogate = meta_pretrain(surrogate, sources)
    uniform = [stage(job, "recover", RecoverConfig).rank] * structure["num_layers"]
    baselines = _read(baselines_uri, "baselines.json")
    for name in starting_trials(job):  # the uniform anchor (masked for sparse jobs), then LoSA's ranks if asked
        _record(job, structure, data, job.target_task, "select", baselines[name].get("rank_vector") or uniform,
                baselines[name]["select"]["scores"][job.target_task], "baseline",
                adapter_uri=storage.join(baselines_uri, name))
    key = trial_key(job, structure, data, job.target_task, "select", uniform)
    rows = bank.load_observations(job.experiment, base_checksum=key.base_checksum, task=job.target_task,
                                  split="select", data_checksum=key.data_checksum, recovery=key.recovery,
                                  seed=key.seed, tracking_uri=job.tracking_uri())
    measured = [o for o in _observations(rows) if o.artifact and storage.exists(o.artifact)]
    state = SearchState(job.target_task, adapt(surrogate, measured, job.target_task), structure["cost_per_rank"],
                        structure["layer_features"], measured)
    save_search(state, output_uri)
    return {"source_observations": len(sources), "source_tasks": sorted({o.task for o in sources}),
            "target_trials": len(measured)}


def propose_step(job: JobConfig, state_uri: str, output_uri: str) -> dict:
    proposal = propose(load_search(state_uri), stage(job, "search", SearchConfig))
    with storage.writing_dir(output_uri) as out:
        storage.write_json_atomic(out / "proposal.json", cfg.to_dict(proposal))
    return cfg.to_dict(proposal)


def proposal_vector(proposal_uri: str) -> list[int]:
    return _read(proposal_uri, "proposal.json")["rank_vector"]


def update_step(job: JobConfig, state_uri: str, proposal_uri: str, metrics_uri: str, adapter_uri: str,
                pruned_uri: str, data_uri: str, output_uri: str) -> dict:
    """Record the trial in the bank, adapt the surrogate online, write the next search state."""
    state = load_search(state_uri)
    proposal = cfg.from_dict(Proposal, _read(proposal_uri, "proposal.json"))
    metrics = _read(metrics_uri, "metrics.json")
    score = metrics["scores"][job.target_task]
    seconds = _read(adapter_uri, "train_metrics.json")["seconds"] + metrics["seconds"]
    new_state, outcome = update(state, proposal, score, stage(job, "search", SearchConfig), cost=seconds,
                                artifact=adapter_uri)
    structure, data = model_structure(pruned_uri, job.base_model), data_paths(data_uri)
    _record(job, structure, data, job.target_task, "select", proposal.rank_vector, score, "search",
            predicted=proposal.predicted, seconds=seconds, adapter_uri=adapter_uri)
    save_search(new_state, output_uri)
    return {"converged": outcome.converged, "abs_error": outcome.abs_error, "score": score,
            "best": outcome.best.score}


def converged(job: JobConfig, state_uri: str) -> bool:
    """Whether the last trial's prediction was within the threshold of its measurement (the loop gate)."""
    last = load_search(state_uri).measured()[-1]
    return bool(abs(last.predicted - last.score) < stage(job, "search", SearchConfig).threshold)


# ---------------------------------------------------------------------------------------------- finish

def _slim(result: dict) -> dict:
    """An evaluation result without the per-row lists (for tags and tables)."""
    return {**result, "tasks": {t: {k: v for k, v in r.items() if k not in ("rows", "row_ids", "skipped")}
                                for t, r in result["tasks"].items()}}


def _zero_shot_mean(result: dict, tasks: list[str]) -> float | None:
    values = [result["tasks"][t]["value"] for t in tasks if t in result["tasks"]]
    return float(np.mean(values)) if values else None


def verdict_line(task: str, diff: dict, baseline: str = "uniform LoRA r=8") -> str:
    """What the comparison with uniform LoRA says, in plain words (significant at 95% or not)."""
    interval = f"{diff['diff']:+.4f} (95% CI {diff['low']:+.4f} .. {diff['high']:+.4f})"
    if diff["low"] > 0:
        return f"RankAdaptor significantly beats {baseline} on held-out {task}: {interval}"
    if diff["high"] < 0:
        return f"RankAdaptor is significantly WORSE than {baseline} on held-out {task}: {interval}"
    return f"RankAdaptor does NOT significantly beat {baseline} on held-out {task}: {interval} includes 0"


def finish_step(job: JobConfig, state_uri: str, pruned_uri: str, data_uri: str, baselines_uri: str,
                output_uri: str, lineage: dict | None = None) -> dict:
    """Evaluate the best trial on the held-out rows, compare it with the baselines with bootstrap
    intervals, draw the plots, register the adapter in MLflow, and write the report artifact."""
    from rankadaptor import report as rpt
    from rankadaptor.stats import kendall_tau, paired_bootstrap

    state, data = load_search(state_uri), data_paths(data_uri)
    trials = state.measured()
    check(bool(trials), "the search state holds no measured trial of the target task")
    best = max(trials, key=lambda o: o.score)
    baselines = _read(baselines_uri, "baselines.json")
    target, zero_shot = job.target_task, [t for t in job.report_tasks if t != job.target_task]
    model, tokenizer = load_model(pruned_uri, best.artifact)
    ours = {split: measure(model, tokenizer, [target, *job.report_tasks], split, data, job)
            for split in ("select", "report")}
    best_params = lora_parameters(best.rank_vector, state.cost_per_rank)
    order = [m for m in ("pruned", "lora_r8", "losa_masked_r8", "losa", "adalora") if m in baselines]
    from rankadaptor.prune.unstructured import merged_sparsity

    methods = {**{m: baselines[m] for m in order},
               "rankadaptor": {**ours, "trainable_params": best_params, "sparsity": merged_sparsity(model)}}

    rows = []
    for name, result in methods.items():
        row = {"method": name, "trainable_params": result["trainable_params"], "sparsity": result.get("sparsity"),
               f"{target} (select)": result["select"]["scores"][target],
               f"{target} (report)": result["report"]["scores"][target]}
        if target.startswith(PPL):
            row["perplexity (report)"] = result["report"]["tasks"][target]["perplexity"]
        row.update({t: result["report"]["scores"][t] for t in zero_shot})
        row["zero-shot mean (report)"] = _zero_shot_mean(result["report"], zero_shot)
        rows.append(row)
    columns = [c for c in rows[0] if c != "method"]

    comparisons = {}
    for other in order:
        target_rows = {target: ours["report"]["tasks"][target]}
        diff = paired_bootstrap(target_rows, {target: baselines[other]["report"]["tasks"][target]}, seed=job.seed)
        entry = {target: dict(zip(("diff", "low", "high"), diff))}
        if zero_shot:
            entry["zero-shot mean"] = dict(zip(("diff", "low", "high"), paired_bootstrap(
                {t: ours["report"]["tasks"][t] for t in zero_shot},
                {t: baselines[other]["report"]["tasks"][t] for t in zero_shot}, seed=job.seed)))
        comparisons[other] = entry
    anchor = starting_trials(job)[0]  # sparse jobs: masked uniform LoRA, the search's own recovery (issue 19)
    versus_lora = comparisons[anchor][target]
    significant = versus_lora["low"] > 0
    verdict = verdict_line(target, versus_lora, "uniform LoRA r=8" + (" (masked)" if anchor != "lora_r8" else ""))
    searched = [o for o in trials if o.predicted is not None]  # the baseline anchor has no prediction
    history = [{"iteration": i + 1, "rank_vector": o.rank_vector, "predicted": o.predicted, "measured": o.score,
                "abs_error": abs(o.predicted - o.score)} for i, o in enumerate(searched)]
    tau = kendall_tau([h["predicted"] for h in history], [h["measured"] for h in history]) if len(history) >= 3 else None
    # The registry's champion rule compares `report_mean`: here that is the held-out target score.
    registration_report = {**_slim(ours["report"]), "mean": ours["report"]["scores"][target]}
    report = {"target_task": target, "table": rows, "columns": columns, "comparisons": comparisons,
              "significant": significant, "verdict": verdict, "history": history, "kendall_tau": tau,
              "best": {"rank_vector": best.rank_vector, "select_score": best.score, "adapter": best.artifact,
                       "trainable_params": best_params},
              "budget_uniform8": int(8 * sum(state.cost_per_rank)), "iterations": len(history),
              "evaluation": {split: _slim(result) for split, result in ours.items()}}
    with storage.writing_dir(output_uri) as out:
        rpt.plot_ranks(best.rank_vector, out / "ranks.png")
        if history:
            rpt.plot_predicted_vs_measured(history, out / "predicted_vs_measured.png")
            rpt.plot_convergence(history, baselines["lora_r8"]["select"]["scores"][target], out / "convergence.png")
        table = rpt.markdown_table(rows, columns)
        (out / "report.md").write_text(f"# RankAdaptor report\n\n{table}\n\n{verdict}\n\n"
                                       f"Surrogate ranking quality (Kendall tau over the search trials): {tau}\n")
        best_trial = trial_key(job, model_structure(pruned_uri, job.base_model), data, target, "select",
                               best.rank_vector).id
        report["registration"] = register(best.artifact, pruned_uri, registration_report,
                                          stage(job, "registry", RegistryConfig),
                                          lineage={"bank_experiment": job.experiment, "best_trial_id": best_trial,
                                                   "trial_count": len(trials), **(lineage or {})})
        storage.write_json_atomic(out / "report.json", report)
    return report
