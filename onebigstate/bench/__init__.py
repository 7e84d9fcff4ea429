"""The benchmark harness: suites of cells (task setting x model x lr x seed), one launcher.

    obs bench mqar --quick                     # a CPU run of minutes
    obs bench capacity --full --device cuda    # the real grid

A suite is a Python file under :mod:`onebigstate.bench.suites` whose ``build(opts)`` returns a
:class:`~onebigstate.bench.cells.Suite` (its list of cells and its plots). Every cell trains
through :func:`onebigstate.training.trainer.train` into ``runs/bench/SUITE/<cell>/``; a cell whose
``results.json`` exists is not trained again and one whose ``bench.json`` exists is not
evaluated again, so a killed bench resumes where it stopped (a half-trained cell from its last
checkpoint). :mod:`onebigstate.bench.report` then writes ``docs/results/SUITE.md`` and plots.
"""
