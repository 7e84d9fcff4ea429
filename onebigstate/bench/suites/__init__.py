"""Benchmark suites: each module's ``build(opts)`` returns a :class:`~onebigstate.bench.cells.Suite`.

Add a suite by writing a module here and naming it in ``SUITES``.
"""
from __future__ import annotations

import importlib

from onebigstate.bench.cells import Options, Suite

SUITES = ["mqar", "capacity", "extrapolation", "retention", "sequential", "state_tracking", "continual"]


def build_suite(name: str, opts: Options) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown suite '{name}'; known: {', '.join(SUITES)}")
    return importlib.import_module(f"onebigstate.bench.suites.{name}").build(opts)
