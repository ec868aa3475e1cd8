"""The observation bank: every real trial (rank vector -> measured score) as one MLflow run.

The bank is what the performance model learns from, so it must only hold complete, trusted rows and
never pay twice for the same trial:
- one run per trial in one experiment; a run is created, logged with one batch and ended FINISHED in one
  go. A crash mid-log leaves a FAILED (or, if the process died, RUNNING) run that readers ignore.
- the tag `trial_id` is the sha256 of every input that determines the result (`TrialKey`), so a rerun
  finds the finished run and returns it instead of writing a duplicate.
- `load_observations` returns `surrogate.Observation`s, the one trial record the search and the
  surrogate use (the surrogate module does not depend on MLflow).

Where: an explicit tracking URI, else MLFLOW_TRACKING_URI, else an embedded `sqlite:///<root>/mlflow.db`
with artifacts in `<root>/artifacts`. Outages: MLflow retries HTTP requests with exponential backoff
(MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7; MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, default 2 s;
MLFLOW_HTTP_REQUEST_TIMEOUT, default 120 s: about 4 minutes in all); after that a UserError names the
tracking server. Credentials (AWS secret, MLflow password/token) never reach a param, tag or message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import time
from typing import Any

from rankadaptor.errors import check
from rankadaptor.infra.tracking import configure, ensure_experiment, redact, tracking_errors
from rankadaptor.trial import FULL, Observation, TrialKey, canonical_json

DEFAULT_EXPERIMENT = "rankadaptor-bank"
MAX_PARAM_LENGTH = 6000  # MLflow's limit; longer values would be silently truncated, corrupting the JSON


# ---------------------------------------------------------------------------------------------------------
# Tracking server: where, and what its failures look like to a user


# ---------------------------------------------------------------------------------------------------------
# Trials


def _client(tracking_uri: str | None):
    from mlflow import MlflowClient

    uri = configure(tracking_uri)
    return MlflowClient(uri), uri


def record_trial(key: TrialKey, *, score: float, scores: dict[str, float] | None = None,
                 predicted: float | None = None, trainable_params: int | None = None,
                 seconds: float | None = None, layer_features: list[list[float]] | None = None,
                 stage: str = "search", artifact: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
                 tracking_uri: str | None = None, number: int | None = None) -> dict[str, Any]:
    """Store one finished trial, or return the run already holding it (then `reused` is True).

    score is the value the search optimises (on key.split); scores holds per-task/metric detail.
    stage tags the row ("search", "bootstrap" for the random vectors that seed an empty bank, ...);
    artifact (tag) is the URI of the trial's adapter, so a later search can reuse the trial whole.
    number: the search trial's number as the terminal prints it (`search #N`): the run's name and its
    metrics' step. Returns find_trial's dict plus `reused`."""
    key.validate()
    check(isinstance(score, (int, float)), f"score={score!r} must be a number")
    params = key.params()
    if layer_features is not None:
        params["layer_features"] = canonical_json(layer_features)
    params = {k: redact(v) for k, v in params.items()}
    too_long = sorted(k for k, v in params.items() if len(v) > MAX_PARAM_LENGTH)
    check(not too_long, f"param(s) {too_long} exceed MLflow's {MAX_PARAM_LENGTH}-character limit")
    metrics = {"score": float(score), **{f"score.{k}": float(v) for k, v in (scores or {}).items()}}
    for name, value in (("predicted", predicted), ("trainable_params", trainable_params), ("seconds", seconds)):
        if value is not None:
            metrics[name] = float(value)

    client, uri = _client(tracking_uri)
    with tracking_errors(uri):
        existing = find_trial(key.id, experiment, uri)
        if existing is not None:
            if artifact and existing["artifact"] != artifact:
                # the trial was paid for again (its old adapter was lost): point the bank at the new one
                client.set_tag(existing["run_id"], "artifact", artifact)
                existing["artifact"] = artifact
            return {**existing, "reused": True}
        start, end = trial_times(seconds)
        run = client.create_run(ensure_experiment(experiment, uri), run_name=run_name(key, stage, number),
                                start_time=start,
                                tags={"trial_id": key.id, "stage": stage, "role": stage, "task": key.task,
                                      **({"artifact": artifact} if artifact else {})})
        try:
            _log_all(client, run.info.run_id, params, metrics, end, number or 0)
            client.set_terminated(run.info.run_id, "FINISHED", end_time=end)
        except BaseException:
            with contextlib.suppress(Exception):
                client.set_terminated(run.info.run_id, "FAILED")
            raise
        # Two runs racing on one trial (two pipelines on one bank) both get here: MLflow has no unique
        # constraint, so after the write the earliest finished run of the trial id wins, and a loser
        # deletes its own run. Readers see the earliest anyway (find_trial, load_observations).
        winner = find_trial(key.id, experiment, uri)
        if winner is not None and winner["run_id"] != run.info.run_id:
            client.delete_run(run.info.run_id)
            return {**winner, "reused": True}
        return {**_trial(client.get_run(run.info.run_id)), "reused": False}


def run_name(key: TrialKey, stage: str, number: int | None = None) -> str:
    """What the runs table shows: task, role, the search trial's number and the ranks, e.g.
    `ppl:heldout search #3 [8,10,6,8]` or `ppl:piqa bootstrap [2,4,8,8]`."""
    trial = f" #{number}" if number is not None else ""
    return f"{key.task} {stage}{trial} {canonical_json(key.rank_vector)}"


def trial_times(seconds: float | None, now: float | None = None) -> tuple[int, int]:
    """(start, end) of the trial in ms: it ended now (the bank records a trial as it finishes) and took
    `seconds` (unknown: 0)."""
    end = int((time.time() if now is None else now) * 1000)
    return end - int((seconds or 0) * 1000), end


def _log_all(client, run_id: str, params: dict[str, str], metrics: dict[str, float], timestamp: int = 0,
             step: int = 0) -> None:
    """Params and metrics in one request, so a run holds all of them or (if this fails) is marked FAILED;
    the step is the search trial's number, so MLflow's charts show the search's progress."""
    from mlflow.entities import Metric, Param

    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()],
                     metrics=[Metric(k, v, timestamp, step) for k, v in metrics.items()])


def find_trial(trial_id: str, experiment: str = DEFAULT_EXPERIMENT,
               tracking_uri: str | None = None) -> dict[str, Any] | None:
    """The finished run holding trial_id (the earliest, if a race wrote two), or None."""
    client, uri = _client(tracking_uri)
    check(re.fullmatch(r"[0-9a-f]{64}", trial_id) is not None, f"trial_id={trial_id!r} is not a sha256 hex digest")
    with tracking_errors(uri):
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return None
        runs = client.search_runs([found.experiment_id], max_results=1, order_by=["attributes.start_time ASC"],
                                  filter_string=f"tags.trial_id = '{trial_id}' and attributes.status = 'FINISHED'")
        return _trial(runs[0]) if runs else None


def _trial(run) -> dict[str, Any]:
    params, metrics = run.data.params, run.data.metrics
    return {"run_id": run.info.run_id, "trial_id": run.data.tags["trial_id"], "stage": run.data.tags.get("stage"),
            "split": params["split"], "seed": int(params["seed"]), "trainable_params": metrics.get("trainable_params"),
            "scores": {k[len("score."):]: v for k, v in metrics.items() if k.startswith("score.")},
            **dataclasses.asdict(_observation(run))}


def _observation(run) -> Observation:
    """One bank row as the surrogate's record: cost is the trial's seconds."""
    params, metrics = run.data.params, run.data.metrics
    features = params.get("layer_features")
    return Observation(task=params["task"], rank_vector=json.loads(params["rank_vector"]), score=metrics["score"],
                       layer_features=(json.loads(features) or None) if features else None, cost=metrics.get("seconds"),
                       predicted=metrics.get("predicted"), artifact=run.data.tags.get("artifact"),
                       fidelity=params.get("fidelity", FULL))  # a run banked before fidelities: full


def load_observations(experiment: str = DEFAULT_EXPERIMENT, *, base_model: str | None = None,
                      base_checksum: str | None = None, pruning: dict[str, Any] | None = None,
                      task: str | None = None, split: str | None = None, data_checksum: str | None = None,
                      recovery: dict[str, Any] | None = None, seed: int | None = None,
                      task_checksum: str | None = None, fidelity: str | None = None,
                      tracking_uri: str | None = None) -> list[Observation]:
    """Every finished trial matching the filters (None: any), oldest first, one per trial id. Unfinished and
    failed runs are never returned. fidelity "full" also matches runs banked before fidelities existed."""
    wanted = {"base_model": base_model, "base_checksum": base_checksum, "task": task, "split": split,
              "data_checksum": data_checksum, "task_checksum": task_checksum,
              "seed": None if seed is None else canonical_json(seed),
              "pruning": None if pruning is None else canonical_json(pruning),
              "recovery": None if recovery is None else canonical_json(recovery)}
    wanted = {k: v for k, v in wanted.items() if v is not None}
    client, uri = _client(tracking_uri)
    rows, seen, page_token = [], set(), None
    with tracking_errors(uri):
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        while True:
            page = client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                      order_by=["attributes.start_time ASC"], max_results=1000,
                                      page_token=page_token)
            for run in page:
                trial_id = run.data.tags.get("trial_id")
                if trial_id is None or trial_id in seen or any(run.data.params.get(k) != v
                                                               for k, v in wanted.items()) or (
                        fidelity is not None and run.data.params.get("fidelity", FULL) != fidelity):
                    continue  # not a bank row, a duplicate from a race, or filtered out
                seen.add(trial_id)
                rows.append(_observation(run))
            page_token = page.token
            if not page_token:
                return rows
