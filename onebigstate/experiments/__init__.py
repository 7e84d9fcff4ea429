"""Experiments built on the library: each module one job (see-and-hear: ``seeandhear.py`` runs
it, ``recall.py`` measures it, ``obs_state.py`` looks inside OBS, ``plots.py`` and ``report.py``
draw and tabulate it)."""
