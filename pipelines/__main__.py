"""`python -m pipelines <command>`: the whole job locally (kfp.local), compile, and submit or schedule runs
on a Kubeflow Pipelines endpoint. Bad input prints one clear line and exits with status 2."""

import argparse
import sys
from pathlib import Path

from rankadaptor import cli
from rankadaptor.errors import UserError


def _job(args):
    from rankadaptor.job import load_job

    return load_job(args.config)


def _catalog(args) -> str | None:
    """--catalog, refused beside --config (one job or a job per task)."""
    if args.catalog and args.config:
        raise UserError("give --config (one job) or --catalog (a job per task), not both")
    return args.catalog


def _run(args) -> None:
    if _catalog(args):
        return _run_catalog(args)

    import json
    import os

    from pipelines.local import registered_lines, run_local

    job = _job(args)
    report_dir = run_local(job, args.root, args.verbose)
    print((report_dir / "report.md").read_text())
    print(f"report, plots and registration: {report_dir}\nfull log: {Path(args.root).resolve() / 'run.log'}")
    report = json.loads((report_dir / "report.json").read_text())
    print(registered_lines(report, job.registry_config().champion_alias, os.environ["MLFLOW_TRACKING_URI"]))


def _run_catalog(args) -> None:
    import json

    from pipelines.local import run_catalog
    from rankadaptor.infra import storage

    catalog = args.catalog if storage.is_s3(args.catalog) else str(Path(args.catalog).expanduser().resolve())
    for report_dir in run_catalog(catalog, args.root, args.parallel, args.verbose):
        report = json.loads((report_dir / "report.json").read_text())
        registration = report["registration"]
        print(f"{report['target_task']}: registered {registration['model_name']} version {registration['version']}"
              f" ({'now' if registration['champion_moved'] else 'not'} the champion), report: {report_dir}")
    print(f"full log: {Path(args.root).resolve() / 'run.log'}")


def _compile(args) -> None:
    import os

    if args.image_registry or args.image_tag or args.scratch_size:
        if not args.output:
            raise UserError("--image-registry/--image-tag/--scratch-size need --output DIR: pipelines/compiled keeps "
                            "the defaults (the images images/build.sh builds, no scratch volume)")
        if args.scratch_size:
            from rankadaptor.serving.manifest import quantity_bytes

            quantity_bytes(args.scratch_size, "--scratch-size")
        os.environ.update({k: v for k, v in (("RANKADAPTOR_IMAGE_REGISTRY", args.image_registry),
                                             ("RANKADAPTOR_IMAGE_TAG", args.image_tag),
                                             ("RANKADAPTOR_SCRATCH_SIZE", args.scratch_size)) if v})
    from pipelines.cluster import compile_all  # imports the components, which read the image names

    for path in compile_all(Path(args.output)) if args.output else compile_all():
        print(f"compiled {path}")


def _pipeline_arguments(args) -> tuple[str, dict]:
    """(compiled pipeline, its arguments): the catalog pipeline for --catalog, else the job's pipeline."""
    from pipelines.rankadaptor import arguments

    if _catalog(args):
        return "catalog", {"catalog": args.catalog}
    return args.pipeline, arguments(_job(args), args.pipeline)


def _submit(args) -> None:
    from pipelines.cluster import submit

    pipeline, values = _pipeline_arguments(args)
    run_id = submit(args.host, pipeline, values, args.experiment, args.run_name, args.service_account,
                    parallel=args.parallel, **_access(args))
    print(f"started run {run_id}")


def _schedule(args) -> None:
    from pipelines.cluster import schedule

    pipeline, values = _pipeline_arguments(args)
    recurring_id = schedule(args.host, pipeline, values, args.experiment, args.name, args.cron, args.service_account,
                            parallel=args.parallel, **_access(args))
    print(f"created recurring run {recurring_id} ({args.cron})")


def _access(args) -> dict:
    return {"namespace": args.namespace, "token_file": args.token_file, "cookies": args.cookies}


def _job_args(p: argparse.ArgumentParser) -> None:
    from pipelines.limits import PARALLEL_TASKS

    p.add_argument("--config", default=None, metavar="YAML",
                   help="job YAML (options of rankadaptor.job.JobConfig); default: the bundled tiny-model job")
    p.add_argument("--catalog", default=None, metavar="URI",
                   help="a task catalog YAML (local or s3://) instead of one job: a search for each task that has "
                        "no champion yet or whose data changed (docs/deploy.md, Scheduling new tasks)")
    p.add_argument("--parallel", type=int, default=PARALLEL_TASKS,
                   help="with --catalog: tasks searching at once")


def _cluster_args(p: argparse.ArgumentParser) -> None:
    _job_args(p)
    p.add_argument("--host", required=True, help="Kubeflow Pipelines endpoint, e.g. http://localhost:8080/pipeline")
    p.add_argument("--pipeline", default="rankadaptor", choices=["rankadaptor", "bootstrap", "baselines"],
                   help="which compiled pipeline")
    p.add_argument("--experiment", default="rankadaptor", help="KFP experiment")
    p.add_argument("--service-account", default="rankadaptor-pipeline",
                   help="Kubernetes ServiceAccount of the run's pods (k8s/base/pipeline: least privilege)")
    p.add_argument("--namespace", default=None, help="the profile namespace of a multi-user Kubeflow (default: kubeflow)")
    p.add_argument("--token-file", default=None, help="file holding a bearer token for the endpoint (e.g. a "
                                                      "ServiceAccount token); inside the cluster the SDK finds its own")
    p.add_argument("--cookies", default=None, help="session cookie(s) of the Kubeflow login, e.g. 'authservice_session=...'")


def _add_run(p):
    from rankadaptor import config as cfg
    from rankadaptor.job import JobConfig

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = "job options (YAML keys of --config; dotted names are sections), with their defaults:\n" + "\n".join(
        cfg.describe(JobConfig))
    _job_args(p)
    p.add_argument("--root", default="runs/default", help="where the run's artifacts, MLflow store and log go")
    p.add_argument("--verbose", action="store_true", help="print kfp.local's and every step's full output")


def _add_compile(p):
    p.add_argument("--output", default=None, help="directory for the IR YAML (default: pipelines/compiled)")
    p.add_argument("--image-registry", default=None, help="registry of the images, e.g. registry.example.com/ml "
                                                          "(as `images/build.sh --registry`); needs --output")
    p.add_argument("--image-tag", default=None, help="tag of the images (as `images/build.sh --tag`); needs --output")
    p.add_argument("--scratch-size", default=None, help="a scratch volume of this size (e.g. 100Gi) for each GPU step: "
                                                        "its caches and temporary files; needs --output (docs/deploy.md 9.4)")


def _add_submit(p):
    _cluster_args(p)
    p.add_argument("--run-name", default="rankadaptor", help="name of the run")


def _add_schedule(p):
    _cluster_args(p)
    p.add_argument("--name", default="rankadaptor-recurring", help="name of the recurring run")
    p.add_argument("--cron", required=True, help="cron with seconds, e.g. '0 0 2 * * *' for 02:00 daily")


COMMANDS = {
    "run": ("the whole job locally through the Kubeflow pipeline (kfp.local)", _add_run, _run),
    "compile": ("compile the pipelines to Kubeflow IR YAML", _add_compile, _compile),
    "submit": ("start a run of a compiled pipeline on a Kubeflow Pipelines endpoint", _add_submit, _submit),
    "schedule": ("create a recurring run (cron) on a Kubeflow Pipelines endpoint", _add_schedule, _schedule),
}


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, "python -m pipelines", __doc__.splitlines()[0], COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
