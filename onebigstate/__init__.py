"""onebigstate: the One Big State sequence model, its baselines, tasks and benchmarks."""
from onebigstate.model import OBSConfig, OBSLayer, OBSLM

__version__ = "0.1.0"
__all__ = ["OBSConfig", "OBSLayer", "OBSLM", "__version__"]
