"""`rankadaptor <stage>`: one subcommand per stage, plus the whole job and the Kubeflow commands.

Every stage option comes from the stage's config dataclass (so --help documents each one) and may also
come from a YAML file given with --config. Bad input prints one clear line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from rankadaptor import config as cfg
from rankadaptor.errors import UserError


def _prune(args) -> None:
    from rankadaptor.prune import PruneConfig, run_prune

    report = run_prune(cfg.from_args(PruneConfig, args), args.output)
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=1))


COMMANDS = {
    "prune": ("rankadaptor.prune:PruneConfig", _prune, "prune a LLaMA model (width or depth)"),
}


def _config_class(path: str):
    module, _, name = path.partition(":")
    return getattr(__import__(module, fromlist=[name]), name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rankadaptor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (config_path, handler, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--output", required=True, help="output artifact URI: local directory or s3://bucket/prefix")
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
