"""Compile the pipelines to IR YAML, and submit or schedule them on a Kubeflow Pipelines endpoint."""

import re
from pathlib import Path

from rankadaptor.errors import UserError

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


def client(host: str):
    """A kfp.Client for host, with a clear error when the endpoint does not answer."""
    import kfp

    try:
        c = kfp.Client(host=host)
        c.get_kfp_healthz()
        return c
    except Exception as e:  # connection refused, DNS, TLS, auth: all mean "cannot use this endpoint"
        raise UserError(f"cannot reach the Kubeflow Pipelines endpoint {host!r}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from None


def submit(host: str, pipeline: str, arguments: dict, experiment: str, run_name: str,
           service_account: str | None = None) -> str:
    """Start one run; returns its run id."""
    run = client(host).create_run_from_pipeline_package(str(COMPILED / f"{pipeline}.yaml"), arguments=arguments,
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
             service_account: str | None = None, max_concurrency: int = 1) -> str:
    """A recurring run (cron with seconds: '0 0 2 * * *' = 02:00 daily); returns its id."""
    check_cron(cron)
    c = client(host)
    experiment_id = c.create_experiment(experiment).experiment_id
    recurring = c.create_recurring_run(experiment_id=experiment_id, job_name=name, cron_expression=cron,
                                       pipeline_package_path=str(COMPILED / f"{pipeline}.yaml"), params=arguments,
                                       max_concurrency=max_concurrency, no_catchup=True,
                                       service_account=service_account)
    return recurring.recurring_run_id
