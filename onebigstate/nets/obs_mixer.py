"""OBS as a registered mixer, so the generic stack and every benchmark can build it by name."""
from __future__ import annotations

from onebigstate.model.config import OBSConfig, OBSCoreConfig
from onebigstate.model.layer import OBSLayer
from onebigstate.nets.mixer import register_mixer


class OBSMixerConfig(OBSCoreConfig):
    """OBSConfig without d_model (the stack sets it)."""


@register_mixer("obs", OBSMixerConfig)
class OBSMixer(OBSLayer):
    uses_continuous_flags = True

    def __init__(self, d_model: int, cfg: OBSMixerConfig):
        super().__init__(OBSConfig(**{**cfg.model_dump(), "d_model": d_model}))

    def state_size(self, seq_len: int) -> dict[str, int]:
        c = self.cfg
        return {"floats": c.n_nodes * c.n_nodes + c.m_active + c.k_max,
                "dense_floats": c.n_nodes * c.n_nodes}
