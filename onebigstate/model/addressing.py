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

    def forward(self, x: torch.Tensor, all_scores: bool = False):
        """x [B, T, D] -> (circuit_idx [B, T, K] long, scores [B, T, K]); with ``all_scores``
        also the scores of every node [B, T, N] (for :func:`load_balance_loss`)."""
        scores = (self.query(x) @ self.keys.T) * self.scale                      # [B, T, N]
        top = torch.topk(scores, self.k_max, dim=-1)
        if all_scores:
            return top.indices, top.values, scores
        return top.indices, top.values


def load_balance_loss(scores: torch.Tensor, circuit_idx: torch.Tensor, k: int) -> torch.Tensor:
    """How unevenly the window's circuits load the nodes (the Switch Transformer's balance loss).

    ``N * sum_i f_i p_i``, where f_i is the share of the first ``k`` circuit slots that went to
    node i (no gradient) and p_i the mean softmax address probability of node i. It is 1 when
    the load is even and grows as circuits pile onto shared nodes; its gradient moves address
    probability away from over-used nodes. Shared nodes are where one token's writes land in
    another token's rows, so an even load is what keeps old associations apart.

    scores [B, T, N], circuit_idx [B, T, K] long -> [].
    """
    N = scores.shape[-1]
    p = torch.softmax(scores.float(), dim=-1).reshape(-1, N).mean(0)
    picked = circuit_idx[..., :k].reshape(-1)
    f = torch.zeros(N, device=scores.device).index_add_(0, picked, torch.ones_like(picked, dtype=torch.float))
    f = f / picked.numel()
    return (N * (f * p).sum()).to(scores.dtype)
