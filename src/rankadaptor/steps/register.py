"""The last steps: the best trial on the held-out rows, the report against the baselines and the logged model
(evaluate_best, with the weights), then MLflow registration (register, without them)."""

from __future__ import annotations

import re

from rankadaptor.champion import SEARCHED
from rankadaptor.flows.baselines import baseline_seconds, bootstrap_vectors
from rankadaptor.flows.progress import progress
from rankadaptor.flows.register import model_description, registered_adapter, version_description
from rankadaptor.flows.trials import bootstrap_keys, starting_trials, trial_key
from rankadaptor.infra import storage
from rankadaptor.infra.bank import find_trial
from rankadaptor.infra.claims import OWNER, release
from rankadaptor.job import DIGEST_TAG, PROMOTED, JobConfig, parameters
from rankadaptor.report import OURS, build_report, write_report
from rankadaptor.search.confirm import chosen
from rankadaptor.search.loop import stop_reason
from rankadaptor.search.state import best_trial, load_state
from rankadaptor.serving.registry import ROWS_TAG, create_version, log_report, log_version
from rankadaptor.steps.metrics import flat_metrics
from rankadaptor.steps.model import confirm_finalists, scores
from rankadaptor.steps.search import GO_DECISION

EVALUATION, LOGGED = "report.json", "logged.json"  # the evaluate-best artifact: the report, the logged version


def bootstrap_seconds(job: JobConfig, context) -> list[float]:
    """The banked seconds of the job's bootstrap trials (one recovery each, whichever run paid for it)."""
    found = [find_trial(bootstrap_keys(job, context, v)[0].id, job.bank.experiment, job.tracking_uri())
             for v in bootstrap_vectors(job, context.cost_per_rank)] if job.source_tasks else []
    return [row["cost"] for row in found if row and row.get("cost") is not None]


def evaluate_best(job: JobConfig, state_uri: str, pruned_uri: str, data_uri: str, baselines_uri: str,
                  output_uri: str, lineage: dict | None = None, go_uri: str | None = None,
                  work_uri: str | None = None) -> dict:
    """Choose the best trial (by seed mean over the finalists re-measured at more seeds: steps.model.
    confirm_finalists, their adapters under work_uri + ".trials", default output_uri), evaluate it on both
    splits, build the report, choose the adapter to register and log it with its base (registry.log_version):
    the part of registration that needs the weights. go_uri: the go/no-go's decision (steps.model.go_check), for
    the report's cost section. The confirmation runs here, not in a step of its own, to keep the unrolled
    loop's Workflow within Argo's size limit (docs/architecture.md)."""
    best, trials, context = best_trial(state_uri)
    finalists, confirm_seconds = confirm_finalists(job, context, trials, pruned_uri, data_uri, work_uri or output_uri)
    if finalists:
        best = next(o for o in trials if o.rank_vector == chosen(finalists))
    baselines = storage.read_json(storage.local_dir(baselines_uri) / "baselines.json")
    anchor = starting_trials(job)[0]
    go = storage.read_json(storage.local_dir(go_uri) / GO_DECISION) if go_uri else None
    stopped = (f"not run, {go['reason']}" if go is not None and not go["go"]
               else stop_reason(load_state(state_uri)[0], job.search_config(context.cost_per_rank)))
    progress(f"{job.target_task} search stopped: {stopped}")
    ours = scores(job, pruned_uri, best.artifact, data_uri, job.table_tasks, ("select", "report"))
    report = build_report(job.target_task, job.report_tasks, baselines, ours, trials, context.cost_per_rank,
                          job.baseline_rank, job.budget(context.cost_per_rank), job.seed,
                          noise=job.search.threshold,  # threshold: the trial noise sd
                          anchor=anchor, stop_reason=stopped, go=go,
                          uniform_seconds=(go or {}).get("full_trial_seconds") or baseline_seconds(baselines_uri, anchor),
                          bootstrap_seconds=bootstrap_seconds(job, context) if go is None or go["go"] else None,
                          bootstrap_fidelity=job.bootstrap_fidelity, best=best, finalists=finalists,
                          confirm_seconds=confirm_seconds)
    adapter, held_out = registered_adapter(report, best, ours, baselines, anchor, baselines_uri, job.target_task)
    best_key = trial_key(job, context, job.target_task, "select", best.rank_vector)
    logged = log_version(adapter, pruned_uri, held_out, job.registry_config(),
                         lineage={"task": job.target_task, "base_model": job.base_model,
                                  "bank_experiment": job.bank.experiment, "best_trial_id": best_key.id,
                                  ROWS_TAG: best_key.task_checksum, "trial_count": len(trials),
                                  "registered_adapter": report["decision"]["register"], **(lineage or {})})
    with storage.writing_dir(output_uri) as out:
        storage.write_json_atomic(out / EVALUATION, report)
        storage.write_json_atomic(out / LOGGED, logged)
    return report


def register(job: JobConfig, evaluated_uri: str, output_uri: str) -> dict:
    """Register the logged version (registry.create_version: no weights needed) with its descriptions, write
    the report with its registration and plots, and log them into the run that logged the version."""
    directory = storage.local_dir(evaluated_uri)
    report, logged = storage.read_json(directory / EVALUATION), storage.read_json(directory / LOGGED)
    config = job.registry_config()
    with storage.writing_dir(output_uri) as out:
        report["registration"] = create_version(
            logged, config, version_description(report),
            model_description(job.base_model, pruning_label(job), job.target_task, config.champion_alias))
        # the registry now shows the digest: the catalog task's claim (if this run holds one) is done
        release(config.model_name, logged["tags"].get(DIGEST_TAG, ""), logged["tags"].get(OWNER, ""),
                config.tracking_uri or None)
        write_report(report, out)
        log_report(logged["run_id"], out, run_metrics(report), run_params(job), config)
    return report


def report_metrics(report: dict) -> dict[str, float]:
    """The comparison as flat metrics (KFP's scalar-metrics view): each method's table row and the gain over
    uniform LoRA per split with its interval, e.g. `gain over uniform/report/ppl:heldout/low`."""
    table = {row["method"]: {c: v for c, v in row.items() if c != "method"} for row in report["table"]}
    return flat_metrics({**table, "gain over uniform": report["gain"]})


def run_metrics(report: dict) -> dict[str, float]:
    """report_metrics under names MLflow accepts (`rankadaptor/ppl:heldout (select)` ->
    `rankadaptor/ppl:heldout/select`), plus the noise, the registered adapter's held-out score, whether it is the
    searched one, the number of search trials and the registered version."""
    target = report["target_task"]
    registered = OURS if report["decision"]["register"] == SEARCHED else report["anchor"]
    score = next(row[f"{target} (report)"] for row in report["table"] if row["method"] == registered)
    extra = {"noise sd": report["noise"], f"registered/{target}/report": score,
             "registered searched": float(registered == OURS), "search trials": report["iterations"],
             "registered version": report["registration"]["version"]}
    return {re.sub(r" \((\w+)\)", r"/\1", k): v for k, v in report_metrics(report).items()} | extra


def run_params(job: JobConfig) -> dict:
    """The job's main settings (the pipeline's main choices and promoted stage options) and its pruning."""
    main = {k: v for k, v in parameters(job, PROMOTED).items() if k != "stage_options"}
    return {**main, "prune_mode": job.prune.mode, "baseline_rank": job.baseline_rank}


def pruning_label(job: JobConfig) -> str:
    """The job's pruning in words, e.g. `width, ratio 0.2` or `unstructured 2:4`."""
    return f"{job.prune.mode} {job.prune.nm}" if job.prune.nm else f"{job.prune.mode}, ratio {job.prune.ratio:g}"
