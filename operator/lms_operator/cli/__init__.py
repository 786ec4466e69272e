"""The `lms` command line.

Each area of the project registers its own subcommands from a light `command`
module (argparse only); the work itself is imported when the subcommand runs,
so `lms render` or `lms operator` never pull in torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from lms_operator import __version__

COMMAND_MODULES = (
    "lms_operator.api.command",          # render, validate
    "lms_operator.compression.command",  # compress
    "lms_operator.serving.command",      # serve, infer, bench
    "lms_operator.cli.operator",         # operator
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lms", description="LargeModelService: compress, serve and operate models.")
    parser.add_argument("--version", action="version", version=f"lms {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
