"""Claims: a catalog task (its registered model and job digest) is searched by one pipeline run at a time.

A claim is one MLflow run in the experiment `rankadaptor-claims`, tagged with the key, left RUNNING while it
holds. MLflow has no unique constraint, so the claim uses the bank's rule (rankadaptor.infra.bank.record_trial):
write, then read back every live claim of the key; the earliest (start time, then run id) wins and a loser
deletes its own run. Of two claimers, the later writer's read sees both, so at most one keeps the task as long
as the claimers' clocks agree to better than a write and a read (NTP on a cluster: milliseconds); if they do
not, both search, as before claims existed, and the bank still holds each trial once. A run rather than tags
on the registered model: a run is created whole in one request, so a reader never sees half a claim, and the
registry need not exist before the first search. A claim is a lease: one older than the catalog's
claim_hours is dead (its run died) and ignored; the winner's register step ends its claim (FINISHED), so
the experiment also shows which run searched what, when.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass

from rankadaptor.infra.tracking import configure, ensure_experiment, tracking_errors

EXPERIMENT = "rankadaptor-claims"
# OWNER is also the lineage tag of a registered version (components/register.py sets it), so register can release
KEY, MODEL, DIGEST, OWNER = "claim_key", "model_name", "job_digest", "pipeline_run"


@dataclass(frozen=True)
class Claim:
    run_id: str  # the claim's MLflow run
    owner: str  # the pipeline run that holds it ('' when unknown)
    since: int  # ms since the epoch

    def holder(self) -> str:
        """What a progress line calls the holder: its pipeline run, else its claim's run."""
        return self.owner or f"(claim {self.run_id})"

    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.since / 1000))


def claim_key(model_name: str, digest: str) -> str:
    """The key's tag value: a hash, so a model name's characters never reach a filter string."""
    return hashlib.sha256(f"{model_name}\n{digest}".encode()).hexdigest()


def _client(tracking_uri: str | None):
    from mlflow import MlflowClient

    uri = configure(tracking_uri)
    return MlflowClient(uri), uri


def live_claims(model_name: str, digest: str, lease_hours: float | None,
                tracking_uri: str | None = None) -> list[Claim]:
    """The key's claims held now and younger than the lease (None: any age), the winner first (earliest, then
    run id)."""
    client, uri = _client(tracking_uri)
    with tracking_errors(uri):
        found = client.get_experiment_by_name(EXPERIMENT)
        if found is None:
            return []
        young = "" if lease_hours is None else \
            f" and attributes.start_time > {int((time.time() - lease_hours * 3600) * 1000)}"
        runs = client.search_runs([found.experiment_id], max_results=1000,
                                  filter_string=f"tags.{KEY} = '{claim_key(model_name, digest)}' and "
                                                f"attributes.status = 'RUNNING'{young}")
    claims = [Claim(r.info.run_id, r.data.tags.get(OWNER, ""), r.info.start_time) for r in runs]
    return sorted(claims, key=lambda c: (c.since, c.run_id))


def claim(model_name: str, digest: str, owner: str, lease_hours: float,
          tracking_uri: str | None = None) -> Claim | None:
    """Claim the key for pipeline run `owner`: None when won (a claim of the same owner, e.g. a retried plan
    step, counts as won), else the winning claim (this one is deleted)."""
    client, uri = _client(tracking_uri)
    with tracking_errors(uri):
        run = client.create_run(ensure_experiment(EXPERIMENT, uri), run_name=f"{model_name} {digest[:12]}",
                                tags={KEY: claim_key(model_name, digest), MODEL: model_name, DIGEST: digest,
                                      OWNER: owner})
        try:
            claims = live_claims(model_name, digest, lease_hours, uri)
        except BaseException:
            with contextlib.suppress(Exception):
                client.delete_run(run.info.run_id)
            raise
        winner = claims[0] if claims else None
        if winner is None or winner.run_id == run.info.run_id:
            return None
        client.delete_run(run.info.run_id)
        return None if owner and winner.owner == owner else winner


def release(model_name: str, digest: str, owner: str, tracking_uri: str | None = None) -> int:
    """End the live claims of the key held by pipeline run `owner` (FINISHED); how many there were. A job
    outside a catalog holds none: one lookup."""
    if not owner or not digest:
        return 0
    client, uri = _client(tracking_uri)
    held = [c for c in live_claims(model_name, digest, None, uri) if c.owner == owner]
    with tracking_errors(uri):
        for held_claim in held:
            client.set_terminated(held_claim.run_id, "FINISHED")
    return len(held)
