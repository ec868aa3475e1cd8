"""A task's name, kind and rows: the task-name grammar, where each task's file is, its checksum, its
validation and the select/report row split. No lm-eval import: the job, preflight and report read tasks
through this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankadaptor.errors import UserError, check
from rankadaptor.infra import storage

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


@dataclass(frozen=True)
class Task:
    """A task name parsed once: its kind and what it names. Job, preflight, evaluation and report read tasks
    as this value instead of slicing prefixes."""

    name: str
    kind: str  # "lm-eval" (a built-in zero-shot task), "mc" (a user's multiple-choice rows), "ppl" (perplexity)
    source: str  # the lm-eval task, the user's file stem, or "heldout" (ppl:heldout: the job's held-out text)

    @property
    def custom(self) -> bool:
        """A user's own task (mc:<name>, ppl:<name>): it may take a file of its own."""
        return self.kind == "mc" or (self.kind == "ppl" and self.source not in ("heldout", *TASKS))

    @property
    def lm_eval_task(self) -> str | None:
        """The built-in lm-eval task whose rows this task reads (boolq, ppl:boolq), if any."""
        return self.source if self.source in TASKS and self.kind != "mc" else None


def parse_task(name: str) -> Task:
    check(task_ok(name), f"unknown task {name!r}; accepted: {ACCEPTED}")
    if name in TASKS:
        return Task(name, "lm-eval", name)
    prefix, _, source = name.partition(":")
    return Task(name, prefix, source)


def task_file(task: str) -> str | None:
    """The file of data_dir a task's rows come from; None for ppl:heldout (its text is ppl_text)."""
    parsed = parse_task(task)
    if parsed.kind == "mc":
        return f"{parsed.source}.jsonl"
    if parsed.lm_eval_task:
        return f"{parsed.lm_eval_task}_{TASKS[parsed.lm_eval_task].split}.jsonl"
    return None if parsed.source == "heldout" else f"{parsed.source}.txt"


def check_task_files(task_files: dict[str, str]) -> None:
    """Only a user's own tasks (mc:<name>, ppl:<name>) take a file of their own; the lm-eval tasks' rows keep
    their file names in data_dir, which the splits and prompts rely on."""
    wrong = sorted(t for t in task_files if not (task_ok(t) and parse_task(t).custom))
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
        if parse_task(name).kind == "mc":
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
