"""Addressing: which nodes a step's input is about. O(N d) per step, parallel over time."""
from __future__ import annotations

import math

import torch
from torch import nn


class Addresser(nn.Module):
    """Scores every node by its learned address key: s = K (W_q x) / sqrt(d_key), top-k_max.

    The address comes from the input alone, so all T steps are scored in one matmul; the
    write module then decides how many of the k_max candidates (k_t) are used.

    ``balance_rate`` > 0 adds a per-node selection bias ``b`` (a buffer, no gradient): the circuit
    is the top-k_max of ``s + b``, in that order (so ``k_t`` keeps the first slots by ``s + b``),
    while the scores handed on (and so the circuit weights) stay ``s``. :meth:`update_bias` moves ``b`` after every training window against each node's load.
    This is the auxiliary-loss-free load balancing of Wang et al. 2024 (DeepSeek-V3's routing),
    here over nodes instead of experts.
    """

    def __init__(self, d_model: int, n_nodes: int, d_key: int, k_max: int, balance_rate: float = 0.0):
        super().__init__()
        self.k_max = k_max
        self.balance_rate = balance_rate
        self.query = nn.Linear(d_model, d_key, bias=False)
        self.keys = nn.Parameter(torch.randn(n_nodes, d_key))
        self.scale = 1.0 / math.sqrt(d_key)
        # only with balancing, so checkpoints of layers without it keep their keys (weights move
        # between a balanced and an unbalanced layer only with the bias key added or dropped)
        if balance_rate > 0:
            self.register_buffer("bias", torch.zeros(n_nodes))
        else:
            self.bias = None

    def forward(self, x: torch.Tensor, mean_prob: bool = False):
        """x [B, T, D] -> (circuit_idx [B, T, K] long, scores [B, T, K]); with ``mean_prob``
        also every node's address probability (softmax over the N scores) averaged over the B x T
        positions [N] (for :func:`load_balance_loss`)."""
        q = self.query(x) * self.scale                                           # [B, T, d_key]
        values, idx, prob = _Address.apply(q, self.keys, self.k_max, mean_prob, self.bias)
        return (idx, values, prob) if mean_prob else (idx, values)

    @torch.no_grad()
    def update_bias(self, circuit_idx: torch.Tensor, k: int, group=None) -> None:
        """One balancing update from a window's circuits [B, T, K]: ``b_i += rate * sign(1 - load_i)``,
        where ``load_i`` is node i's share of the first ``k`` circuit slots times N (1 = even). Every
        node used more than evenly is pushed down, every other one up, by the same step (minus the
        mean step, so the bias does not drift: the choice depends only on differences). ``group``:
        the data-parallel process group, whose ranks then add their loads and keep one bias."""
        picked = circuit_idx[..., :k].reshape(-1)
        counts = torch.zeros_like(self.bias).index_add_(0, picked, torch.ones_like(picked, dtype=self.bias.dtype))
        if group is not None:
            import torch.distributed as dist
            dist.all_reduce(counts, group=group)
        load = counts * (counts.numel() / counts.sum().clamp_min(1))
        step = torch.sign(1.0 - load)
        self.bias += self.balance_rate * (step - step.mean())      # centred: the mean bias stays 0


class _Address(torch.autograd.Function):
    """Top-k of the scores ``q @ keys.T`` per row (chosen by ``scores + bias`` when a bias [N] is
    given, the values still the scores), and optionally the softmax of every row's
    scores averaged over the rows: (values [..., k], indices [..., k] long, mean probability [N]
    or an empty tensor).

    The same numbers as ``torch.topk(q @ keys.T, k)`` and ``softmax(q @ keys.T).mean``, but the
    scores of all N nodes exist a block of rows at a time (at most :attr:`BLOCK_FLOATS` of them,
    never [B, T, N] with gradients). The backward of the top-k touches only the k chosen keys
    per row, O(B T k d); the mean probability's reaches every score: it keeps the probabilities
    up to :attr:`KEEP_FLOATS` of them and recomputes each block's beyond. At N = 16384, B = 32,
    T = 128 the [B, T, N] tensors with gradients cost more than the whole scan.
    """

    BLOCK_FLOATS = 1 << 22
    KEEP_FLOATS = 1 << 24        # the mean probability's backward keeps [B T, N] up to this size

    @staticmethod
    def forward(ctx, q: torch.Tensor, keys: torch.Tensor, k: int, mean_prob: bool, bias: torch.Tensor | None = None):
        rows = q.reshape(-1, q.shape[-1])
        n_rows, n_nodes = rows.shape[0], keys.shape[0]
        values = rows.new_empty((n_rows, k))
        idx = torch.empty((n_rows, k), dtype=torch.long, device=rows.device)
        prob = rows.new_zeros(n_nodes if mean_prob else 0)
        # small enough: keep the probabilities for the backward instead of recomputing them
        keep = mean_prob and n_rows * n_nodes <= _Address.KEEP_FLOATS
        kept = []
        for _, block in _blocks(n_rows, n_nodes):
            scores = rows[block] @ keys.T
            if bias is None:
                top = torch.topk(scores, k, dim=-1)
                values[block], idx[block] = top.values, top.indices
            else:
                chosen = torch.topk(scores + bias, k, dim=-1).indices
                values[block], idx[block] = scores.gather(1, chosen), chosen
            if mean_prob:
                scores /= _exp_rows_(scores).unsqueeze(1)       # the rows' softmax, in place
                prob += scores.sum(0)
                if keep:
                    kept.append(scores)
        prob /= max(n_rows, 1)
        ctx.save_for_backward(rows, keys, idx, torch.cat(kept) if keep else rows.new_empty(0))
        ctx.q_shape = q.shape
        ctx.mark_non_differentiable(idx)
        ctx.set_materialize_grads(False)
        return values.view(*q.shape[:-1], k), idx.view(*q.shape[:-1], k), prob

    @staticmethod
    def backward(ctx, g_values, _g_idx, g_prob):
        rows, keys, idx, kept = ctx.saved_tensors
        d_q, d_keys = torch.zeros_like(rows), torch.zeros_like(keys)
        if g_values is not None:
            g = g_values.reshape(idx.shape)                                      # [R, k]
            chosen = keys.index_select(0, idx.reshape(-1)).view(*idx.shape, -1)  # [R, k, d]
            d_q += torch.bmm(g.unsqueeze(1), chosen).squeeze(1)
            d_keys.index_add_(0, idx.reshape(-1), (g.unsqueeze(-1) * rows.unsqueeze(1)).reshape(-1, keys.shape[1]))
        if g_prob is not None and g_prob.numel():
            # d mean_r softmax(s_r) / d s_r = (diag(p_r) - p_r p_r^T) / R, applied to g_prob
            g_mean = g_prob / rows.shape[0]
            for _, block in _blocks(rows.shape[0], keys.shape[0]):
                if kept.numel():
                    p = kept[block]
                else:
                    p = rows[block] @ keys.T
                    p /= _exp_rows_(p).unsqueeze(1)                              # softmax, [r, N]
                g_s = p * (g_mean - (p @ g_mean).unsqueeze(1))
                d_q[block] += g_s @ keys
                d_keys += g_s.T @ rows[block]
        return d_q.view(ctx.q_shape), d_keys, None, None, None


def _exp_rows_(scores: torch.Tensor) -> torch.Tensor:
    """In place: scores [r, N] -> exp(scores - row max); returns the rows' sums [r] (softmax
    without a second [r, N] tensor)."""
    scores.sub_(scores.amax(dim=1, keepdim=True)).exp_()
    return scores.sum(dim=1)


def _blocks(n_rows: int, n_nodes: int):
    """(index, slice) of row blocks holding at most _Address.BLOCK_FLOATS scores each."""
    step = max(1, _Address.BLOCK_FLOATS // max(n_nodes, 1))
    for i, start in enumerate(range(0, n_rows, step)):
        yield i, slice(start, min(n_rows, start + step))


def load_balance_loss(mean_prob: torch.Tensor, circuit_idx: torch.Tensor, k: int, group=None) -> torch.Tensor:
    """How unevenly the window's circuits load the nodes (the Switch Transformer's balance loss).

    ``N * sum_i f_i p_i``, where f_i is the share of the first ``k`` circuit slots that went to
    node i (no gradient) and p_i the mean softmax address probability of node i. It is 1 when
    the load is even and grows as circuits pile onto shared nodes; its gradient moves address
    probability away from over-used nodes. Shared nodes are where one token's writes land in
    another token's rows, so an even load is what keeps old associations apart.

    mean_prob [N] (``Addresser(x, mean_prob=True)``), circuit_idx [B, T, K] long -> [].

    ``group``: a ``torch.distributed`` process group whose ranks each hold an equal share of one
    batch (data parallel). The loads f are then averaged over the group, the batch's own; each
    rank keeps its own p. The mean over ranks of this loss, and of its gradient (what DDP
    averages), is then the one-process loss and gradient of the whole batch, since it is linear
    in p and f carries no gradient.
    """
    N = mean_prob.shape[-1]
    picked = circuit_idx[..., :k].reshape(-1)
    f = torch.zeros(N, device=mean_prob.device, dtype=mean_prob.dtype).index_add_(
        0, picked, torch.ones_like(picked, dtype=mean_prob.dtype))
    f = f / picked.numel()
    if group is not None:
        import torch.distributed as dist
        dist.all_reduce(f, group=group)
        f = f / dist.get_world_size(group)
    return N * (f * mean_prob).sum()
