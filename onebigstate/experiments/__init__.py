"""Experiments built on the library, each module one job.

See and hear: ``seeandhear.py`` runs the comparison, ``recall.py`` measures recall against
delay and exposures, ``obs_state.py`` looks inside OBS, ``plots.py`` and ``report.py`` draw
and tabulate it, ``demo.py`` is what ``obs demo`` runs. Acting: ``acting.py``.
"""
