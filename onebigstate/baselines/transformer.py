"""Causal multi-head attention with rotary positions, as a registered mixer (``transformer``).

Axes: B batch, T new steps, P cached steps (past), H heads, E head width (D = H * E).

Attention runs through ``torch.nn.functional.scaled_dot_product_attention``. The carried state
is the KV cache (keys already rotated), so a sequence split into chunks with the cache
carried gives the same outputs as one pass. State size counted the Zoology way: the KV cache,
``2 * T * D`` floats per layer and stream after T steps.

    mixer = build_mixer("transformer", 64, {"n_heads": 4})
    y, cache = mixer(x)            # x [B, T, D]
    y2, cache = mixer(x2, cache)   # continues at position T
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from onebigstate.config import StrictModel
from onebigstate.nets.mixer import Mixer, register_mixer


class TransformerConfig(StrictModel):
    n_heads: int = Field(4, ge=1, description="attention heads H; d_model must be divisible by H")
    rope_base: float = Field(10000.0, gt=0.0, description="rotary frequency base")
    bias: bool = Field(False, description="biases in the q/k/v and output projections")


def rotary_angles(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, E/2] for integer ``positions`` [T]."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    ang = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    return ang.cos(), ang.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :E/2], x[..., E/2:]) of x [B, H, T, E] by the angles [T, E/2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


# Largest score matrix (elements) one attention call builds over a carried cache.
SCORE_ELEMENTS = 1 << 26


def query_chunks(batch_heads: int, n_queries: int, n_keys: int) -> list[tuple[int, int]]:
    """[i0, i1) ranges of queries such that batch_heads x (i1 - i0) x n_keys <= SCORE_ELEMENTS."""
    size = max(1, SCORE_ELEMENTS // max(1, batch_heads * n_keys))
    return [(i0, min(n_queries, i0 + size)) for i0 in range(0, n_queries, size)]


@register_mixer("transformer", TransformerConfig)
class TransformerMixer(Mixer):
    """Causal softmax attention; state = {"k": [B, H, P, E], "v": [B, H, P, E]} (the KV cache)."""

    def __init__(self, d_model: int, cfg: TransformerConfig):
        super().__init__()
        if d_model % cfg.n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({cfg.n_heads})")
        head_dim = d_model // cfg.n_heads
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head width, got d_model/n_heads = {head_dim}")
        self.cfg = cfg
        self.d_model = d_model
        self.n_heads = cfg.n_heads
        self.head_dim = head_dim
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=cfg.bias)
        self.out = nn.Linear(d_model, d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected x [B, T, {self.d_model}], got {tuple(x.shape)}")
        B, T, D = x.shape
        H, E = self.n_heads, self.head_dim
        q, k, v = self.qkv(x).view(B, T, 3, H, E).permute(2, 0, 3, 1, 4)  # each [B, H, T, E]
        P = 0 if state is None else state["k"].shape[2]
        if state is not None and state["k"].shape[:2] != (B, H):
            raise ValueError(f"KV cache holds {tuple(state['k'].shape[:2])} (batch, heads), input needs {(B, H)}")
        cos, sin = rotary_angles(torch.arange(P, P + T, device=x.device), E, self.cfg.rope_base)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if state is not None:
            k = torch.cat([state["k"], k], dim=2)
            v = torch.cat([state["v"], v], dim=2)
        if P == 0:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # query i (absolute position P + i) sees keys 0 .. P + i; queries go in chunks so the
            # score matrix stays bounded when a long stream has filled the cache (lifelong reading)
            outs = []
            for i0, i1 in query_chunks(B * H, T, P + T):
                mask = torch.ones(i1 - i0, P + T, dtype=torch.bool, device=x.device).tril(diagonal=P + i0)
                outs.append(F.scaled_dot_product_attention(q[:, :, i0:i1], k, v, attn_mask=mask))
            o = torch.cat(outs, dim=2)
        y = self.out(o.transpose(1, 2).reshape(B, T, D))
        return y, {"k": k, "v": v}

    def state_size(self, seq_len: int) -> dict[str, int]:
        return {"floats": 2 * seq_len * self.d_model}
