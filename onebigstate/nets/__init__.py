"""One model interface for OBS and every baseline: a mixer registry and a generic stack."""
from onebigstate.nets.mixer import MIXERS, Mixer, build_mixer, register_mixer
from onebigstate.nets.stack import ModelConfig, SeqModel, build_model, count_params

__all__ = ["Mixer", "MIXERS", "register_mixer", "build_mixer", "ModelConfig", "SeqModel",
           "build_model", "count_params"]
