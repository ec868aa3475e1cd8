"""A task catalog: one YAML file (local or s3://) of the tasks a scheduled pipeline keeps a champion for.

Each run reads it, makes one job per task (the catalog's shared `job` options, the task as target, its own
overrides) and plans: a task runs its search when its registered model has no champion yet or when the
job's content digest (options + the content of every input, rankadaptor.infra.fingerprint) differs from that of
the model's latest version; otherwise it costs one registry lookup. The tasks of one run share the pruned
model, the corpus and the bootstrap trials, so the options that make those are shared (SHARED); the
search meta-pretrains on the whole bank, other tasks' trials included. A task that searches is claimed first
(claim_search), so an overlapping run skips it. docs/deploy.md, "Scheduling new tasks".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rankadaptor import config as cfg
from rankadaptor.config import option
from rankadaptor.errors import UserError, check
from rankadaptor.evaluate.tasks import CUSTOM_NAME, MC, PPL, TASKS
from rankadaptor.infra import storage
from rankadaptor.infra.claims import Claim
from rankadaptor.job import (
    DIGEST_TAG,
    FINGERPRINTS,
    INPUTS,
    JobConfig,
    check_loop_cap,
    job_digest,
    job_from_dict,
    job_inputs,
    job_to_json,
)

# Tasks searching in one run at most: each adds its nodes to the run's Argo Workflow object, which must stay
# under Argo's 1 MiB; 4 is 70% of it at the compiled loop cap since the go/no-go's branches
# (benchmarks/sizing/workflow_size.py, docs/operations.md, "Workflow size").
# The others search in the next run.
MAX_TASKS_PER_RUN = 4
KINDS = {"lm-eval": "", "mc": MC, "text": PPL}  # a task's kind -> the prefix of its target task name
# Job options one pruned model, corpus and bootstrap serve: the catalog's `job` sets them for every task.
SHARED = ("base_model", "data", "heldout_text", "eval_data_dir", "seed", "corpus_docs", "corpus_tokens", "prune",
          "source_tasks", "bootstrap_trials", "bootstrap_fraction", "bank", "runtime")
EXAMPLE = """job: {base_model: s3://models/llama-7b, eval_data_dir: s3://data/tasks, prune: {ratio: 0.2}}
tasks:
  - {name: tickets, kind: mc, data: s3://data/tickets.jsonl}
  - {name: boolq, kind: lm-eval, overrides: {search: {max_iterations: 4}}}"""


@dataclass
class CatalogTask:
    name: str = option("", "the task: an lm-eval task's name (kind lm-eval), else your name for it (letters, "
                           "digits, _ . -)")
    kind: str = option("mc", f"{list(KINDS)}: an lm-eval task (rows from the job's eval_data_dir), your "
                             "multiple-choice JSONL (docs/tasks.md) or your text, scored as ppl:<name>")
    data: str = option("", "the task's file (local or s3://): JSONL rows (mc) or text (text); none for lm-eval")
    overrides: dict[str, Any] = option({}, "job options of this task only (search, recover, evaluate, surrogate, "
                                           f"registry, report_tasks, ...; not the shared {list(SHARED)})")

    @property
    def target(self) -> str:
        return KINDS[self.kind] + self.name

    def validate(self) -> None:
        check(self.kind in KINDS, f"task {self.name!r}: kind={self.kind!r} is not accepted; use one of {list(KINDS)}")
        if self.kind == "lm-eval":
            check(self.name in TASKS, f"task {self.name!r} of kind lm-eval is not one of {list(TASKS)}")
            check(not self.data, f"task {self.name!r}: an lm-eval task reads <task>_<split>.jsonl from the job's "
                                 "eval_data_dir; remove data")
        else:
            check(CUSTOM_NAME.fullmatch(self.name) is not None and self.name != "heldout",
                  f"task name {self.name!r} is not accepted: letters, digits, _ . - (not 'heldout')")
            check(bool(self.data), f"task {self.name!r} of kind {self.kind} needs data: the URI of its file")
        shared = sorted(set(self.overrides) & set(SHARED))
        check(not shared, f"task {self.name!r}: overrides {shared} are shared by every task of the catalog (one "
                          "pruned model, corpus and bootstrap per run): set them under job")
        check("target_task" not in self.overrides, f"task {self.name!r}: the task is its job's target_task; "
                                                   "remove it from overrides")


@dataclass
class Catalog:
    job: dict[str, Any]
    tasks: list[CatalogTask]
    claim_hours: float = option(24.0, "how long a run's claim on a task it searches holds (rankadaptor.infra.claims): "
                                      "an overlapping run skips the task meanwhile; after it, a run that died no "
                                      "longer blocks the task. Longer than a task's search")


def parse_catalog(values: Any, where: str) -> Catalog:
    check(isinstance(values, dict) and set(values) <= {"job", "tasks", "claim_hours"} and "tasks" in values,
          f"{where} must be a mapping with `tasks` (a list) and optionally `job` (shared job options) and "
          f"`claim_hours`, e.g.\n{EXAMPLE}")
    hours = values.get("claim_hours", Catalog.__dataclass_fields__["claim_hours"].default)
    check(isinstance(hours, (int, float)) and not isinstance(hours, bool) and hours > 0,
          f"{where}: claim_hours={hours!r} is not accepted: a number of hours above 0")
    job = values.get("job") or {}
    check(isinstance(job, dict), f"{where}: job must be a mapping of job options, not {job!r}")
    for key, why in (("target_task", "each task is its own job's target"),
                     ("task_files", "give each task's file as its data")):
        check(key not in job, f"{where}: job may not set {key}: {why}")
    check(not (job.get("registry") or {}).get("model_name"),
          f"{where}: job may not set registry.model_name: each task needs a model of its own (named by the rule, "
          "or set in the task's overrides)")
    entries = values["tasks"]
    check(isinstance(entries, list) and bool(entries), f"{where}: tasks must be a non-empty list, e.g.\n{EXAMPLE}")
    tasks = []
    for i, entry in enumerate(entries):
        try:
            tasks.append(cfg.from_dict(CatalogTask, entry))
        except UserError as e:
            raise UserError(f"{where} tasks[{i}]: {e}") from None
    targets = [t.target for t in tasks]
    twice = sorted({t for t in targets if targets.count(t) > 1})
    check(not twice, f"{where}: task(s) {twice} listed twice")
    return Catalog(job, tasks, float(hours))


def load_catalog(uri: str) -> Catalog:
    """The catalog at uri (local or s3://), checked: one line naming the file and the fault otherwise."""
    where = f"catalog {uri!r}"
    try:
        path = storage.local_file(uri)
    except UserError:
        raise UserError(f"{where} not found: give a YAML file (local or s3://), e.g.\n{EXAMPLE}") from None
    return parse_catalog(cfg.parse_yaml(path.read_text(encoding="utf-8"), where), where)


def task_job(catalog: Catalog, task: CatalogTask) -> JobConfig:
    """The job of one catalog task: the shared options, the task as target (its file as its rows), its overrides."""
    values = {**catalog.job, **task.overrides, "target_task": task.target,
              **({"task_files": {task.target: task.data}} if task.data else {})}
    try:
        return job_from_dict(values)
    except UserError as e:
        raise UserError(f"task {task.target!r}: {e}") from None


def task_jobs(catalog: Catalog, loop_cap: int = 0) -> list[JobConfig]:
    """Every task's job, each valid and within the compiled loop; no two register to the same model."""
    jobs = [task_job(catalog, task) for task in catalog.tasks]
    for job in jobs:
        check_loop_cap(job, loop_cap)
    names = [job.registry_config().model_name for job in jobs]
    twice = sorted({n for n in names if names.count(n) > 1})
    check(not twice, f"tasks register to the same model(s) {twice}: give them registry.model_name overrides")
    return jobs


def check_catalog(uri: str, loop_cap: int = 0, root: str | None = None, scratch_size: str = "") -> list[JobConfig]:
    """The catalog's task jobs after every task's preflight (rankadaptor.ops.preflight): all problems of all
    tasks in one line, each naming its task, before any compute."""
    return checked_jobs(load_catalog(uri), loop_cap, root, scratch_size)


def checked_jobs(catalog: Catalog, loop_cap: int = 0, root: str | None = None,
                 scratch_size: str = "") -> list[JobConfig]:
    """check_catalog of a loaded catalog."""
    from rankadaptor.ops.preflight import job_problems

    jobs = task_jobs(catalog, loop_cap)
    found = [f"task {job.target_task!r}: {problem}" for job in jobs for problem in job_problems(job, root, scratch_size)]
    check(not found, "; ".join(found))
    return jobs


def job_jsons(jobs: list[JobConfig]) -> list[str]:
    """Each job's JSON with its inputs' fingerprints (an input several jobs share is read once)."""
    from rankadaptor.infra.fingerprint import fingerprint

    inputs = [job_inputs(job) for job in jobs]
    known = {uri: fingerprint(uri) for uri in {uri for named in inputs for uri in named.values()}}
    return [job_to_json(job, {name: known[uri] for name, uri in named.items()}) for job, named in zip(jobs, inputs)]


@dataclass
class Decision:
    task: str
    model_name: str
    run: bool
    why: str
    digest: str  # the job's (job_digest): with the model, the key a search claims

def decide(job: JobConfig, text: str) -> Decision:
    """Whether this task's search runs: no champion yet, or a job digest its latest version was not made from."""
    from rankadaptor.serving.registry import model_state

    registry, digest = job.registry_config(), job_digest(text)
    champion, latest, tags = model_state(registry.model_name, registry.champion_alias, registry.tracking_uri or None)
    if champion is None:
        return Decision(job.target_task, registry.model_name, True, "no champion yet", digest)
    if tags.get(DIGEST_TAG) != digest:
        return Decision(job.target_task, registry.model_name, True, f"its data or options changed since version "
                                                                    f"{latest}", digest)
    return Decision(job.target_task, registry.model_name, False,
                    f"unchanged since version {latest}, champion: version {champion}", digest)


def claim_search(job: JobConfig, text: str, decision: Decision, owner: str,
                 lease_hours: float) -> tuple[Decision, Claim | None]:
    """A task that searches, claimed for pipeline run `owner` (rankadaptor.infra.claims): (the decision, None)
    when this run keeps it, else (the decision, the claim that holds it). After winning, the task is decided
    again: a run that registered the digest and released its claim between decide and claim leaves nothing to
    search (then the claim is released)."""
    from rankadaptor.infra.claims import claim, release

    tracking_uri = job.registry_config().tracking_uri or None
    holder = claim(decision.model_name, decision.digest, owner, lease_hours, tracking_uri)
    if holder is not None:
        return decision, holder
    again = decide(job, text)
    if not again.run:
        release(decision.model_name, decision.digest, owner, tracking_uri)
    return again, None


def shared_job_json(text: str) -> str:
    """The job that prepares the corpus, prunes and bootstraps for all the tasks of a run: a task job's shared
    options and shared inputs' fingerprints (the same for every task, so one cache entry serves them all)."""
    values = json.loads(text)
    prints = values.pop(FINGERPRINTS, {})
    shared = job_from_dict({k: values[k] for k in SHARED})
    return job_to_json(shared, {k: v for k, v in prints.items() if k in INPUTS})
