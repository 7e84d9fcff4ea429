"""One model interface for OBS and every baseline: a mixer registry, a generic stack, the OBS LM.

Importing this package registers the ``obs`` mixer; ``import onebigstate.baselines`` (the lab)
registers the baselines into the same registry.
"""
from onebigstate.nets import obs_mixer  # noqa: F401  (registers the 'obs' mixer)
from onebigstate.nets.lm import OBSLM
from onebigstate.nets.mixer import MIXERS, Mixer, build_mixer, register_mixer
from onebigstate.nets.stack import ModelConfig, SeqModel, build_model, count_params

__all__ = ["Mixer", "MIXERS", "register_mixer", "build_mixer", "ModelConfig", "SeqModel",
           "build_model", "count_params", "OBSLM"]
