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
(benchmarks/evaluate_throughput.py measures both and checks every row; RESULTS.md).

A model whose context is shorter than some answer (the 128-token test model on a few PIQA/HellaSwag rows)
cannot score that row; lm-eval would stop with an assertion, here the row is listed as skipped instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rankadaptor import storage
from rankadaptor.config import option, to_dict
from rankadaptor.data import read_texts
from rankadaptor.errors import UserError, check
from rankadaptor.modeling import load_model, resolve_device
from rankadaptor.perplexity import document_log_likelihoods, perplexity

log = logging.getLogger(__name__)

SPLITS = ("select", "report", "all")
PPL = "ppl:"  # `ppl:heldout` (the text in ppl_text), `ppl:<lm-eval task>` (its rows' text), `ppl:<name>` (<name>.txt)
MC = "mc:"  # a user's multiple-choice task `mc:<name>`: its rows are <name>.jsonl in data_dir


@dataclass(frozen=True)
class TaskSpec:
    yaml: str  # built-in lm-eval config, relative to lm_eval/tasks/
    split: str  # the split lm-eval evaluates (and the suffix of the local data file)
    metric: str  # the reported metric, by this line of work's convention
    fields: tuple[str, ...]  # what each data row needs for the official prompt


_ARC_FIELDS = ("question", "choices", "answerKey")
TASKS: dict[str, TaskSpec] = {
    "boolq": TaskSpec("super_glue/boolq/default.yaml", "validation", "acc", ("passage", "question", "label")),
    "piqa": TaskSpec("piqa/piqa.yaml", "validation", "acc", ("goal", "sol1", "sol2", "label")),
    "hellaswag": TaskSpec("hellaswag/hellaswag.yaml", "validation", "acc_norm",
                          ("activity_label", "ctx_a", "ctx_b", "endings", "label")),
    "winogrande": TaskSpec("winogrande/default.yaml", "validation", "acc", ("sentence", "option1", "option2", "answer")),
    "arc_easy": TaskSpec("arc/arc_easy.yaml", "test", "acc", _ARC_FIELDS),
    "arc_challenge": TaskSpec("arc/arc_challenge.yaml", "test", "acc_norm", _ARC_FIELDS),
    "openbookqa": TaskSpec("openbookqa/openbookqa.yaml", "test", "acc_norm", ("question_stem", "choices", "answerKey")),
}


# A user's task: one JSON object per line with the fields lm-eval's own multiple-choice tasks build
# (hellaswag's process_docs: query, choices, gold), used as doc_to_text / doc_to_choice / doc_to_target.
MC_FIELDS = ("query", "choices", "gold")
MC_SCHEMA = ('{"query": "<prompt text>", "choices": ["<answer>", "<answer>", ...], "gold": <index of the right '
             'answer, from 0>}')
MC_METRIC = "acc"  # the reported metric of a user's task; acc_norm is reported beside it
CUSTOM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a file name in data_dir, never a path
ACCEPTED = (f"{list(TASKS)} (lm-eval), mc:<name> (your multiple-choice rows <name>.jsonl in the data "
            "directory), ppl:heldout, ppl:<lm-eval task> or ppl:<name> (your text <name>.txt in the data directory); "
            "see docs/tasks.md")


def task_ok(task: str) -> bool:
    """Whether task is a name evaluation accepts (ACCEPTED)."""
    if task in TASKS:
        return True
    prefix, _, name = task.partition(":")
    return f"{prefix}:" in (PPL, MC) and CUSTOM_NAME.fullmatch(name) is not None


def task_file(task: str) -> str | None:
    """The file of data_dir a task's rows come from; None for ppl:heldout (its text is ppl_text)."""
    if task.startswith(MC):
        return f"{task[len(MC):]}.jsonl"
    if task.startswith(PPL):
        name = task[len(PPL):]
        return None if name == "heldout" else task_file(name) if name in TASKS else f"{name}.txt"
    return f"{task}_{TASKS[task].split}.jsonl"


def _is_custom(task: str) -> bool:
    return task.startswith(MC) or (task.startswith(PPL) and task[len(PPL):] not in ("heldout", *TASKS))


@dataclass
class EvalConfig:
    tasks: list[str] = option(list(TASKS), f"tasks to score: {ACCEPTED}", set_by_job=True)
    data_dir: str | None = option(None, "directory (local or s3://) of <task>_<split>.jsonl files, e.g. "
                                        "boolq_validation.jsonl, arc_easy_test.jsonl, and of your own tasks' "
                                        "<name>.jsonl / <name>.txt; default: the hub datasets",
                                  set_by_job=True)
    task_files: dict[str, str] = option({}, "your tasks' own files by task name, e.g. {'mc:tickets': "
                                            "'s3://b/tickets.jsonl'} (local or s3://), instead of <name>.jsonl / "
                                            "<name>.txt in data_dir", set_by_job=True)
    split: str = option("select", f"rows to evaluate, one of {SPLITS}: 'select' drives the search, 'report' is "
                                  "held out from it and reported to the user", set_by_job=True)
    select_fraction: float = option(0.5, "fraction of each task's rows in the 'select' split, in (0, 1)")
    limit: int | None = option(None, "at most this many rows per task after the split (cheap search trials)")
    batch_size: int = option(32, "requests per forward pass (lm-eval's default is 1)")
    max_length: int | None = option(None, "context length in tokens (default: the model's max_position_embeddings)")
    seed: int = option(0, "seed of the select/report split and of the row order under limit")
    ppl_text: str | None = option(None, "also report perplexity on this .txt/.jsonl file (local or s3://)",
                                   set_by_job=True)
    ppl_seq_len: int = option(128, "window length for perplexity (at most max_length)")
    device: str = option("auto", "auto, cpu, cuda or cuda:N", runtime=True)

    def validate(self) -> None:
        check(bool(self.tasks), f"tasks is empty; accepted: {ACCEPTED}")
        unknown = [t for t in self.tasks if not task_ok(t)]
        check(not unknown, f"unknown task(s) {unknown}; accepted: {ACCEPTED}")
        custom = [t for t in self.tasks if _is_custom(t) and t not in self.task_files]
        check(not custom or self.data_dir is not None,
              f"task(s) {custom} read {[task_file(t) for t in custom]} from the data directory: set data_dir "
              "(a job's eval_data_dir) or give their files in task_files")
        check_task_files(self.task_files)
        check(len(set(self.tasks)) == len(self.tasks), f"tasks={self.tasks} lists a task twice")
        check(self.split in SPLITS, f"split={self.split!r} is not accepted; use one of {SPLITS}")
        check(0.0 < self.select_fraction < 1.0, f"select_fraction={self.select_fraction} is outside (0, 1)")
        for name in ("limit", "max_length"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{name}={value} must be a positive integer (or null)")
        for name in ("batch_size", "ppl_seq_len"):
            check(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be a positive integer")
        check(self.max_length is None or self.ppl_seq_len <= self.max_length,
              f"ppl_seq_len={self.ppl_seq_len} is longer than max_length={self.max_length}")


def check_task_files(task_files: dict[str, str]) -> None:
    """Only a user's own tasks (mc:<name>, ppl:<name>) take a file of their own; the lm-eval tasks' rows keep
    their file names in data_dir, which the splits and prompts rely on."""
    wrong = sorted(t for t in task_files if not (task_ok(t) and _is_custom(t)))
    check(not wrong, f"task_files names {wrong}: only your own tasks mc:<name> and ppl:<name> take a file of "
                     "their own (the lm-eval tasks read <task>_<split>.jsonl from the data directory)")


def task_uri(task: str, data_dir: str | None, task_files: dict[str, str] | None = None) -> str | None:
    """Where a task's rows are: its own file, else task_file(task) in data_dir; None when neither applies
    (ppl:heldout reads the job's held-out text; without a data directory an lm-eval task reads the hub)."""
    if task in (task_files or {}):
        return task_files[task]
    if not data_dir or task_file(task) is None:
        return None
    return storage.join(data_dir, task_file(task))


def _local(task: str, data_dir: str | None, task_files: dict[str, str] | None = None) -> tuple[Path, str]:
    """A local copy of the file a task reads, and its URI (for messages)."""
    uri = task_uri(task, data_dir, task_files)
    check(uri is not None, f"task {task!r} reads {task_file(task)} from the data directory; set data_dir")
    try:
        return storage.local_file(uri), uri
    except UserError:
        where = "its file" if task in (task_files or {}) else f"the file {task_file(task)} in data_dir={data_dir!r}"
        raise UserError(f"task {task!r} needs {where}: not found at {uri!r}") from None


def data_files(data_dir: str | None, tasks: list[str], task_files: dict[str, str] | None = None) -> dict[str, Path]:
    """Local copies of each task's JSONL file (its own, or under data_dir), each checked to hold the rows its
    prompt needs (a user's mc: task: its rows checked against the schema and written in the schema's fields
    only); a task with neither reads the hub and is left out."""
    files = {}
    for name in tasks:
        if task_uri(name, data_dir, task_files) is None:
            continue
        path, uri = _local(name, data_dir, task_files)
        if name.startswith(MC):
            files[name] = _mc_file(path, uri)
        else:
            _check_rows(path, uri, TASKS[name])
            files[name] = path.resolve()  # the json loader resolves relative paths against the CWD
    return files


def task_checksum(task: str, data_dir: str | None, task_files: dict[str, str] | None = None) -> str:
    """sha256 of the file a task's rows come from, so that a changed file makes new trials; '' when the task
    reads no file (the hub's data; ppl:heldout, which reads the job's held-out text)."""
    if task_uri(task, data_dir, task_files) is None:
        return ""
    return storage.sha256_file(_local(task, data_dir, task_files)[0])


def _json_rows(path: Path, uri: str):
    """(line number, object) of each non-blank line of a JSONL file; one line naming the file and line if bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"data file {uri!r} is not UTF-8 text: {e}") from None
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{uri!r} line {line_no} is not valid JSON: {e.msg} at column {e.colno}") from None
        yield line_no, row


def _check_rows(path: Path, uri: str, spec: TaskSpec) -> None:
    n = 0
    for line_no, row in _json_rows(path, uri):
        missing = [k for k in spec.fields if not isinstance(row, dict) or k not in row]
        check(not missing, f"{uri!r} line {line_no} lacks field(s) {missing}; each row needs {list(spec.fields)}")
        n += 1
    check(n > 0, f"data file {uri!r} is empty: expected one JSON object per line with {list(spec.fields)}")


def mc_row_error(row: object) -> str | None:
    """What is wrong with one row of a user's multiple-choice task (None: nothing)."""
    if not isinstance(row, dict):
        return f"is not a JSON object; each line is {MC_SCHEMA}"
    missing = [k for k in MC_FIELDS if k not in row]
    if missing:
        return f"lacks field(s) {missing}; each line is {MC_SCHEMA}"
    query, choices, gold = (row[k] for k in MC_FIELDS)
    if not isinstance(query, str) or not query.strip():
        return f"query={query!r} must be a non-empty string"
    if not isinstance(choices, list) or len(choices) < 2:
        return f"choices={choices!r} must be a list of at least 2 answers"
    if not all(isinstance(c, str) and c.strip() for c in choices):
        return f"choices={choices!r} must all be non-empty strings"
    if len(set(choices)) < len(choices):
        return f"choices={choices!r} repeat an answer (the row's score would depend on their order)"
    if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
        return (f"gold={gold!r} is out of range: the index of the right answer among {len(choices)} choices, "
                f"0 to {len(choices) - 1}")
    return None


def _mc_file(path: Path, uri: str) -> Path:
    """The checked rows of a user's task, written with the schema's fields only (other fields are the user's;
    the json loader needs one type per column), in the cache under their content hash."""
    rows = []
    for line_no, row in _json_rows(path, uri):
        error = mc_row_error(row)
        check(error is None, f"{uri!r} line {line_no}: {error}")
        rows.append(json.dumps({k: row[k] for k in MC_FIELDS}, ensure_ascii=False))
    check(bool(rows), f"data file {uri!r} is empty: expected one JSON object per line, {MC_SCHEMA}")
    text = "\n".join(rows) + "\n"
    target = storage.cache_root() / "tasks" / f"{hashlib.sha256(text.encode()).hexdigest()}.jsonl"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, target)
    return target.resolve()


def mc_config(name: str, data_file: Path) -> dict:
    """The lm-eval task config of a user's multiple-choice task: the fields as doc_to_text / doc_to_choice /
    doc_to_target, each answer scored as the continuation of the query after a space, acc and acc_norm."""
    return {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data_file)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "query",
            "doc_to_choice": "choices", "doc_to_target": "gold", "target_delimiter": " ",
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                            for m in ("acc", "acc_norm")]}


def task_config(name: str, data_file: Path | None = None) -> dict:
    """lm-eval's built-in config of a task (prompts, metrics, process_docs), reading data_file if given."""
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    if name.startswith(MC):
        check(data_file is not None, f"task {name!r} reads {task_file(name)} from data_dir; set it")
        return mc_config(name, data_file)
    spec = TASKS[name]
    # Loaded from its own path so that `!function utils.process_docs` resolves next to the built-in YAML.
    config = load_yaml(Path(lm_eval.__file__).parent / "tasks" / spec.yaml)
    if data_file is not None:
        config.update(dataset_path="json", dataset_name=None, training_split=None, fewshot_split=None,
                      validation_split=spec.split if spec.split == "validation" else None,
                      test_split=spec.split if spec.split == "test" else None,
                      dataset_kwargs={"data_files": {spec.split: str(data_file)}})
    return config


def split_rows(name: str, n: int, split: str, select_fraction: float, seed: int,
               limit: int | None = None) -> list[int]:
    """The row indices of one task's split, sorted (lm-eval's `samples` needs ascending indices).

    One seeded permutation per task cuts the rows into 'select' (the first round(n * fraction)) and
    'report' (the rest); `limit` keeps the first rows of that permuted order, so smaller limits are
    subsets of larger ones and the rows kept are a random sample, not the start of the file."""
    order = np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(n)
    cut = round(n * select_fraction)
    rows = {"select": order[:cut], "report": order[cut:], "all": order}[split]
    return sorted(int(i) for i in rows[:limit])


def _lm_class():
    """lm-eval's HFLM, except that a request whose answer alone is longer than the context is left unscored
    (HFLM truncates contexts only, and asserts on such answers) and remembered, so that evaluate() can
    report its row as skipped and leave it out of the scores. Other requests are scored by HFLM unchanged."""
    from lm_eval.models.huggingface import HFLM

    class ContextBoundHFLM(HFLM):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.unscorable: set[tuple[str, str]] = set()

        def _loglikelihood_tokens(self, requests, disable_tqdm=False, override_bs=None):
            fits = [len(continuation) <= self.max_length for _, _, continuation in requests]
            self.unscorable.update(req[0] for req, ok in zip(requests, fits) if not ok)
            scored = iter(super()._loglikelihood_tokens([r for r, ok in zip(requests, fits) if ok],
                                                        disable_tqdm=disable_tqdm, override_bs=override_bs))
            return [next(scored) if ok else (-math.inf, False) for ok in fits]

    return ContextBoundHFLM


def evaluate(model, tokenizer, config: EvalConfig) -> dict:
    """Evaluate an in-memory model (plain, pruned or peft-wrapped) and return the metrics.json content:
    per task the metric, its value and lm-eval's stderr over the evaluated rows, n, and the 0/1
    correctness of every row with its row id (for paired bootstrap tests); the mean over tasks."""
    import lm_eval.evaluator
    from lm_eval.api.metrics import mean, mean_stderr
    from lm_eval.tasks import TaskManager

    config.validate()
    files = data_files(config.data_dir, config.tasks, config.task_files)
    ppl_texts = read_texts(config.ppl_text) if config.ppl_text else None
    max_length = config.max_length or model.config.max_position_embeddings
    check(not ppl_texts or config.ppl_seq_len <= max_length,
          f"ppl_seq_len={config.ppl_seq_len} is longer than the context max_length={max_length}")
    start = time.perf_counter()
    # An empty TaskManager: the tasks come in as config dicts, so lm-eval's 14k-task index is never built.
    manager, task_configs = TaskManager(include_defaults=False), [task_config(n, files.get(n)) for n in config.tasks]
    try:
        tasks = manager.load(task_configs)["tasks"]
    except Exception as e:  # datasets raises many kinds (offline hub, bad schema); name the cause
        where = f"data_dir={config.data_dir!r}" if config.data_dir else "the hub (offline? pass data_dir)"
        raise UserError(f"cannot load the task data from {where}: {type(e).__name__}: {e}") from None
    samples = {name: split_rows(name, len(task.eval_docs), config.split, config.select_fraction, config.seed,
                                config.limit) for name, task in tasks.items()}
    empty = [name for name, rows in samples.items() if not rows]
    check(not empty, f"split {config.split!r} of task(s) {empty} has no rows: too few rows for "
                     f"select_fraction={config.select_fraction}")

    was_training, used_cache = model.training, model.config.use_cache
    model.config.use_cache = False  # no KV cache is needed to score whole sequences
    try:
        lm = _lm_class()(pretrained=model, tokenizer=tokenizer, batch_size=config.batch_size, max_length=max_length)
        # lm-eval's evaluate() rather than simple_evaluate(): the latter also probes the environment (`pip
        # list` and more in subprocesses: over a second per call) and reseeds the global RNGs of the caller.
        # What else it does for these tasks is the zero-shot setting, done here.
        for task in tasks.values():
            task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=config.seed)
        with torch.inference_mode():
            results = lm_eval.evaluator.evaluate(lm=lm, task_dict={"tasks": tasks}, samples=samples)
            perplexity_value = (perplexity(model, tokenizer, ppl_texts, config.ppl_seq_len, config.batch_size)
                                if ppl_texts else None)
    finally:
        model.config.use_cache = used_cache
        model.train(was_training)

    metrics: dict = {"tasks": {}, "split": config.split, "config": to_dict(config)}
    for name in config.tasks:
        metric = MC_METRIC if name.startswith(MC) else TASKS[name].metric
        logged = sorted(results["samples"][name], key=lambda s: s["doc_id"])
        scored = [not any(tuple(args) in lm.unscorable for args in s["arguments"]) for s in logged]
        rows = [int(s[metric]) for s, ok in zip(logged, scored) if ok]
        check(bool(rows), f"no row of task {name!r} fits in max_length={max_length} tokens")
        # value and stderr are lm-eval's own aggregation (mean, mean_stderr) over the scored rows
        metrics["tasks"][name] = {
            "metric": metric, "value": mean(rows), "stderr": mean_stderr(rows) if len(rows) > 1 else None,
            "n": len(rows), "rows": rows, "row_ids": [s["doc_id"] for s, ok in zip(logged, scored) if ok],
            "skipped": [s["doc_id"] for s, ok in zip(logged, scored) if not ok],
            **({"acc_norm": mean([int(s["acc_norm"]) for s, ok in zip(logged, scored) if ok])}
               if name.startswith(MC) else {}),
        }
    metrics["mean"] = float(np.mean([t["value"] for t in metrics["tasks"].values()]))
    if perplexity_value is not None:
        metrics["perplexity"] = perplexity_value
    metrics["seconds"] = time.perf_counter() - start
    return metrics


def run_evaluate(config: EvalConfig, model_uri: str, output_uri: str, adapter_uri: str | None = None) -> dict:
    """The stage: load the model (and adapter), evaluate, write metrics.json as an artifact at output_uri."""
    config.validate()
    device = resolve_device(config.device)
    model, tokenizer = load_model(model_uri, adapter_uri, device=device)
    metrics = score(model, tokenizer, config)
    with storage.writing_dir(output_uri) as out:
        storage.write_json_atomic(out / "metrics.json", metrics)
    log.info("evaluated %s on %s: mean %.4f", model_uri, config.split, metrics["mean"])
    return metrics


def ppl_documents(task: str, config: EvalConfig) -> list[str]:
    """The documents of a ppl: task: the held-out text, one document per row of an lm-eval task, or the
    documents (separated by blank lines) of the user's <name>.txt."""
    from rankadaptor.data import read_records

    name = task[len(PPL):]
    if name == "heldout":
        check(bool(config.ppl_text), f"task {task!r} needs held-out text: give the job heldout_text with its data")
        return read_texts(config.ppl_text)
    if name not in TASKS:
        return read_texts(str(_local(task, config.data_dir, config.task_files)[0]))
    check(config.data_dir is not None, f"task {task!r} reads {task_file(task)} from data_dir; set it")
    rows = read_records(str(data_files(config.data_dir, [name])[name]))
    return [" ".join(str(v) for v in row.values() if isinstance(v, str) and v) for row in rows]


def score(model, tokenizer, config: EvalConfig) -> dict:
    """evaluate() extended to ppl: tasks (mean log-likelihood per token of each document): per task the
    value, stderr, n and the per-row values behind it (for paired comparisons); `scores` per task."""
    config.validate()
    started = time.perf_counter()
    zero_shot = [t for t in config.tasks if not t.startswith(PPL)]
    metrics: dict = {"tasks": {}, "split": config.split, "config": to_dict(config)}
    if zero_shot:
        lm_eval_metrics = evaluate(model, tokenizer, dataclasses.replace(config, tasks=zero_shot))
        metrics["tasks"].update(lm_eval_metrics["tasks"])
        metrics.update({k: v for k, v in lm_eval_metrics.items() if k == "perplexity"})
    for task in (t for t in config.tasks if t.startswith(PPL)):
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
