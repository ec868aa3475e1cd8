"""The evaluate stage: zero-shot accuracy on the paper's seven tasks with lm-eval's official prompts and
metrics, on a held-out or a search split of the rows, with per-row correctness for paired statistics.

Prompts and metrics come from lm-eval's own built-in task YAMLs, read at runtime; only the data source
may be swapped for local or s3:// JSONL files (`<task>_<split>.jsonl`), so scores stay comparable with
published numbers. A user's own multiple-choice task (`mc:<name>`, rows `<name>.jsonl`) becomes an lm-eval
task config of the same kind (multiple_choice, acc and acc_norm) and is scored by the same code; a user's
own text (`ppl:<name>`, `<name>.txt`) is scored like the held-out text (docs/tasks.md). Rows are chosen
with the `samples` argument of lm-eval's evaluator, which works for hub and local data alike. Speed
matters because the search pays one evaluation per trial: lm-eval already sorts requests by length, so
batching them (instead of lm-eval's default batch_size=1) is the main gain, and it leaves the scores
unchanged. Against lm-eval at its own best batch size the scoring is the same work
(benchmarks/speed/evaluate_throughput.py measures both and checks every row; RESULTS.md).

A model whose context is shorter than some answer (the 128-token test model on a few PIQA/HellaSwag rows)
cannot score that row; lm-eval would stop with an assertion, here the row is listed as skipped instead.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np

from rankadaptor.config import to_dict
from rankadaptor.data import read_texts
from rankadaptor.errors import check
from rankadaptor.evaluate.config import EvalConfig
from rankadaptor.evaluate.harness import evaluate
from rankadaptor.evaluate.perplexity import document_log_likelihoods
from rankadaptor.evaluate.tasks import _local, data_files, parse_task, split_rows, task_file
from rankadaptor.infra import storage
from rankadaptor.models.loading import resolve_device
from rankadaptor.recover.adapters import load_adapted

log = logging.getLogger(__name__)


def run_evaluate(config: EvalConfig, model_uri: str, output_uri: str, adapter_uri: str | None = None) -> dict:
    """The stage: load the model (and adapter), evaluate, write metrics.json as an artifact at output_uri."""
    config.validate()
    device = resolve_device(config.device)
    model, tokenizer = load_adapted(model_uri, adapter_uri, device=device)
    metrics = score(model, tokenizer, config)
    with storage.writing_dir(output_uri) as out:
        storage.write_json_atomic(out / "metrics.json", metrics)
    log.info("evaluated %s on %s: mean %.4f", model_uri, config.split, metrics["mean"])
    return metrics


def ppl_documents(task: str, config: EvalConfig) -> list[str]:
    """The documents of a ppl: task: the held-out text, one document per row of an lm-eval task, or the
    documents (separated by blank lines) of the user's <name>.txt."""
    from rankadaptor.data import read_records

    parsed = parse_task(task)
    name = parsed.source
    if name == "heldout":
        check(bool(config.ppl_text), f"task {task!r} needs held-out text: give the job heldout_text with its data")
        return read_texts(config.ppl_text)
    if not parsed.lm_eval_task:
        return read_texts(str(_local(task, config.data_dir, config.task_files)[0]))
    check(config.data_dir is not None, f"task {task!r} reads {task_file(task)} from data_dir; set it")
    rows = read_records(str(data_files(config.data_dir, [name])[name]))
    return [" ".join(str(v) for v in row.values() if isinstance(v, str) and v) for row in rows]


def score(model, tokenizer, config: EvalConfig) -> dict:
    """evaluate() extended to ppl: tasks (mean log-likelihood per token of each document): per task the
    value, stderr, n and the per-row values behind it (for paired comparisons); `scores` per task."""
    config.validate()
    started = time.perf_counter()
    zero_shot = [t for t in config.tasks if parse_task(t).kind != "ppl"]
    metrics: dict = {"tasks": {}, "split": config.split, "config": to_dict(config)}
    if zero_shot:
        lm_eval_metrics = evaluate(model, tokenizer, dataclasses.replace(config, tasks=zero_shot))
        metrics["tasks"].update(lm_eval_metrics["tasks"])
        metrics.update({k: v for k, v in lm_eval_metrics.items() if k == "perplexity"})
    for task in (t for t in config.tasks if parse_task(t).kind == "ppl"):
        texts = ppl_documents(task, config)
        row_ids = split_rows(task, len(texts), config.split, config.select_fraction, config.seed, config.limit)
        rows = document_log_likelihoods(model, tokenizer, [texts[i] for i in row_ids],
                                        config.max_length or model.config.max_position_embeddings, config.batch_size)
        metrics["tasks"][task] = {"metric": "loglik_per_token", "value": float(np.mean(rows)),
                                  "stderr": float(np.std(rows, ddof=1) / math.sqrt(len(rows))) if len(rows) > 1 else None,
                                  "n": len(rows), "rows": rows, "row_ids": row_ids,
                                  "perplexity": float(math.exp(-np.mean(rows)))}
    metrics["scores"] = {t: metrics["tasks"][t]["value"] for t in config.tasks}
    metrics["mean"] = float(np.mean(list(metrics["scores"].values())))
    metrics["seconds"] = time.perf_counter() - started
    return metrics
