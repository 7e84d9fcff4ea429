"""The Gaussian connection-strength regulariser (SPEC part 7).

Computed on a sample of entries the window wrote (never a dense pass over N^2): the sorted
sample is compared with the quantiles of N(mean, std), the squared 1-D Wasserstein distance.
"""
from __future__ import annotations

import torch


def gaussian_quantiles(n: int, mean: float, std: float, dtype=torch.float32, device=None) -> torch.Tensor:
    probs = (torch.arange(n, dtype=torch.float64, device=device) + 0.5) / n
    return (mean + std * torch.special.ndtri(probs)).to(dtype)


def gaussian_strength_loss(values: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """values [B, P] sampled connection strengths -> mean squared W2 distance to N(mean, std)."""
    if values.numel() == 0:
        return values.sum()
    sorted_vals = torch.sort(values, dim=-1).values
    target = gaussian_quantiles(values.shape[-1], mean, std, values.dtype, values.device)
    return ((sorted_vals - target) ** 2).mean()
