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
        q = self.query(x) * self.scale                                           # [B, T, d_key]
        if all_scores:
            scores = q @ self.keys.T                                             # [B, T, N]
            top = torch.topk(scores, self.k_max, dim=-1)
            return top.indices, top.values, scores
        values, idx = _TopScores.apply(q, self.keys, self.k_max)
        return idx, values


class _TopScores(torch.autograd.Function):
    """The top-k of ``q @ keys.T`` per row: (values [..., k], indices [..., k] long).

    The same numbers as ``torch.topk(q @ keys.T, k)``, but the scores of all N nodes are made a
    block of rows at a time (at most :attr:`BLOCK_FLOATS` of them live at once, not [B, T, N]),
    and the backward touches only the k chosen keys per row: O(B T k d) instead of two
    [B T, N] x d matmuls and a [B, T, N] gradient (at N = 16384 those cost most of a step).
    """

    BLOCK_FLOATS = 1 << 22

    @staticmethod
    def forward(ctx, q: torch.Tensor, keys: torch.Tensor, k: int):
        rows = q.reshape(-1, q.shape[-1])
        n_nodes = keys.shape[0]
        values = rows.new_empty((rows.shape[0], k))
        idx = torch.empty((rows.shape[0], k), dtype=torch.long, device=rows.device)
        step = max(1, _TopScores.BLOCK_FLOATS // n_nodes)
        for i in range(0, rows.shape[0], step):
            top = torch.topk(rows[i:i + step] @ keys.T, k, dim=-1)
            values[i:i + step], idx[i:i + step] = top.values, top.indices
        ctx.save_for_backward(rows, keys, idx)
        ctx.q_shape = q.shape
        ctx.mark_non_differentiable(idx)
        return values.view(*q.shape[:-1], k), idx.view(*q.shape[:-1], k)

    @staticmethod
    def backward(ctx, g_values: torch.Tensor, _g_idx):
        rows, keys, idx = ctx.saved_tensors
        g = g_values.reshape(idx.shape)                                          # [R, k]
        chosen = keys.index_select(0, idx.reshape(-1)).view(*idx.shape, -1)      # [R, k, d]
        d_q = torch.bmm(g.unsqueeze(1), chosen).squeeze(1).view(ctx.q_shape)
        d_keys = torch.zeros_like(keys).index_add_(0, idx.reshape(-1),
                                                   (g.unsqueeze(-1) * rows.unsqueeze(1)).reshape(-1, keys.shape[1]))
        return d_q, d_keys, None


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
