"""Audio encoder: a small 1-d convolution over time of a word's log-mel frames.

Axis letters: ``M`` mel bins (the convolution's channels), ``L`` frames, ``D`` output width.
"""
from __future__ import annotations

import torch
from torch import nn


class AudioEncoder(nn.Module):
    """Log-mel ``[..., M*L]`` (mel-major, as in the stream layout) or ``[..., M, L]`` -> ``[..., D]``.

    Two convolutions over time (kernel 3, the second with stride 2), average-pooled to 6
    time positions, then a linear map, so the order of sounds within the word is kept.
    """

    def __init__(self, n_mels: int, n_frames: int, d_model: int, channels: int = 64):
        super().__init__()
        self.n_mels, self.n_frames = n_mels, n_frames
        self.conv = nn.Sequential(
            nn.Conv1d(n_mels, channels, 3, padding=1), nn.GELU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool1d(6),
        )
        self.proj = nn.Linear(channels * 6, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        M, L = self.n_mels, self.n_frames
        if x.shape[-1] == M * L:
            lead = x.shape[:-1]
        elif x.shape[-2:] == (M, L):
            lead = x.shape[:-2]
        else:
            raise ValueError(f"AudioEncoder expects [..., {M * L}] or [..., {M}, {L}], got {tuple(x.shape)}")
        y = self.conv(x.reshape(-1, M, L))
        return self.proj(y.flatten(1)).reshape(*lead, -1)
