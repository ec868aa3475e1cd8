"""Compile the pipelines to IR YAML, and submit or schedule them on a Kubeflow Pipelines endpoint."""

import re
from pathlib import Path

from pipelines.limits import PARALLEL_TASKS
from rankadaptor.errors import ServiceError, UserError

# KFP's cron (robfig/cron with seconds): second minute hour day-of-month month day-of-week
CRON_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
               ("day of week", 0, 6))
CRON_NAMES = {"month": "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC", "day of week": "SUN|MON|TUE|WED|THU|FRI|SAT"}

COMPILED = Path(__file__).parent / "compiled"


def compile_all(directory: Path = COMPILED) -> list[Path]:
    from kfp import compiler

    from pipelines.rankadaptor import PIPELINES

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pipeline in PIPELINES.items():
        path = directory / f"{name}.yaml"
        tmp = path.with_name(f".tmp-{path.name}")
        compiler.Compiler().compile(pipeline, str(tmp))
        tmp.replace(path)
        paths.append(path)
    return paths


MIN_BACKEND = (2, 5, 0)  # parameterised node selector, tolerations, Secrets and resources: docs/deploy.md 9.1


def _is_outage(e: BaseException) -> bool:
    """A refused connection, a timeout or a 5xx answer, as opposed to a wrong name, certificate or token."""
    import urllib3

    status = getattr(e, "status", None) or 0
    if isinstance(e, urllib3.exceptions.MaxRetryError):
        e = e.reason or e
    if isinstance(e, (urllib3.exceptions.SSLError, urllib3.exceptions.NameResolutionError)):
        return False
    return status >= 500 or isinstance(e, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.TimeoutError,
                                           urllib3.exceptions.ProtocolError, ConnectionError, TimeoutError))


def client(host: str, namespace: str | None = None, token_file: str | None = None, cookies: str | None = None):
    """A kfp.Client for host (a multi-user Kubeflow: its namespace, and a token or the session cookie), with a
    clear error when the endpoint does not answer or its backend is older than MIN_BACKEND."""
    import kfp

    token = None
    if token_file:
        try:
            token = Path(token_file).expanduser().read_text().strip()
        except OSError as e:
            raise UserError(f"--token-file {token_file!r} cannot be read: {e.strerror}") from None
    try:
        c = kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token, cookies=cookies)
        c.get_kfp_healthz()
    except Exception as e:  # refused or timing out: an outage (exit 3); DNS, TLS, auth: this endpoint is wrong (2)
        detail = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if _is_outage(e):
            raise ServiceError(f"cannot reach the Kubeflow Pipelines endpoint {host!r}: {detail}; rerun once it "
                               "answers") from e
        raise UserError(f"cannot reach the Kubeflow Pipelines endpoint {host!r}: {detail}") from None
    check_backend_version(backend_version(c))
    return c


def backend_version(c) -> str:
    """The backend's release tag from its v1beta1 health endpoint (v2beta1's carries none); '' if unknown."""
    try:
        answer = c._healthz_api.api_client.call_api("/apis/v1beta1/healthz", "GET", response_type="object",
                                                    auth_settings=["Bearer"], _return_http_data_only=True)
    except Exception:  # an old or trimmed API server: the version stays unknown
        return ""
    return str((answer or {}).get("tag_name", "")) if isinstance(answer, dict) else ""


def check_backend_version(tag: str) -> None:
    numbers = re.match(r"v?(\d+)\.(\d+)\.(\d+)", tag or "")
    minimum = ".".join(map(str, MIN_BACKEND))
    if numbers and tuple(map(int, numbers.groups())) < MIN_BACKEND:
        raise UserError(f"the Kubeflow Pipelines backend is {tag}, older than {minimum}: it would silently drop "
                        f"the GPU node selector, tolerations and Secret names (docs/deploy.md 9.1); upgrade it")


def check_parallel(parallel: int) -> None:
    if parallel < 1:
        raise UserError(f"--parallel {parallel}: the number of catalog tasks searching at once must be 1 or more")


def package(pipeline: str, parallel: int) -> str:
    """The compiled pipeline to upload: the committed one, or for a catalog run with another parallelism
    (fixed at compile time in KFP) one compiled for it."""
    import tempfile

    check_parallel(parallel)
    if pipeline != "catalog" or parallel == PARALLEL_TASKS:
        return str(COMPILED / f"{pipeline}.yaml")
    from kfp import compiler

    from pipelines.rankadaptor import build_catalog

    path = Path(tempfile.mkdtemp(prefix="rankadaptor-")) / f"catalog-parallel{parallel}.yaml"
    compiler.Compiler().compile(build_catalog(parallel), str(path))
    return str(path)


def local_paths(arguments: dict) -> list[str]:
    """The job's inputs (or the catalog) that name a path on this machine, which no pod can read."""
    from rankadaptor.job import INPUTS

    found = []
    for key in (*INPUTS, "catalog"):
        value = str(arguments.get(key) or "")
        here = Path(value).expanduser().exists() or value.startswith(("/", ".", "~")) or key == "catalog"
        if value and "://" not in value and here:  # a catalog is never a hub id
            found.append(f"{key}={value!r}")
    return found


def check_remote_inputs(arguments: dict) -> None:
    found = local_paths(arguments)
    if found:
        raise UserError(f"{', '.join(found)}: a path on this machine, which the cluster's pods cannot read; upload "
                        "it to object storage and give its s3:// URI (a base model may also be a hub id in the image's "
                        "cache), with --config job.yaml")


def submit(host: str, pipeline: str, arguments: dict, experiment: str, run_name: str,
           service_account: str | None = None, parallel: int = PARALLEL_TASKS, **access) -> str:
    """Start one run; returns its run id. access: namespace, token_file, cookies (see client)."""
    check_remote_inputs(arguments)
    run = client(host, **access).create_run_from_pipeline_package(package(pipeline, parallel), arguments=arguments,
                                                                  run_name=run_name, experiment_name=experiment,
                                                                  service_account=service_account)
    return run.run_id


def check_cron(cron: str) -> None:
    """Refuse, before connecting, a cron KFP would reject or misread (a 5-field cron is the usual mistake)."""
    fields = cron.split()
    if len(fields) == 5:
        raise UserError(f"cron {cron!r} has 5 fields; KFP's cron has 6, seconds first: did you mean '0 {cron}'?")
    if len(fields) != 6:
        raise UserError(f"cron {cron!r} has {len(fields)} fields; expected 6: second minute hour day-of-month month "
                        "day-of-week, e.g. '0 0 2 * * *' for 02:00 daily")
    for text, (name, low, high) in zip(fields, CRON_FIELDS):
        value = rf"(\d+|{CRON_NAMES[name]})" if name in CRON_NAMES else r"\d+"
        term = rf"(\*|\?|{value}(-{value})?)(/\d+)?"
        numbers = [int(n) for n in re.findall(r"\d+", re.sub(r"/\d+", "", text))]
        if not re.fullmatch(rf"{term}(,{term})*", text, re.IGNORECASE) or any(not low <= n <= high for n in numbers):
            raise UserError(f"cron {cron!r}: the {name} field {text!r} is not accepted: use *, ?, numbers "
                            f"{low}-{high}, ranges a-b, lists a,b and steps */n")


def schedule(host: str, pipeline: str, arguments: dict, experiment: str, name: str, cron: str,
             service_account: str | None = None, max_concurrency: int = 1, parallel: int = PARALLEL_TASKS,
             **access) -> str:
    """A recurring run (cron with seconds: '0 0 2 * * *' = 02:00 daily); returns its id."""
    check_cron(cron)
    check_parallel(parallel)
    check_remote_inputs(arguments)
    c = client(host, **access)
    experiment_id = c.create_experiment(experiment).experiment_id
    recurring = c.create_recurring_run(experiment_id=experiment_id, job_name=name, cron_expression=cron,
                                       pipeline_package_path=package(pipeline, parallel), params=arguments,
                                       max_concurrency=max_concurrency, no_catchup=True,
                                       service_account=service_account)
    return recurring.recurring_run_id
