"""Compile the pipelines to IR YAML, and submit or schedule them on a Kubeflow Pipelines endpoint."""

from pathlib import Path

from rankadaptor.errors import UserError

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


def schedule(host: str, pipeline: str, arguments: dict, experiment: str, name: str, cron: str,
             service_account: str | None = None, max_concurrency: int = 1) -> str:
    """A recurring run (cron with seconds: '0 0 2 * * *' = 02:00 daily); returns its id."""
    c = client(host)
    experiment_id = c.create_experiment(experiment).experiment_id
    recurring = c.create_recurring_run(experiment_id=experiment_id, job_name=name, cron_expression=cron,
                                       pipeline_package_path=str(COMPILED / f"{pipeline}.yaml"), params=arguments,
                                       max_concurrency=max_concurrency, no_catchup=True,
                                       service_account=service_account)
    return recurring.recurring_run_id
