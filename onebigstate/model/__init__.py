"""The OBS model's parts: state storage, addressing, write module, reading, the layer.

The LM stack that holds OBS layers (``OBSLM``) is in :mod:`onebigstate.nets`."""
from onebigstate.model.config import GaussianRegConfig, OBSConfig
from onebigstate.model.discretiser import Discretiser, DiscretiserConfig
from onebigstate.model import sparse_state  # noqa: F401  (registers the 'sparse' state store)
from onebigstate.model.layer import OBSLayer, OBSStats, obs_layers
from onebigstate.model.state import DenseState, StateStore, initial_state

__all__ = ["OBSConfig", "GaussianRegConfig", "Discretiser", "DiscretiserConfig", "OBSLayer", "OBSStats", "obs_layers", "DenseState",
           "StateStore", "initial_state"]
