"""A modern (continuous) Hopfield layer as a registered mixer (``hopfield``).

Axes: B batch, T new steps, P stored steps from earlier calls, H heads, E head width (D = H * E).

Retrieval as in Ramsauer et al., "Hopfield Networks is All You Need": the state pattern xi
retrieves from stored patterns Y with inverse temperature beta,

    xi_new = Y_k^T softmax(beta * Y_k xi),        output = Y_v^T softmax(beta * Y_k xi_last).

Causal: at step t the stored patterns are the keys / values of the past steps 1..t-1,
projected from the input (Y_k = x W_k, Y_v = x W_v), and the state pattern is
xi_0 = x_t W_q; the first step has nothing stored and retrieves zero. ``include_current``
also stores the step's own pattern before retrieving (then the layer is causal softmax
attention without positions; with ``normalize_patterns`` a step would mostly retrieve itself). ``n_updates`` > 1 runs n_updates - 1 update steps in the key
space before the final retrieval (one update already converges for well-separated
patterns; beta large: retrieve one pattern, beta small: a metastable average). Without
position information the layer is permutation-invariant over the stored set, by design.

``beta``: fixed (None: 1 / sqrt(E), the attention value) or, with ``learn_beta``, a learned
positive value per head (log-parametrised, starting at ``beta``). ``normalize_patterns``
L2-normalises xi and the stored keys, so beta alone sets the sharpness of retrieval
(similarities are cosines); start beta larger then (e.g. 8).

``conv_size`` > 0 adds a short causal depthwise convolution over the input before the
projections (as the Based / DeltaNet layers have), so a stored key can carry the step
before it; without it the layer cannot bind a token to the one that followed it, which
MQAR needs (one layer or several).

The carried state is the stored set (keys and values of the steps so far), so chunks with the
state carried give the same outputs as one pass; its size counted the Zoology way is
``2 * T * D`` floats per stream, as for an attention KV cache (plus ``D * (conv_size - 1)``
for the convolution's last inputs).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from onebigstate.baselines.transformer import query_chunks
from onebigstate.config import StrictModel
from onebigstate.nets.mixer import Mixer, register_mixer


class HopfieldConfig(StrictModel):
    n_heads: int = Field(4, ge=1, description="H; d_model must be divisible by it")
    beta: float | None = Field(None, gt=0.0, description="inverse temperature (None: 1/sqrt(head width))")
    learn_beta: bool = Field(False, description="learn beta per head (log-parametrised)")
    normalize_patterns: bool = Field(False, description="L2-normalise state and stored key patterns")
    n_updates: int = Field(1, ge=1, description="Hopfield update steps (the last one retrieves values)")
    include_current: bool = Field(False, description="store step t's own pattern before step t retrieves")
    conv_size: int = Field(0, ge=0, description="short causal depthwise conv over the input (0: none)")


@register_mixer("hopfield", HopfieldConfig)
class HopfieldMixer(Mixer):
    """x [B, T, D] -> (y [B, T, D], state = {"k", "v": [B, H, P+T, E], "conv": [B, D, conv_size-1] or None})."""

    def __init__(self, d_model: int, cfg: HopfieldConfig):
        super().__init__()
        if d_model % cfg.n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({cfg.n_heads})")
        self.cfg = cfg
        self.d_model = d_model
        self.n_heads = cfg.n_heads
        self.head_dim = d_model // cfg.n_heads
        beta0 = cfg.beta if cfg.beta is not None else 1.0 / math.sqrt(self.head_dim)
        log_beta = torch.full((cfg.n_heads,), math.log(beta0))
        if cfg.learn_beta:
            self.log_beta = nn.Parameter(log_beta)
            self.log_beta._no_weight_decay = True
        else:
            self.register_buffer("log_beta", log_beta, persistent=False)
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        if cfg.conv_size > 0:
            self.conv = nn.Conv1d(d_model, d_model, cfg.conv_size, groups=d_model, bias=False)

    @property
    def beta(self) -> torch.Tensor:
        """Inverse temperature per head [H]."""
        return self.log_beta.exp()

    def forward(self, x: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected x [B, T, {self.d_model}], got {tuple(x.shape)}")
        B, T, D = x.shape
        H, E = self.n_heads, self.head_dim

        def heads(z: torch.Tensor) -> torch.Tensor:
            return z.view(B, T, H, E).transpose(1, 2)                      # [B, H, T, E]

        conv_next = None
        if self.cfg.conv_size > 0:
            W = self.cfg.conv_size
            cache = x.new_zeros(B, D, W - 1) if state is None else state["conv"]
            full = torch.cat([cache, x.transpose(1, 2)], dim=2)            # [B, D, W-1+T]
            x = F.conv1d(full, self.conv.weight, groups=D).transpose(1, 2)
            conv_next = full[:, :, full.shape[2] - (W - 1):]
        xi, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        if self.cfg.normalize_patterns:
            xi, k = F.normalize(xi, dim=-1), F.normalize(k, dim=-1)
        P = 0
        if state is not None:
            if state["k"].shape[:2] != (B, H):
                raise ValueError(f"stored patterns hold {tuple(state['k'].shape[:2])} (batch, heads), "
                                 f"input needs {(B, H)}")
            P = state["k"].shape[2]
            k = torch.cat([state["k"], k], dim=2)
            v = torch.cat([state["v"], v], dim=2)
        # step P + i retrieves from the stored patterns 0 .. P + i - 1 (.. P + i with include_current)
        diagonal = P if self.cfg.include_current else P - 1
        mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(diagonal=diagonal)
        beta = self.beta.to(x.dtype)[None, :, None, None]

        def retrieve(query: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
            # softmax(beta * query K^T) values over the stored patterns; a step with none stored
            # gets zero weights (a finite fill, so no NaN reaches the gradients). Queries go in
            # chunks so the scores stay bounded over a long carried store (lifelong reading).
            outs = []
            for i0, i1 in query_chunks(B * H, T, P + T):
                m = mask[i0:i1]
                scores = (beta * query[:, :, i0:i1]) @ k.transpose(-1, -2)  # [B, H, i1-i0, P+T]
                weights = scores.masked_fill(~m, torch.finfo(scores.dtype).min).softmax(dim=-1) * m
                outs.append(weights @ values)
            return torch.cat(outs, dim=2)

        for _ in range(self.cfg.n_updates - 1):
            xi = retrieve(xi, k)
            if self.cfg.normalize_patterns:
                xi = F.normalize(xi, dim=-1)
        o = retrieve(xi, v)
        y = self.o_proj(o.transpose(1, 2).reshape(B, T, D))
        return y, {"k": k, "v": v, "conv": conv_next}

    def state_size(self, seq_len: int) -> dict[str, int]:
        return {"floats": 2 * seq_len * self.d_model + self.d_model * max(self.cfg.conv_size - 1, 0)}
