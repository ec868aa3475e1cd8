"""The MLflow connection: where the tracking store is, and what its failures look like to a user (one
line naming the server, credentials masked).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Iterator

from rankadaptor.errors import ServiceError, UserError, check

DEFAULT_ROOT = "mlflow"
# The experiment tag MLflow's UI reads for an experiment's type: "custom_model_development" opens the
# training-runs view (runs table, charts) instead of the GenAI traces overview.
EXPERIMENT_KIND_TAG, TRAINING_RUNS = "mlflow.experimentKind", "custom_model_development"


SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def default_tracking_uri(root: str | Path = DEFAULT_ROOT) -> str:
    """The embedded store: a sqlite database under root (artifacts go to root/artifacts)."""
    return f"sqlite:///{Path(root).expanduser().resolve() / 'mlflow.db'}"


def configure(tracking_uri: str | None = None, root: str | Path = DEFAULT_ROOT) -> str:
    """Point MLflow at tracking_uri, else MLFLOW_TRACKING_URI, else the embedded store under root."""
    import mlflow

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


def redact(text: str) -> str:
    """text with the values of the credential variables in the environment, and URI passwords, masked."""
    for name in SECRET_ENV:
        secret = os.environ.get(name, "")
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return re.sub(r"(\w+://[^/:@\s]+):[^/@\s]+@", r"\1:***@", text)


@contextlib.contextmanager
def tracking_errors(tracking_uri: str) -> Iterator[None]:
    """Turn MLflow, HTTP and S3 failures (after MLflow's own retries) into one line naming the server: an
    unreachable or failing server (connection refused, timeout, HTTP 5xx) is a ServiceError with its cause
    chained, anything else (a refused request, a missing resource) a UserError."""
    import requests
    from botocore.exceptions import BotoCoreError, ClientError
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, requests.RequestException, BotoCoreError, ClientError, OSError) as e:
        detail = redact(str(getattr(e, "message", None) or e)).strip()
        if len(detail) > 600:
            detail = detail[:600] + " ..."
        where = f"MLflow tracking server {redact(tracking_uri)!r}"
        if _is_outage(e, detail):
            raise ServiceError(f"{where} failed: {detail} (unavailable after retries with backoff per "
                               "MLFLOW_HTTP_REQUEST_MAX_RETRIES; rerun once it is back)") from e
        raise UserError(f"{where} failed: {detail}") from None


OUTAGE_CODES = ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE")
OUTAGE_TEXT = ("Max retries exceeded", "Connection refused", "Connection aborted", "Read timed out",
               "failed with error code 5", "Failed to establish a new connection", "RemoteDisconnected")


def _is_outage(e: BaseException, detail: str) -> bool:
    import requests

    if isinstance(e, (requests.ConnectionError, requests.Timeout)):
        return True
    return getattr(e, "error_code", None) in OUTAGE_CODES or any(t in detail for t in OUTAGE_TEXT)


def ensure_experiment(name: str, tracking_uri: str) -> str:
    """The id of experiment `name`, created if missing (artifacts beside an embedded sqlite store), typed for
    training runs so MLflow's UI opens its runs table."""
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        check(experiment.lifecycle_stage == "active",
              f"MLflow experiment {name!r} is deleted: restore it or choose another experiment name")
        return experiment.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri[len("sqlite:///"):]).parent / "artifacts" / name).as_uri()
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: TRAINING_RUNS})
    except MlflowException:  # another run created it at the same moment (a unique name): use theirs
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
