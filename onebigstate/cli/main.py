"""The ``obs`` command. Each subcommand lives in its own module with ``register(subparsers)``."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# Subcommand modules, in the order `obs --help` lists them.
SUBCOMMANDS = ["demo", "train", "eval", "memory", "bench", "inspect"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="obs", description="One Big State: train, evaluate, benchmark, inspect.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"onebigstate.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ModuleNotFoundError as err:   # the core installs alone; the CLI is the lab's
        if err.name and not err.name.startswith("onebigstate"):
            print(f"obs: the obs command is part of the lab and needs '{err.name}': "
                  "pip install 'onebigstate[lab]'", file=sys.stderr)
            return 2
        raise
    # key=value overrides may come after options (`obs train C.yaml --out D train.lr=1e-3`);
    # argparse leaves those over, so they are handed to commands that take overrides.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "overrides", None) is None or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    # Errors in what the user gave (a config, a checkpoint) or a run that diverged end with a
    # one-paragraph message and exit status 2 (bad input) or 1 (diverged), not a traceback.
    from onebigstate.config import ConfigError
    from onebigstate.training.checkpoint import CheckpointError
    from onebigstate.training.trainer import TrainingDiverged
    try:
        return int(args.func(args) or 0)
    except (ConfigError, CheckpointError) as err:
        print(f"obs {args.command}: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"obs {args.command}: stopped: {err}", file=sys.stderr)
        return 1


def _exit_worker(code: int) -> None:
    """A torchrun worker leaves without running C++ static destructors. After the run has finished
    and the process group is gone, a worker still aborted at interpreter exit in about 1 run in 15
    ("terminate called without an active exception", a thread still joinable in torch's teardown;
    the killed-rank test of tests/test_distributed.py, its run complete on disk), which turned a
    finished run into a failed job. Everything the run writes is closed by then."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    code = main()
    from onebigstate.distributed.launch import launched_by_torchrun
    if launched_by_torchrun():
        _exit_worker(code)
    sys.exit(code)
