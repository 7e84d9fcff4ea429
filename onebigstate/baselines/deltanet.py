"""Linear attention with the delta rule: DeltaNet and Gated DeltaNet, as registered mixers
(``deltanet``; ``gated_deltanet`` is the same mixer with ``gated: true`` by default).

Axes: B batch, T steps, H heads, K key width per head, V value width per head, n chunks,
C chunk length, D model width.

The op. Per head, with L2-normalised q_t, k_t, a write strength beta_t in (0, 1) and (gated
only) a log-decay g_t <= 0, the state S [K, V] evolves as

    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,   o_t = S_t^T (scale q_t)

i.e. decay, read the old value at k_t, move it a fraction beta_t towards v_t. Two twins with
one signature, ``(q, k, v, beta, g=None, initial_state=None, scale=None) -> (o, final_state)``:

- ``delta_rule_recurrent``: the explicit time loop, the specification;
- ``delta_rule_chunk``: the chunkwise-parallel form. Inside a chunk, with S0 the state at
  its start, G_i the within-chunk cumulative log-decay (gamma_i = exp(G_i)) and
  Gamma_ij = exp(G_i - G_j) for j <= i, the per-step corrections u_i (so that
  S_i = gamma_i S0 + sum_{j<=i} Gamma_ij k_j u_j^T) satisfy

      u_i + beta_i sum_{j<i} Gamma_ij (k_i . k_j) u_j = beta_i (v_i - gamma_i k_i^T S0),

  a unit lower-triangular system (I + A) U = diag(beta) (V - diag(gamma) K S0). Its solution
  splits into U = T diag(beta) V and W = T diag(beta gamma) K with T = (I + A)^{-1} (the WY /
  UT transform, computed for all chunks at once by a triangular solve), so that only
  ``U - W S0`` depends on the carried state. Then

      O = diag(gamma) Q S0 + tril(Q K^T * Gamma) (U - W S0),
      S_C = gamma_C S0 + (K * Gamma_C.)^T (U - W S0),

  a short Python loop over chunks doing only matrix products. A length that is not a
  multiple of C is padded with k = v = beta = g = 0 steps, which leave the state unchanged.

The layer follows fla's DeltaNet / GatedDeltaNet (same parameter names and shapes, so
weights load either way): q/k/v projections, optional short causal depthwise convolutions
with SiLU (otherwise SiLU alone), L2-normalised q and k, scale K^-1/2, beta = sigmoid(b_proj x),
gated: g = -exp(A_log) softplus(a_proj x + dt_bias), per-head RMSNorm of the output (times
SiLU(g_proj x) with the output gate), o_proj. State carried between calls:
{"S": [B, H, K, V], "conv": (q, k, v conv caches [B, channels, conv_size - 1]) or None};
Zoology-way size H K V + (2 H K + H V)(conv_size - 1) floats per stream.

``impl``: ``chunk`` (default), ``recurrent`` (the reference loop) or ``fla`` (fla.layers
DeltaNet / GatedDeltaNet on a CUDA machine with flash-linear-attention installed; guarded
import that raises if absent, no fallback; sequence layer only, no carried state; runs under
bf16 autocast, since fla 0.6's chunk kernel refuses float32).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from onebigstate.config import StrictModel
from onebigstate.nets.mixer import Mixer, register_mixer


# ---- ops ------------------------------------------------------------------------------------
def _check_op_inputs(q, k, v, beta, g, initial_state):
    B, T, H, K = q.shape
    V = v.shape[-1]
    if k.shape != q.shape or v.shape[:3] != (B, T, H) or beta.shape != (B, T, H):
        raise ValueError(f"expected q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H]; got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}, beta {tuple(beta.shape)}")
    if g is not None and g.shape != (B, T, H):
        raise ValueError(f"expected g [B, T, H] = {(B, T, H)}, got {tuple(g.shape)}")
    if initial_state is not None and initial_state.shape != (B, H, K, V):
        raise ValueError(f"expected initial_state [B, H, K, V] = {(B, H, K, V)}, got {tuple(initial_state.shape)}")


def delta_rule_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                         g: torch.Tensor | None = None, initial_state: torch.Tensor | None = None,
                         scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The delta rule step by step (the specification).

    q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H], g [B, T, H] log-decay (None: no decay),
    initial_state [B, H, K, V] -> (o [B, T, H, V], final state [B, H, K, V]).
    """
    _check_op_inputs(q, k, v, beta, g, initial_state)
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state
    outs = []
    for t in range(T):
        if g is not None:
            S = S * g[:, t].exp()[..., None, None]
        k_t = k[:, t]                                                       # [B, H, K]
        v_old = torch.einsum("bhk,bhkv->bhv", k_t, S)
        u = beta[:, t, :, None] * (v[:, t] - v_old)                         # [B, H, V]
        S = S + k_t[..., :, None] * u[..., None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    o = torch.stack(outs, dim=1) if outs else v.new_zeros(B, 0, H, V)
    return o, S


def delta_rule_chunk(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                     g: torch.Tensor | None = None, initial_state: torch.Tensor | None = None,
                     scale: float | None = None, chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The delta rule chunkwise in parallel (WY / UT transform); same contract as the recurrent twin."""
    _check_op_inputs(q, k, v, beta, g, initial_state)
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state
    if T == 0:
        return v.new_zeros(B, 0, H, V), S
    C = min(chunk_size, T)
    n = math.ceil(T / C)
    pad = n * C - T

    def chunks(x: torch.Tensor) -> torch.Tensor:
        # [B, T, H, ...] -> [B, H, n, C, ...], padded with zeros at the end
        x = x.transpose(1, 2)
        if pad:
            x = F.pad(x, (0, 0) * (x.dim() - 3) + (0, pad))
        return x.reshape(B, H, n, C, *x.shape[3:])

    qc, kc, vc = chunks(q * scale), chunks(k), chunks(v)                    # [B, H, n, C, K|V]
    bc = chunks(beta.unsqueeze(-1)).squeeze(-1)                             # [B, H, n, C]
    strict = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    if g is None:
        gamma = decay_to_end = None
        Gamma = causal.to(q.dtype)
    else:
        G = chunks(g.unsqueeze(-1)).squeeze(-1).cumsum(-1)                  # [B, H, n, C]
        gamma = G.exp()
        decay_to_end = (G[..., -1:] - G).exp()                              # [B, H, n, C]
        # exp(G_i - G_j) on and below the diagonal; masked before exp, so no overflow above it
        Gamma = (G[..., :, None] - G[..., None, :]).masked_fill(~causal, float("-inf")).exp()

    A = (bc[..., None] * (kc @ kc.transpose(-1, -2)) * Gamma).masked_fill(~strict, 0.0)
    eye = torch.eye(C, dtype=q.dtype, device=q.device)
    M = eye + A                                                             # [B, H, n, C, C]
    kw = kc * bc[..., None] if gamma is None else kc * (bc * gamma)[..., None]
    U = torch.linalg.solve_triangular(M, vc * bc[..., None], upper=False, unitriangular=True)
    W = torch.linalg.solve_triangular(M, kw, upper=False, unitriangular=True)
    Aqk = (qc @ kc.transpose(-1, -2)) * Gamma                               # [B, H, n, C, C]
    if g is None:
        Aqk = Aqk.masked_fill(~causal, 0.0)
    qs = qc if gamma is None else qc * gamma[..., None]
    ks = kc if decay_to_end is None else kc * decay_to_end[..., None]

    outs = []
    for i in range(n):
        u = U[:, :, i] - W[:, :, i] @ S                                     # [B, H, C, V]
        outs.append(qs[:, :, i] @ S + Aqk[:, :, i] @ u)
        S_decayed = S if gamma is None else S * gamma[:, :, i, -1, None, None]
        S = S_decayed + ks[:, :, i].transpose(-1, -2) @ u
    o = torch.stack(outs, dim=2).reshape(B, H, n * C, V)[:, :, :T].transpose(1, 2)
    return o, S


# ---- layer ----------------------------------------------------------------------------------
class DeltaNetConfig(StrictModel):
    impl: Literal["chunk", "recurrent", "fla"] = Field("chunk", description="chunk (parallel), recurrent (reference loop), fla (GPU)")
    gated: bool = Field(False, description="Gated DeltaNet: a learned per-step decay exp(g_t) on the state")
    n_heads: int = Field(4, ge=1, description="H")
    expand_k: float = Field(1.0, gt=0.0, description="key width H*K = expand_k * d_model")
    expand_v: float = Field(1.0, gt=0.0, description="value width H*V = expand_v * d_model")
    chunk_size: int = Field(64, ge=1, description="C for impl chunk")
    use_short_conv: bool = Field(True, description="short causal depthwise convolutions on q, k, v")
    conv_size: int = Field(4, ge=1)
    conv_bias: bool = False
    use_output_gate: bool | None = Field(None, description="RMSNorm(o) * silu(g_proj x) (None: on for gated, off otherwise, as in fla)")
    allow_neg_eigval: bool = Field(False, description="beta in (0, 2) instead of (0, 1)")
    norm_eps: float = Field(1e-5, gt=0.0)


class GatedDeltaNetConfig(DeltaNetConfig):
    gated: bool = True


class GatedRMSNorm(nn.Module):
    """RMSNorm over the last axis times silu(gate); gate=None: plain RMSNorm (fla's o_norm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
        return y if gate is None else y * F.silu(gate)


def _fla_layer_class(gated: bool):
    try:
        from fla.layers import DeltaNet, GatedDeltaNet
    except Exception as err:  # fla needs triton and a GPU driver at import time
        raise ImportError(
            "deltanet impl 'fla' needs flash-linear-attention (fla.layers.DeltaNet / GatedDeltaNet), which could "
            f"not be imported here ({type(err).__name__}: {err}); it runs on a CUDA machine with fla installed. "
            "Use impl: chunk (or recurrent) on CPU.") from err
    return GatedDeltaNet if gated else DeltaNet


@register_mixer("deltanet", DeltaNetConfig)
class DeltaNetMixer(Mixer):
    """x [B, T, D] -> (y [B, T, D], state); see the module docstring."""

    def __init__(self, d_model: int, cfg: DeltaNetConfig):
        super().__init__()
        self.cfg = cfg
        self.d_model = d_model
        H = cfg.n_heads
        self.key_dim, self.value_dim = int(d_model * cfg.expand_k), int(d_model * cfg.expand_v)
        if self.key_dim % H or self.value_dim % H:
            raise ValueError(f"key width {self.key_dim} and value width {self.value_dim} must be divisible by "
                             f"n_heads {H}")
        self.head_k, self.head_v = self.key_dim // H, self.value_dim // H
        self.use_output_gate = cfg.gated if cfg.use_output_gate is None else cfg.use_output_gate
        if cfg.impl == "fla":
            cls = _fla_layer_class(cfg.gated)
            common = dict(hidden_size=d_model, num_heads=H, use_gate=self.use_output_gate,
                          use_short_conv=cfg.use_short_conv, conv_size=cfg.conv_size, conv_bias=cfg.conv_bias,
                          allow_neg_eigval=cfg.allow_neg_eigval, norm_eps=cfg.norm_eps, layer_idx=0)
            if cfg.gated:
                self.fla = cls(head_dim=self.head_k, expand_v=self.head_v / self.head_k, **common)
            else:
                self.fla = cls(expand_k=cfg.expand_k, expand_v=cfg.expand_v, **common)
            return
        self.q_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, self.value_dim, bias=False)
        self.b_proj = nn.Linear(d_model, H, bias=False)
        if cfg.gated:
            self.a_proj = nn.Linear(d_model, H, bias=False)
            # decay rates A in (0, 16) and step sizes dt in [1e-3, 1e-1], as Mamba-2 / fla initialise them
            self.A_log = nn.Parameter(torch.empty(H).uniform_(0, 16).log())
            dt = torch.exp(torch.rand(H) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
            self.A_log._no_weight_decay = True
            self.dt_bias._no_weight_decay = True
        if cfg.use_short_conv:
            self.q_conv1d, self.k_conv1d, self.v_conv1d = (
                nn.Conv1d(c, c, cfg.conv_size, groups=c, bias=cfg.conv_bias)
                for c in (self.key_dim, self.key_dim, self.value_dim))
        if self.use_output_gate:
            self.g_proj = nn.Linear(d_model, self.value_dim, bias=False)
        self.o_norm = GatedRMSNorm(self.head_v, cfg.norm_eps)
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False)

    # ---- state ---------------------------------------------------------------------------
    def state_size(self, seq_len: int) -> dict[str, int]:
        H, K, V = self.cfg.n_heads, self.head_k, self.head_v
        conv = (2 * self.key_dim + self.value_dim) * (self.cfg.conv_size - 1) if self.cfg.use_short_conv else 0
        return {"floats": H * K * V + conv, "matrix_floats": H * K * V}

    def _conv(self, conv: nn.Conv1d, x: torch.Tensor, cache: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal depthwise conv + SiLU over x [B, T, ch] after the cached last inputs [B, ch, size-1]."""
        B, T, ch = x.shape
        W = self.cfg.conv_size
        if cache is None:
            cache = x.new_zeros(B, ch, W - 1)
        full = torch.cat([cache, x.transpose(1, 2)], dim=2)                 # [B, ch, W-1+T]
        y = F.conv1d(full, conv.weight, conv.bias, groups=ch).transpose(1, 2)
        return F.silu(y), full[:, :, full.shape[2] - (W - 1):]

    # ---- interfaces ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict | None]:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected x [B, T, {self.d_model}], got {tuple(x.shape)}")
        cfg = self.cfg
        if cfg.impl == "fla":
            if state is not None:
                raise ValueError("deltanet impl 'fla' runs as a sequence layer only; it carries no state here")
            # fla 0.6's chunk kernels take only bf16 / fp16 inputs: run its layer under bf16 autocast
            # (weights stay float32), as fla is trained in practice
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
                y = self.fla(x)[0]
            return y.to(x.dtype), None
        B, T, _ = x.shape
        H = cfg.n_heads
        S0 = None if state is None else state["S"]
        caches = (None, None, None) if state is None or state["conv"] is None else state["conv"]
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if cfg.use_short_conv:
            (q, cq), (k, ck), (v, cv) = (self._conv(m, z, c) for m, z, c in
                                         zip((self.q_conv1d, self.k_conv1d, self.v_conv1d), (q, k, v), caches))
            conv_next = (cq, ck, cv)
        else:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
            conv_next = None
        q = F.normalize(q.view(B, T, H, self.head_k), dim=-1)
        k = F.normalize(k.view(B, T, H, self.head_k), dim=-1)
        v = v.view(B, T, H, self.head_v)
        beta = self.b_proj(x).sigmoid()
        if cfg.allow_neg_eigval:
            beta = beta * 2.0
        g = -self.A_log.exp() * F.softplus(self.a_proj(x) + self.dt_bias) if cfg.gated else None
        if cfg.impl == "chunk":
            o, S = delta_rule_chunk(q, k, v, beta, g, S0, chunk_size=cfg.chunk_size)
        else:
            o, S = delta_rule_recurrent(q, k, v, beta, g, S0)
        gate = self.g_proj(x).view(B, T, H, self.head_v) if self.use_output_gate else None
        y = self.o_proj(self.o_norm(o, gate).reshape(B, T, self.value_dim))
        return y, {"S": S, "conv": conv_next}

    def step(self, x: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict | None]:
        """One step: x [B, D] -> (y [B, D], state)."""
        y, state = self.forward(x.unsqueeze(1), state)
        return y.squeeze(1), state


@register_mixer("gated_deltanet", GatedDeltaNetConfig)
class GatedDeltaNetMixer(DeltaNetMixer):
    """Gated DeltaNet: ``deltanet`` with ``gated: true`` by default."""


def deltanet_param_count(d_model: int, n_heads: int = 4, expand_k: float = 1.0, expand_v: float = 1.0,
                         conv_size: int = 4, use_short_conv: bool = True, gated: bool = False,
                         use_output_gate: bool | None = None) -> int:
    """Parameters of one DeltaNet / Gated DeltaNet mixer (no conv bias), by hand."""
    D, H = d_model, n_heads
    Kd, Vd = int(D * expand_k), int(D * expand_v)
    gate = gated if use_output_gate is None else use_output_gate
    n = D * (2 * Kd + Vd) + D * H + Vd // H + Vd * D     # q, k, v, b projections, o_norm, o_proj
    n += (2 * Kd + Vd) * conv_size if use_short_conv else 0
    n += D * H + 2 * H if gated else 0                    # a_proj, A_log, dt_bias
    n += D * Vd if gate else 0                            # g_proj
    return n
