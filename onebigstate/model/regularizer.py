"""Regularisers of the state's writes.

The Gaussian connection-strength regulariser (SPEC part 7) is computed on a sample of entries the
window wrote (never a dense pass over N^2): the sorted sample is compared with the quantiles of
N(mean, std), the squared 1-D Wasserstein distance. The write mass is the mean |gate| of the steps'
writes, each gate weighted by how many entries it scales (the ``write_cost`` penalty).
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


def write_mass(gates: torch.Tensor, cfg) -> torch.Tensor:
    """gates [B, T, 3 or 4] (g_in, g_as, g_ch[, g_rev]) -> their mean |gate|, weighted by the most entries
    each scales per step (intra K^2, assoc M K, chain K^2, reverse K M; K = k_max, M = m_active of ``cfg``, a
    :class:`~onebigstate.kernels.step.StepConfig`): 1 when every step writes at full strength, 0 when none
    writes. The chain gate counts on every step, though only continuous steps after continuous ones use it."""
    K, M = cfg.k_max, cfg.m_active
    weights = torch.tensor([K * K, M * K, K * K, K * M][:gates.shape[-1]], dtype=gates.dtype, device=gates.device)
    return (gates.abs() * (weights / weights.sum())).sum(-1).mean()
