"""`rankadaptor <command>`: one subcommand per stage, the whole job, and the Kubeflow commands.

Every stage option comes from the stage's config dataclass (so --help documents each one) and may also
come from a YAML file given with --config. Bad input prints one clear line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rankadaptor import config as cfg
from rankadaptor.errors import UserError


def _print(result: dict) -> None:
    print(json.dumps(result, indent=1, default=str))


def _prune(args) -> None:
    from rankadaptor.prune import PruneConfig, run_prune

    report = run_prune(cfg.from_args(PruneConfig, args), args.output)
    _print({k: v for k, v in report.items() if k != "config"})


def _recover(args) -> None:
    from rankadaptor.recover import RecoverConfig, run_recover

    result = run_recover(cfg.from_args(RecoverConfig, args), args.model, args.output)
    _print({k: v for k, v in result.items() if k != "losses"})


def _evaluate(args) -> None:
    from rankadaptor.evaluate import EvalConfig, run_evaluate

    metrics = run_evaluate(cfg.from_args(EvalConfig, args), args.model, args.output, args.adapter)
    _print({"mean": metrics["mean"], "split": metrics["split"],
            "tasks": {t: {k: v for k, v in r.items() if k in ("metric", "value", "stderr", "n")}
                      for t, r in metrics["tasks"].items()}})


def _export(args) -> None:
    from rankadaptor.modeling import export_merged

    export_merged(args.model, args.adapter, args.output)
    print(f"merged checkpoint written to {args.output}")


def _job(args):
    from rankadaptor.workflow import load_job

    return load_job(args.config)


def _run(args) -> None:
    from pipelines.local import run_local

    report_dir = run_local(_job(args), args.root)
    print((report_dir / "report.md").read_text())
    print(f"report, plots and registration: {report_dir}")


def _compile(args) -> None:
    from pipelines.cluster import compile_all

    for path in compile_all(Path(args.output)) if args.output else compile_all():
        print(f"compiled {path}")


def _submit(args) -> None:
    from pipelines.cluster import submit
    from pipelines.rankadaptor import arguments

    run_id = submit(args.host, args.pipeline, arguments(_job(args)), args.experiment, args.run_name,
                    args.service_account)
    print(f"started run {run_id}")


def _schedule(args) -> None:
    from pipelines.cluster import schedule
    from pipelines.rankadaptor import arguments

    recurring_id = schedule(args.host, args.pipeline, arguments(_job(args)), args.experiment, args.name, args.cron,
                            args.service_account)
    print(f"created recurring run {recurring_id} ({args.cron})")


def _stage_args(config_path: str, *artifacts: tuple[str, str], optional: tuple[tuple[str, str], ...] = ()):
    """Arguments of a stage command: its artifact URIs, then every option of its config dataclass."""
    def add(p: argparse.ArgumentParser) -> None:
        for flag, text in artifacts:
            p.add_argument(flag, required=True, help=text)
        for flag, text in optional:
            p.add_argument(flag, default=None, help=f"{text}; optional")
        module, _, name = config_path.partition(":")
        cfg.add_arguments(p, getattr(__import__(module, fromlist=[name]), name))
    return add


def _job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="YAML",
                   help="job YAML (options of rankadaptor.workflow.JobConfig); default: the bundled tiny-model job")


def _cluster_args(p: argparse.ArgumentParser) -> None:
    _job_args(p)
    p.add_argument("--host", required=True, help="Kubeflow Pipelines endpoint, e.g. http://localhost:8080/pipeline")
    p.add_argument("--pipeline", default="rankadaptor", choices=["rankadaptor", "bootstrap", "baselines"],
                   help="which compiled pipeline")
    p.add_argument("--experiment", default="rankadaptor", help="KFP experiment")
    p.add_argument("--service-account", default="rankadaptor-pipeline",
                   help="Kubernetes ServiceAccount of the run's pods (k8s/base/pipeline: least privilege)")


MODEL = ("--model", "input model artifact: the pruned model (local directory or s3://)")
ADAPTER = ("--adapter", "adapter artifact written by `rankadaptor recover` (local directory or s3://)")
OUTPUT = ("--output", "output artifact URI: local directory or s3://bucket/prefix")


def _add_run(p):
    _job_args(p)
    p.add_argument("--root", default="runs/default", help="where the run's artifacts and MLflow store go")


def _add_compile(p):
    p.add_argument("--output", default=None, help="directory for the IR YAML (default: pipelines/compiled)")


def _add_submit(p):
    _cluster_args(p)
    p.add_argument("--run-name", default="rankadaptor", help="name of the run")


def _add_schedule(p):
    _cluster_args(p)
    p.add_argument("--name", default="rankadaptor-recurring", help="name of the recurring run")
    p.add_argument("--cron", required=True, help="cron with seconds, e.g. '0 0 2 * * *' for 02:00 daily")


def _add_export(p):
    for flag, text in (MODEL, ADAPTER, OUTPUT):
        p.add_argument(flag, required=True, help=text)


COMMANDS = {
    "prune": ("prune a LLaMA model (width or depth)", _stage_args("rankadaptor.prune:PruneConfig", OUTPUT), _prune),
    "recover": ("LoRA-recover a pruned model with a per-layer rank vector",
                _stage_args("rankadaptor.recover:RecoverConfig", MODEL, OUTPUT), _recover),
    "evaluate": ("zero-shot evaluation (lm-eval) and perplexity of a model, optionally with an adapter",
                 _stage_args("rankadaptor.evaluate:EvalConfig", MODEL, OUTPUT, optional=(ADAPTER,)), _evaluate),
    "export": ("merge an adapter into its base model: a standalone checkpoint", _add_export, _export),
    "run": ("the whole job locally through the Kubeflow pipeline (kfp.local)", _add_run, _run),
    "compile": ("compile the pipelines to Kubeflow IR YAML", _add_compile, _compile),
    "submit": ("start a run of a compiled pipeline on a Kubeflow Pipelines endpoint", _add_submit, _submit),
    "schedule": ("create a recurring run (cron) on a Kubeflow Pipelines endpoint", _add_schedule, _schedule),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rankadaptor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except UserError as e:
        print(f"rankadaptor {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
