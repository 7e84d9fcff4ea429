"""The common per-step layout of multimodal streams (see-and-hear, SAYCam-format video).

Every step carries one modality (or none), a feature vector with a fixed layout, and a
continuous/discrete flag. The feature vector of ``F = image_dim + audio_dim`` values is

    [ image pixels, H*W (row-major, in [0, 1]) | audio log-mel, n_mels*audio_frames (mel-major) ]

with zeros in the part of the absent modality (and everywhere on NONE steps). Token and
action steps (not produced by the see-and-hear streams) carry their integer id in
``features[..., 0]``. Encoders (``onebigstate.encoders``) are built from a layout, so
streams of any image size or audio length share them.

For interfaces that take one input tensor per step (``x [B, T, d_input]``),
:meth:`StreamLayout.pack` appends the modality id and the continuous flag as two last
channels (``packed_dim = F + 2``) and :meth:`StreamLayout.unpack` splits them off again;
``MultimodalEncoder`` accepts either form.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# modality ids of a step
NONE, IMAGE, AUDIO, TOKEN, ACTION = 0, 1, 2, 3, 4
MODALITY_NAMES = ("none", "image", "audio", "token", "action")


@dataclass(frozen=True)
class StreamLayout:
    image_shape: tuple[int, int] = (8, 8)
    n_mels: int = 40
    audio_frames: int = 24

    @property
    def image_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    @property
    def audio_dim(self) -> int:
        return self.n_mels * self.audio_frames

    @property
    def feature_dim(self) -> int:
        return self.image_dim + self.audio_dim

    @property
    def image_slice(self) -> slice:
        return slice(0, self.image_dim)

    @property
    def audio_slice(self) -> slice:
        return slice(self.image_dim, self.feature_dim)

    @property
    def packed_dim(self) -> int:
        return self.feature_dim + 2

    def pack(self, features: torch.Tensor, modality: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        """``[B, T, F]``, ``[B, T]``, ``[B, T]`` -> ``[B, T, F + 2]`` (modality id, then flag, as floats)."""
        if features.shape[-1] != self.feature_dim:
            raise ValueError(f"features must be [..., {self.feature_dim}] for {self}, got {tuple(features.shape)}")
        extra = torch.stack([modality.to(features.dtype), continuous.to(features.dtype)], dim=-1)
        return torch.cat([features, extra], dim=-1)

    def unpack(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inverse of :meth:`pack`: (features ``[B, T, F]``, modality int64, continuous bool)."""
        if x.shape[-1] != self.packed_dim:
            raise ValueError(f"packed steps must be [..., {self.packed_dim}] for {self}, got {tuple(x.shape)}")
        return x[..., : self.feature_dim], x[..., -2].round().long(), x[..., -1] > 0.5
