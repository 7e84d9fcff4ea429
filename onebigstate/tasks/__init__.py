"""Tasks behind one interface (``base.Task``), registered by name (``registry``).

Importing the package imports every task module, which registers it.
"""
from onebigstate.tasks import (continual, delayed_recall, gridworld_task, mqar_task, parity,  # noqa: F401
                               retention, s5, saycam_task, seeandhear_task, selective_copy)
