"""onebigstate: the One Big State sequence model.

The core (``pip install onebigstate``: torch, numpy, pydantic, pyyaml) is the OBS layer, its op
and backends, the state stores, the LM stack and the distributed state. The lab
(``pip install 'onebigstate[lab]'``) adds the baselines, tasks, data, training, benchmarks and the
``obs`` command; ``docs/architecture.md`` says which folder is which.
"""
from onebigstate.model import OBSConfig, OBSLayer
from onebigstate.nets.lm import OBSLM

__version__ = "0.1.0"
__all__ = ["OBSConfig", "OBSLayer", "OBSLM", "load", "__version__"]


def load(path, device: str | None = None):
    """The trained model of a run folder or checkpoint (its last checkpoint), in eval mode:
    ``model = onebigstate.load("runs/mqar")``. A run's model is built by its task, so this needs
    the lab (``onebigstate.training.load_run`` returns the task and config too)."""
    try:
        from onebigstate.training.loading import load_run   # the lab, imported only when called
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"onebigstate.load builds a run's model through its task, which is part of the "
                                  f"lab: pip install 'onebigstate[lab]' (missing: {err.name})", name=err.name) from err
    return load_run(path, device=device).model
