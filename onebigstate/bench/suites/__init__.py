"""Benchmark suites: each module's ``build(opts)`` returns a :class:`~onebigstate.bench.cells.Suite`.

Add a suite by writing a module here and naming it in ``SUITES`` (and in ``CPU_SUITES`` when its
``build`` has a grid for ``mode == "cpu"``).
"""
from __future__ import annotations

import importlib

from onebigstate.bench.cells import Options, Suite

CPU_SUITES = ["extrapolation", "retention"]
SUITES = ["mqar", "capacity", "extrapolation", "retention", "sequential", "state_tracking", "continual"]


def build_suite(name: str, opts: Options) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown suite '{name}'; known: {', '.join(SUITES)}")
    if opts.mode == "cpu" and name not in CPU_SUITES:
        raise ValueError(f"suite '{name}' has no --cpu grid (suites with one: {', '.join(CPU_SUITES)}); "
                         f"use --quick or --full")
    if opts.train is not None and name != "extrapolation":
        raise ValueError(f"--train sets the extrapolation suite's training setting; suite '{name}' has none to set")
    return importlib.import_module(f"onebigstate.bench.suites.{name}").build(opts)

