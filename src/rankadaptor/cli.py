"""`rankadaptor <command>`: one subcommand per stage (the whole job and the Kubeflow commands are
`python -m pipelines`, beside the pipelines: the library never imports the pipeline layer).

Every stage option comes from the stage's config dataclass (so --help documents each one) and may also
come from a YAML file given with --config. Bad input prints one clear line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from rankadaptor import config as cfg
from rankadaptor.errors import EXIT_SERVICE_ERROR, EXIT_USER_ERROR, ServiceError, UserError
from rankadaptor.serving import manifest as deploy


def _print(result: dict) -> None:
    print(json.dumps(result, indent=1, default=str))


def _check_output(args, *inputs: str | None) -> None:
    """Before any compute: the output is new (or --overwrite), writable, and neither an input nor around one."""
    from rankadaptor.ops.preflight import check_writable

    check_writable(args.output, [i for i in inputs if i], overwrite=args.overwrite)


def _prune(args) -> None:
    from rankadaptor.prune.config import PruneConfig
    from rankadaptor.prune.stage import run_prune

    config = cfg.from_args(PruneConfig, args)
    _check_output(args, config.model, config.calibration)
    report = run_prune(config, args.output)
    _print({k: v for k, v in report.items() if k != "config"})


def _recover(args) -> None:
    from rankadaptor.recover.config import RecoverConfig
    from rankadaptor.recover.stage import run_recover

    config = cfg.from_args(RecoverConfig, args)
    _check_output(args, args.model, config.data)
    result = run_recover(config, args.model, args.output)
    _print({k: v for k, v in result.items() if k != "losses"})


def _evaluate(args) -> None:
    from rankadaptor.evaluate.config import EvalConfig
    from rankadaptor.evaluate.stage import run_evaluate

    config = cfg.from_args(EvalConfig, args)
    _check_output(args, args.model, args.adapter, config.data_dir, config.ppl_text)
    metrics = run_evaluate(config, args.model, args.output, args.adapter)
    _print({"mean": metrics["mean"], "split": metrics["split"],
            "tasks": {t: {k: v for k, v in r.items() if k in ("metric", "value", "stderr", "n")}
                      for t, r in metrics["tasks"].items()}})


def _export(args) -> None:
    from rankadaptor.recover.adapters import export_merged

    _check_output(args, args.model, args.adapter)
    export_merged(args.model, args.adapter, args.output)
    print(f"merged checkpoint written to {args.output}")


def _check(args) -> None:
    from rankadaptor.job import load_job
    from rankadaptor.ops.preflight import job_problems

    found = job_problems(load_job(args.config), args.root)
    if found:
        raise UserError("\n".join(found))  # one line per problem
    print(f"job {args.config or '(bundled)'}: no problem found (model, context, data, task rows, tracking store, {args.root})")


def _add_check(p):
    p.add_argument("--config", default=None, metavar="YAML", help="job YAML; default: the bundled tiny-model job")
    p.add_argument("--root", default="runs/default", help="the local run's folder, checked writable")


def _stage_args(config_path: str, *artifacts: tuple[str, str], optional: tuple[tuple[str, str], ...] = ()):
    """Arguments of a stage command: its artifact URIs, then every option of its config dataclass."""
    def add(p: argparse.ArgumentParser) -> None:
        for flag, text in artifacts:
            p.add_argument(flag, required=True, help=text)
        for flag, text in optional:
            p.add_argument(flag, default=None, help=f"{text}; optional")
        _add_overwrite(p)
        module, _, name = config_path.partition(":")
        cfg.add_arguments(p, getattr(__import__(module, fromlist=[name]), name))
    return add


MODEL = ("--model", "input model artifact: the pruned model (local directory or s3://)")
ADAPTER = ("--adapter", "adapter artifact written by `rankadaptor recover` (local directory or s3://)")
OUTPUT = ("--output", "output artifact URI: local directory or s3://bucket/prefix")


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (never allowed when the output is, holds or lies inside an input)")


def _add_export(p):
    for flag, text in (MODEL, ADAPTER, OUTPUT):
        p.add_argument(flag, required=True, help=text)
    _add_overwrite(p)


COMMANDS = {
    "check": ("check a job in seconds, before any compute: one line per problem", _add_check, _check),
    "prune": ("prune a LLaMA model (width or depth)", _stage_args("rankadaptor.prune.config:PruneConfig", OUTPUT), _prune),
    "recover": ("LoRA-recover a pruned model with a per-layer rank vector",
                _stage_args("rankadaptor.recover.config:RecoverConfig", MODEL, OUTPUT), _recover),
    "evaluate": ("zero-shot evaluation (lm-eval) and perplexity of a model, optionally with an adapter",
                 _stage_args("rankadaptor.evaluate.config:EvalConfig", MODEL, OUTPUT, optional=(ADAPTER,)), _evaluate),
    "export": ("merge an adapter into its base model: a standalone checkpoint", _add_export, _export),
    "deploy": (deploy.HELP, deploy.add_arguments, deploy.run),
}


def build_parser(prog: str = "rankadaptor", description: str | None = None,
                 commands: dict | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description or __doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, handler) in (commands or COMMANDS).items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None, prog: str = "rankadaptor", description: str | None = None,
         commands: dict | None = None) -> int:
    """Run one of commands (name -> (help, add_arguments, handler)); a UserError is printed as one line per
    problem and exits 2, a ServiceError (an outage) as one line naming the service and exits 3. Also the entry
    point of `python -m pipelines`, with its own commands."""
    args = build_parser(prog, description, commands).parse_args(argv)
    try:
        args.handler(args)
    except UserError as e:
        for line in str(e).splitlines():
            print(f"{prog} {args.command}: error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ServiceError as e:
        print(f"{prog} {args.command}: service unavailable: {e}", file=sys.stderr)
        return EXIT_SERVICE_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
