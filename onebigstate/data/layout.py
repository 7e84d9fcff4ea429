"""The common per-step layout of multimodal streams (see-and-hear, SAYCam-format video).

Every step carries one modality (or none), a feature vector with a fixed layout, and a
continuous/discrete flag. The feature vector of ``F = image_dim + audio_dim`` values is

    [ image pixels, H*W (row-major, in [0, 1]) | audio log-mel, n_mels*audio_frames (mel-major) ]

with zeros in the part of the absent modality (and everywhere on NONE steps). Token and
action steps (not produced by the see-and-hear streams) carry their integer id in
``features[..., 0]``. Encoders (``onebigstate.encoders``) are built from a layout, so
streams of any image size or audio length share them.
"""
from __future__ import annotations

from dataclasses import dataclass

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
