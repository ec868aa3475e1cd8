"""`rankadaptor <stage>`: one subcommand per stage, plus the whole job and the Kubeflow commands.

Every stage option comes from the stage's config dataclass (so --help documents each one) and may also
come from a YAML file given with --config. Bad input prints one clear line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

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


def _export(args) -> None:
    from rankadaptor.modeling import export_merged

    export_merged(args.model, args.adapter, args.output)
    print(f"merged checkpoint written to {args.output}")


MODEL = ("--model", "input model artifact: the pruned model (local directory or s3://)")
ADAPTER = ("--adapter", "adapter artifact written by `rankadaptor recover` (local directory or s3://)")
OUTPUT = ("--output", "output artifact URI: local directory or s3://bucket/prefix")

# name: (help, config class as "module:Class" or None, required artifact arguments, handler)
COMMANDS: dict[str, tuple[str, str | None, list[tuple[str, str]], Callable]] = {
    "prune": ("prune a LLaMA model (width or depth)", "rankadaptor.prune:PruneConfig", [OUTPUT], _prune),
    "recover": ("LoRA-recover a pruned model with a per-layer rank vector", "rankadaptor.recover:RecoverConfig",
                [MODEL, OUTPUT], _recover),
    "export": ("merge an adapter into its base model: a standalone checkpoint", None,
               [MODEL, ADAPTER, OUTPUT], _export),
}


def _config_class(path: str):
    module, _, name = path.partition(":")
    return getattr(__import__(module, fromlist=[name]), name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rankadaptor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, config_path, artifacts, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        for flag, artifact_help in artifacts:
            p.add_argument(flag, required=True, help=artifact_help)
        if config_path:
            cfg.add_arguments(p, _config_class(config_path))
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
