"""Routes each step of a multimodal stream to its modality's encoder.

Axis letters: ``B`` streams, ``T`` steps, ``F`` features (``onebigstate.data.layout``), ``D``
model width.
"""
from __future__ import annotations

import torch
from torch import nn

from onebigstate.data.layout import ACTION, AUDIO, IMAGE, MODALITY_NAMES, TOKEN, StreamLayout
from onebigstate.encoders.audio import AudioEncoder
from onebigstate.encoders.discrete import ActionEncoder, TokenEncoder
from onebigstate.encoders.image import ImageEncoder


class MultimodalEncoder(nn.Module):
    """``(features [B, T, F], modality [B, T], continuous [B, T] | None)`` ->
    ``(x [B, T, D], continuous [B, T] bool)``; or ``(packed [B, T, F + 2])`` alone, as
    made by ``StreamLayout.pack``.

    Image steps go through :class:`ImageEncoder` (on ``features[..., layout.image_slice]``),
    audio steps through :class:`AudioEncoder` (``layout.audio_slice``), token and action
    steps (when ``vocab_size`` / ``n_actions`` are given) through their embeddings (id in
    ``features[..., 0]``); each encoder runs only on its own steps. A learned embedding of
    the modality is added to every step, so NONE (silent) steps get a learned vector, and a
    LayerNorm closes. The continuous flags pass through unchanged; when none are given they
    default to "image steps are continuous, everything else is discrete".

        >>> from onebigstate.data.streams import StreamConfig, generate_streams
        >>> batch = generate_streams(StreamConfig(n_pairs=2, exposures=[1]), n=2, seed=0)
        >>> enc = MultimodalEncoder(batch.layout, d_model=32)
        >>> x, cont = enc(batch.features, batch.modality, batch.continuous)
        >>> x.shape == (2, batch.features.shape[1], 32), bool((cont == batch.continuous).all())
        (True, True)
    """

    def __init__(self, layout: StreamLayout, d_model: int, vocab_size: int | None = None,
                 n_actions: int | None = None):
        super().__init__()
        self.layout, self.d_model = layout, d_model
        self.encoders = nn.ModuleDict({
            "image": ImageEncoder(layout.image_shape, d_model),
            "audio": AudioEncoder(layout.n_mels, layout.audio_frames, d_model),
        })
        if vocab_size is not None:
            self.encoders["token"] = TokenEncoder(vocab_size, d_model)
        if n_actions is not None:
            self.encoders["action"] = ActionEncoder(d_model, n_actions=n_actions)
        self.modality_embed = nn.Embedding(len(MODALITY_NAMES), d_model)
        self.norm = nn.LayerNorm(d_model)
        self._slices = {IMAGE: layout.image_slice, AUDIO: layout.audio_slice,
                        TOKEN: slice(0, 1), ACTION: slice(0, 1)}

    def forward(self, features: torch.Tensor, modality: torch.Tensor | None = None,
                continuous: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if modality is None:
            features, modality, continuous = self.layout.unpack(features)
        B, T, F = features.shape
        if F != self.layout.feature_dim:
            raise ValueError(f"features must be [B, T, {self.layout.feature_dim}] for {self.layout}, got {tuple(features.shape)}")
        if modality.shape != (B, T):
            raise ValueError(f"modality must be [B, T] = {(B, T)}, got {tuple(modality.shape)}")
        flat_f, flat_m = features.reshape(B * T, F), modality.reshape(B * T)
        known = [i for i, name in enumerate(MODALITY_NAMES) if i == 0 or name in self.encoders]
        unknown = ~torch.isin(flat_m, torch.tensor(known, device=flat_m.device))
        if unknown.any():
            bad = sorted(set(flat_m[unknown].tolist()))
            raise ValueError(f"modality ids {bad} have no encoder here (this encoder handles {[MODALITY_NAMES[i] for i in known]})")
        x = self.modality_embed(flat_m)
        for mod, sl in self._slices.items():
            name = MODALITY_NAMES[mod]
            if name not in self.encoders:
                continue
            idx = (flat_m == mod).nonzero(as_tuple=True)[0]
            if idx.numel():
                x = x.index_add(0, idx, self.encoders[name](flat_f[idx, sl]).to(x.dtype))
        if continuous is None:
            continuous = modality == IMAGE
        elif continuous.shape != (B, T):
            raise ValueError(f"continuous must be [B, T] = {(B, T)}, got {tuple(continuous.shape)}")
        return self.norm(x).reshape(B, T, self.d_model), continuous.bool()
