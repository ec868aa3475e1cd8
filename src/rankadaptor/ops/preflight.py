"""Checks that need no GPU and no training, run before any expensive step.

Each check raises a one-line UserError that names the bad input and the fix. `problems` runs a list of
them and returns every message, so a user sees all mistakes of a job at once, in seconds: the same
function backs `rankadaptor check`, the first step of every pipeline and `rankadaptor run`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from rankadaptor.errors import UserError, check
from rankadaptor.infra import storage

SERVER_SCHEMES = ("http://", "https://", "databricks")


SCRATCH_COPIES = 2  # the base model's download and its pruned copy, both on the prune step's scratch volume


def problems(checks: Iterable[Callable[[], object]]) -> list[str]:
    """The message of every check that fails (a check is a no-argument callable raising UserError)."""
    found = []
    for run_check in checks:
        try:
            run_check()
        except UserError as e:
            found.append(str(e))
    return found


def job_problems(job, root: str | None = None, scratch_size: str = "") -> list[str]:
    """Every mistake of a job (rankadaptor.job.JobConfig) that shows without a GPU or any training: the base
    model and the data exist and fit the settings, the task rows are there, the bank outlives the run, and
    the run's folder (root, when given; a rerun reuses it) can be written and holds no input, and the GPU
    steps' scratch volume (scratch_size, when the pipeline was compiled with one) holds the model."""
    from huggingface_hub import is_offline_mode

    from rankadaptor.evaluate.tasks import data_files, parse_task, task_uri
    from rankadaptor.job import job_inputs

    tasks = [parse_task(t) for t in job.all_tasks]
    lm_tasks = sorted({t.lm_eval_task for t in tasks} - {None})
    checks = [lambda: _fits_context(job),
              lambda: check_tracking(job.tracking_uri())]
    if scratch_size:
        checks.append(lambda: check_scratch(job, scratch_size))
    checks += [lambda uri=uri: check_readable(uri) for uri in (job.data, job.heldout_text) if uri]
    if root:
        checks.append(lambda: check_writable(root, job_inputs(job).values(), overwrite=True))
    data_dir = job.eval_data_dir or None
    rows = lm_tasks + sorted({t.name for t in tasks if t.kind == "mc"})  # each file checked row by row
    texts = sorted({t.name for t in tasks if t.kind == "ppl" and not t.lm_eval_task
                    and task_uri(t.name, data_dir, job.task_files)})
    checks.append(lambda: data_files(data_dir, rows, job.task_files))
    checks += [lambda t=t: check_readable(task_uri(t, data_dir, job.task_files)) for t in texts]
    if not data_dir and lm_tasks and is_offline_mode():
        checks.append(lambda: check(False, f"eval_data_dir is empty, which means lm-eval's hub datasets, but this "
                                           f"machine is offline: set eval_data_dir to a folder of "
                                           f"<task>_<split>.jsonl files for {lm_tasks}"))
    return problems(checks)


def check_job(job, root: str | None = None, scratch_size: str = "") -> None:
    """job_problems as one UserError, its problems joined on one line (what a run or a step reports)."""
    if found := job_problems(job, root, scratch_size):
        raise UserError("; ".join(found))


def _fits_context(job) -> None:
    from rankadaptor.recover.stage import fit_to_context

    context = model_config(job.base_model).max_position_embeddings
    try:
        fit_to_context(job.recover, context)  # the same rule recover applies: a default cutoff adapts
    except UserError as e:
        raise UserError(f"recover.{e}") from None


def check_scratch(job, scratch_size: str) -> None:
    """The GPU steps' scratch volume (docs/deploy.md 9.4) must hold what the prune step keeps there: the base
    model's download and its pruned copy before upload, plus headroom."""
    from rankadaptor.serving.manifest import GI, HEADROOM, quantity_bytes
    from rankadaptor.widths import model_bytes

    size = model_bytes(model_config(job.base_model))
    needed = int(SCRATCH_COPIES * size * HEADROOM)
    check(quantity_bytes(scratch_size, "scratch_size") >= needed,
          f"scratch_size={scratch_size} cannot hold {job.base_model!r}: the prune step keeps the model "
          f"({size / GI:.1f} GiB) and its pruned copy there, {needed / GI:.1f} GiB with headroom; compile with "
          f"`python -m pipelines compile --scratch-size {-(-needed // GI)}Gi` or more")


def model_config(model_uri: str):
    """The checked config of a base model; on S3 only its config.json is fetched, never the weights."""
    from rankadaptor.models.loading import load_config

    if storage.is_s3(model_uri):
        config_file = storage.local_file(storage.join(model_uri, "config.json"))
        return load_config(model_uri, str(config_file.parent))
    return load_config(model_uri)


def check_writable(uri: str, inputs: Iterable[str] = (), overwrite: bool = False) -> None:
    """An output location can be written, is new (unless overwrite), and is neither an input nor
    inside or around one (a pruned model written over its base model would destroy the input)."""
    for source in inputs:
        if source and _overlaps(uri, source):
            raise UserError(f"output {uri!r} is, contains or lies inside the input {source!r}: choose another output")
    if storage.is_s3(uri):
        _check_s3_writable(uri)
        if not overwrite and storage.exists(uri):
            raise UserError(f"output {uri!r} already exists: choose another or pass --overwrite")
        return
    path = Path(uri).expanduser()
    if path.exists() and not overwrite:
        raise UserError(f"output {uri!r} already exists: choose another or pass --overwrite")
    parent = path if path.is_dir() else path.parent
    while not parent.exists():
        parent = parent.parent
    check(parent.is_dir(), f"output {uri!r} lies under {str(parent)!r}, which is a file, not a folder")
    check(os.access(parent, os.W_OK | os.X_OK), f"output {uri!r} cannot be written: {str(parent)!r} is not writable")


def _overlaps(a: str, b: str) -> bool:
    if storage.is_s3(a) != storage.is_s3(b):
        return False
    if storage.is_s3(a):
        a_parts, b_parts = a.rstrip("/").split("/"), b.rstrip("/").split("/")
    else:
        a_parts, b_parts = Path(a).expanduser().resolve().parts, Path(b).expanduser().resolve().parts
    shorter = min(len(a_parts), len(b_parts))
    return a_parts[:shorter] == b_parts[:shorter]


def _check_s3_writable(uri: str) -> None:
    """The bucket exists and the credentials may write under uri (a small object is put and deleted)."""
    bucket, key = storage.split_s3(uri)
    probe = f"{key.rstrip('/')}.write-check-{uuid.uuid4().hex}"
    client = storage.s3_client()
    with storage.s3_errors(uri):
        client.head_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key=probe, Body=b"")
        client.delete_object(Bucket=bucket, Key=probe)


def check_readable(uri: str) -> None:
    """An input exists (a local file or folder, or an object or artifact on S3 readable with these credentials)."""
    if storage.is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = storage.split_s3(uri)
        with storage.s3_errors(uri):
            try:
                storage.s3_client().head_object(Bucket=bucket, Key=key)  # a file
                return
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
                    raise
        check(storage.exists(uri), f"input {uri!r} not found on S3: neither a file nor a complete artifact folder")
        return
    check(Path(uri).expanduser().exists(), f"input {uri!r} does not exist")


def check_tracking(tracking_uri: str | None) -> None:
    """On a cluster the bank and the registry must live on a tracking server: a file or sqlite store inside
    a pod disappears with it, taking every banked trial and registered version along."""
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    check(uri.startswith(SERVER_SCHEMES),
          f"tracking URI {uri or '(none)'!r} is a pod-local store on a cluster: every bank row and registered "
          "model would vanish with the pod; set MLFLOW_TRACKING_URI (the MLflow Secret) to the tracking server's http(s) URL")
