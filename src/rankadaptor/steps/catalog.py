"""The task catalog's steps: plan a run (which tasks search) and the job its tasks share."""

from __future__ import annotations

from rankadaptor.flows.progress import progress
from rankadaptor.ops.catalog import (
    MAX_TASKS_PER_RUN,
    checked_jobs,
    claim_search,
    decide,
    job_jsons,
    load_catalog,
    shared_job_json,
)


def plan(catalog_uri: str, loop_cap: int = 0, root: str | None = None,
         max_tasks: int = MAX_TASKS_PER_RUN, scratch_size: str = "", owner: str = "") -> list[str]:
    """The job JSONs of the catalog's tasks that search in this run, at most max_tasks in catalog order (one
    progress line per task says what and why); every task's preflight first, so a bad task fails the run
    before any GPU step. Each task that searches is claimed for pipeline run `owner` (its register step
    releases it); a task another run holds is skipped."""
    catalog = load_catalog(catalog_uri)
    jobs = checked_jobs(catalog, loop_cap, root, scratch_size)
    planned = []
    for job, text in zip(jobs, job_jsons(jobs)):
        decision, holder = decide(job, text), None
        if decision.run and len(planned) < max_tasks:
            decision, holder = claim_search(job, text, decision, owner, catalog.claim_hours)
        if holder is not None:
            what = f"skipped (searched by run {holder.holder()} since {holder.when()}"
        elif decision.run and len(planned) == max_tasks:
            what = f"deferred to the next run ({decision.why}; at most {max_tasks} tasks search in one run"
        elif decision.run:
            what = f"searches ({decision.why}"
            planned.append(text)
        else:
            what = f"skipped ({decision.why}"
        progress(f"task {decision.task}: {what}; model {decision.model_name})")
    return planned


def shared_job(planned: list[str]) -> str:
    """The job of the run's shared steps (corpus, pruning, bootstrap); empty when no task searches."""
    return shared_job_json(planned[0]) if planned else ""
