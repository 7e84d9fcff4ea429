"""Addressing: which nodes a step's input is about. O(N d) per step, parallel over time."""
from __future__ import annotations

import math

import torch
from torch import nn


class Addresser(nn.Module):
    """Scores every node by its learned address key: s = K (W_q x) / sqrt(d_key), top-k_max.

    The address comes from the input alone, so all T steps are scored in one matmul; the
    write module then decides how many of the k_max candidates (k_t) are used.
    """

    def __init__(self, d_model: int, n_nodes: int, d_key: int, k_max: int):
        super().__init__()
        self.k_max = k_max
        self.query = nn.Linear(d_model, d_key, bias=False)
        self.keys = nn.Parameter(torch.randn(n_nodes, d_key))
        self.scale = 1.0 / math.sqrt(d_key)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, D] -> (circuit_idx [B, T, K] long, scores [B, T, K])."""
        scores = (self.query(x) @ self.keys.T) * self.scale                      # [B, T, N]
        top = torch.topk(scores, self.k_max, dim=-1)
        return top.indices, top.values
