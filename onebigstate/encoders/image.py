"""Image encoder: a small CNN from raw pixels to one feature vector per step.

Axis letters: ``B`` batch, ``T`` steps, ``H x W`` image, ``D`` output width.
"""
from __future__ import annotations

import torch
from torch import nn


class ImageEncoder(nn.Module):
    """Pixels ``[..., H*W]`` (or ``[..., H, W]``), values in [0, 1] -> ``[..., D]``.

    Two 3x3 convolutions (the second with stride 2), average-pooled to 4x4, then a linear
    map; any image size works (8x8 digits, larger SAYCam frames).
    """

    def __init__(self, image_shape: tuple[int, int], d_model: int, channels: tuple[int, int] = (16, 32)):
        super().__init__()
        self.image_shape = tuple(image_shape)
        c1, c2 = channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.GELU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d((4, 4)),
        )
        self.proj = nn.Linear(c2 * 16, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.image_shape
        if x.shape[-1] == H * W:
            lead = x.shape[:-1]
        elif x.shape[-2:] == (H, W):
            lead = x.shape[:-2]
        else:
            raise ValueError(f"ImageEncoder expects [..., {H * W}] or [..., {H}, {W}], got {tuple(x.shape)}")
        y = self.conv(x.reshape(-1, 1, H, W))
        return self.proj(y.flatten(1)).reshape(*lead, -1)
