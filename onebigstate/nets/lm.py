"""A language-model-style stack of OBS layers for token tasks: embedding, layers, norm, head."""
from __future__ import annotations

from onebigstate.model.config import OBSConfig
from onebigstate.nets.stack import ModelConfig, SeqModel


class OBSLM(SeqModel):
    """tokens [B, T] long -> (logits [B, T, vocab], states); pre-norm residual OBS blocks.

    The generic :class:`SeqModel` with the ``obs`` mixer, named for convenience:
    ``OBSLM(vocab_size=128, n_layers=2, obs=OBSConfig(d_model=64, n_nodes=512))``.
    """

    def __init__(self, vocab_size: int, n_layers: int, obs: OBSConfig, mlp_ratio: float = 0.0):
        mixer = obs.model_dump()
        d_model = mixer.pop("d_model")
        cfg = ModelConfig(name="obs", d_model=d_model, n_layers=n_layers, mlp_ratio=mlp_ratio, mixer=mixer)
        super().__init__(cfg, n_out=vocab_size, vocab_size=vocab_size)
