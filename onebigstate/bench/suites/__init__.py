"""Benchmark suites: each module's ``build(opts)`` returns a :class:`~onebigstate.bench.cells.Suite`.

Add a suite by writing a module here and naming it in ``SUITES`` (and in ``CPU_SUITES`` when its
``build`` has a grid for ``mode == "cpu"``).
"""
from __future__ import annotations

import importlib

from onebigstate.bench.cells import Options, Suite

CPU_SUITES = ["extrapolation", "retention", "seeandhear", "acting"]
WIDTH_SUITES = ["mqar", "capacity", "extrapolation"]   # suites with a grid over model widths (--widths)
SUITES = ["mqar", "capacity", "extrapolation", "retention", "sequential", "state_tracking", "continual",
          "seeandhear", "acting"]


def build_suite(name: str, opts: Options) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown suite '{name}'; known: {', '.join(SUITES)}")
    if opts.mode == "cpu" and name not in CPU_SUITES:
        raise ValueError(f"suite '{name}' has no --cpu grid (suites with one: {', '.join(CPU_SUITES)}); "
                         f"use --quick or --full")
    if opts.train is not None and name != "extrapolation":
        raise ValueError(f"--train sets the extrapolation suite's training setting; suite '{name}' has none to set")
    if opts.widths is not None:
        if name not in WIDTH_SUITES:
            raise ValueError(f"--widths sets the model widths of a suite with a width grid "
                             f"({', '.join(WIDTH_SUITES)}); suite '{name}' runs at width 64 only")
        if not opts.widths or any(d <= 0 or d % 4 for d in opts.widths) or len(set(opts.widths)) < len(opts.widths):
            raise ValueError(f"--widths: expected distinct positive multiples of 4 (2 heads of even width), "
                             f"got {list(opts.widths)}")
    if opts.train_delay is not None:
        if name != "seeandhear":
            raise ValueError(f"--train-delay sets the see-and-hear suite's longest training delay; suite '{name}' "
                             f"has none to set")
        if opts.train_delay < 3:
            raise ValueError(f"--train-delay: expected a delay of at least 3 steps (the shortest), got "
                             f"{opts.train_delay}")
    if opts.steps is not None and opts.steps < 10:   # warm-up, checkpoints and logging are fractions of it
        raise ValueError(f"--steps: expected at least 10 training steps, got {opts.steps}")
    return importlib.import_module(f"onebigstate.bench.suites.{name}").build(opts)

