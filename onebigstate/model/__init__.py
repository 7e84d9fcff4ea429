"""The OBS model's parts: state storage, addressing, write module, reading, layer, LM stack."""
from onebigstate.model.config import GaussianRegConfig, OBSConfig
from onebigstate.model.discretiser import Discretiser, DiscretiserConfig
from onebigstate.model.layer import OBSLayer, OBSStats, obs_layers
from onebigstate.model.lm import OBSLM
from onebigstate.model.state import DenseState, StateStore, initial_state

__all__ = ["OBSConfig", "GaussianRegConfig", "Discretiser", "DiscretiserConfig", "OBSLayer", "OBSStats", "obs_layers", "OBSLM", "DenseState",
           "StateStore", "initial_state"]
