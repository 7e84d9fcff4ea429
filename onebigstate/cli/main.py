"""The ``obs`` command. Each subcommand lives in its own module with ``register(subparsers)``."""
from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order `obs --help` lists them.
SUBCOMMANDS = ["memory"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="obs", description="One Big State: train, evaluate, benchmark, inspect.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"onebigstate.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
