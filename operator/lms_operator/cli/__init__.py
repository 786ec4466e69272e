"""The `lms` command line: the top floor of the package.

One module per command group registers its subcommands (argparse only); the work itself is
imported inside each command when it runs, so `lms render` or `lms operator` never pull in
torch. Nothing below this package imports it (tests/unit/test_import_layers.py).
"""
from __future__ import annotations

import argparse
import sys

from lms_operator import __version__
from lms_operator.cli import compress, model, operator, serve

COMMAND_GROUPS = (
    model,     # render, validate, crd
    compress,  # compress, digest
    serve,     # serve, infer, bench
    operator,  # operator
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lms", description="LargeModelService: compress, serve and operate models.")
    parser.add_argument("--version", action="version", version=f"lms {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(subparsers)
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
