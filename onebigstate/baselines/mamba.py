"""Mamba as a registered mixer (``mamba``): the maintained pure-PyTorch ``mambapy`` package,
or Mamba-2 from flash-linear-attention on a GPU.

Axes: B batch, T steps, D model width, I = expand * D inner width (mambapy's ED),
N SSM state width (``d_state``), K short-convolution width (``d_conv``).

``impl: mambapy`` (default, runs anywhere). The parameters are one ``mambapy.mamba.MambaBlock``
(in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj), so checkpoints and counts are
mambapy's. mambapy's own ``MambaBlock.forward`` always starts from a zero state, so the
sequence path here runs the same computation with a carried state: the last K-1 conv inputs
are prepended to the new ones, and the SSM state h enters the first step
(``h_1 = dA_1 * h_0 + dB_1 x_1``) before mambapy's parallel scan (``mambapy.pscan``) or the
sequential loop. ``step`` is mambapy's own step mode (``MambaBlock.step``) on the same
state, so sequence and step interfaces can be checked against each other.
State: {"h": [B, I, N], "conv": [B, I, K-1]}; Zoology-way size ``I * N + I * (K - 1)``.

``impl: fla_mamba2`` asks for ``fla.layers.Mamba2`` (GPU with flash-linear-attention
installed); if it cannot be imported the constructor raises an ImportError saying so, there
is no fallback to the other implementation. It runs as a sequence layer only (no carried
state here: fla keeps Mamba-2's cache in a transformers-style cache object); giving it a
state raises.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from onebigstate.config import StrictModel
from onebigstate.nets.mixer import Mixer, register_mixer


class MambaMixerConfig(StrictModel):
    impl: Literal["mambapy", "fla_mamba2"] = Field("mambapy", description="mambapy (Mamba-1, CPU/GPU) or fla_mamba2 (GPU, fla installed)")
    d_state: int = Field(16, ge=1, description="N, the SSM state width per channel")
    expand: int = Field(2, ge=1, description="E, inner width I = E * d_model")
    d_conv: int = Field(4, ge=1, description="K, the short causal convolution width")
    dt_rank: int | None = Field(None, ge=1, description="rank of the dt projection (None: ceil(D / 16), mambapy's 'auto')")
    pscan: bool = Field(True, description="mambapy: parallel scan (True) or the sequential loop (False)")
    n_heads: int = Field(4, ge=1, description="fla_mamba2 only: heads; I must be divisible by it")
    chunk_size: int = Field(64, ge=1, description="fla_mamba2 only: SSD chunk length")


def _fla_mamba2_class():
    try:
        from fla.layers import Mamba2
    except Exception as err:  # fla needs triton and a GPU driver at import time
        raise ImportError(
            "mamba impl 'fla_mamba2' needs flash-linear-attention (fla.layers.Mamba2), which could not be "
            f"imported here ({type(err).__name__}: {err}); it runs on a CUDA machine with fla installed. "
            "Use impl: mambapy on CPU.") from err
    return Mamba2


@register_mixer("mamba", MambaMixerConfig)
class MambaMixer(Mixer):
    """x [B, T, D] -> (y [B, T, D], state); see the module docstring for the two implementations."""

    def __init__(self, d_model: int, cfg: MambaMixerConfig):
        super().__init__()
        self.cfg = cfg
        self.d_model = d_model
        self.d_inner = cfg.expand * d_model
        if cfg.impl == "mambapy":
            from mambapy.mamba import MambaBlock, MambaConfig
            self.mcfg = MambaConfig(d_model=d_model, n_layers=1, d_state=cfg.d_state, expand_factor=cfg.expand,
                                    d_conv=cfg.d_conv, dt_rank=cfg.dt_rank or "auto", pscan=cfg.pscan)
            self.block = MambaBlock(self.mcfg)
        else:
            if self.d_inner % cfg.n_heads:
                raise ValueError(f"fla_mamba2: inner width {self.d_inner} not divisible by n_heads {cfg.n_heads}")
            Mamba2 = _fla_mamba2_class()
            self.block = Mamba2(num_heads=cfg.n_heads, head_dim=self.d_inner // cfg.n_heads, hidden_size=d_model,
                                state_size=cfg.d_state, expand=cfg.expand, conv_kernel=cfg.d_conv,
                                chunk_size=cfg.chunk_size, layer_idx=0)

    # ---- state ---------------------------------------------------------------------------
    def init_state(self, batch: int, device=None, dtype=None) -> dict:
        dtype = dtype or self.block.in_proj.weight.dtype
        I, N, K = self.d_inner, self.cfg.d_state, self.cfg.d_conv
        return {"h": torch.zeros(batch, I, N, device=device, dtype=dtype),
                "conv": torch.zeros(batch, I, K - 1, device=device, dtype=dtype)}

    def state_size(self, seq_len: int) -> dict[str, int]:
        I, N, K = self.d_inner, self.cfg.d_state, self.cfg.d_conv
        if self.cfg.impl == "mambapy":
            return {"floats": I * N + I * (K - 1)}
        conv_dim = I + 2 * N  # fla Mamba2 with one group convolves x, B and C
        return {"floats": I * N + conv_dim * (K - 1)}

    # ---- interfaces ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict | None]:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected x [B, T, {self.d_model}], got {tuple(x.shape)}")
        if self.cfg.impl == "fla_mamba2":
            if state is not None:
                raise ValueError("mamba impl 'fla_mamba2' runs as a sequence layer only; it carries no state here")
            out = self.block(x)
            return (out[0] if isinstance(out, tuple) else out), None
        return self._forward_mambapy(x, state)

    def _forward_mambapy(self, x: torch.Tensor, state: dict | None) -> tuple[torch.Tensor, dict]:
        blk, c = self.block, self.mcfg
        B, T, _ = x.shape
        I, N, K = self.d_inner, c.d_state, c.d_conv
        if state is None:
            state = self.init_state(B, x.device, x.dtype)
        elif tuple(state["h"].shape) != (B, I, N) or tuple(state["conv"].shape) != (B, I, K - 1):
            raise ValueError(f"expected state h [{B}, {I}, {N}] and conv [{B}, {I}, {K - 1}], got "
                             f"{tuple(state['h'].shape)} and {tuple(state['conv'].shape)}")
        xi, z = blk.in_proj(x).chunk(2, dim=-1)                       # [B, T, I] each
        # causal depthwise conv over [last K-1 inputs, new inputs], no padding: T outputs
        full = torch.cat([state["conv"], xi.transpose(1, 2)], dim=2)  # [B, I, K-1+T]
        xc = F.conv1d(full, blk.conv1d.weight, blk.conv1d.bias, groups=I).transpose(1, 2)
        conv_next = full[:, :, full.shape[2] - (K - 1):]
        xc = F.silu(xc)                                               # [B, T, I]

        A = -torch.exp(blk.A_log.float())                             # [I, N]
        delta, Bm, Cm = torch.split(blk.x_proj(xc), [c.dt_rank, N, N], dim=-1)
        delta, Bm, Cm = blk._apply_layernorms(delta, Bm, Cm)
        delta = F.softplus(blk.dt_proj(delta))                        # [B, T, I]
        dA = torch.exp(delta.unsqueeze(-1) * A)                       # [B, T, I, N]
        dBx = delta.unsqueeze(-1) * Bm.unsqueeze(2) * xc.unsqueeze(-1)  # [B, T, I, N]
        # the carried state enters the first step: h_1 = dA_1 h_0 + dB_1 x_1
        dBx = torch.cat([dBx[:, :1] + dA[:, :1] * state["h"].unsqueeze(1), dBx[:, 1:]], dim=1)
        if c.pscan and T > 1:
            from mambapy.pscan import pscan
            hs = pscan(dA, dBx)                                       # [B, T, I, N]
        else:
            h, hl = dBx[:, 0], [dBx[:, 0]]
            for t in range(1, T):
                h = dA[:, t] * h + dBx[:, t]
                hl.append(h)
            hs = torch.stack(hl, dim=1)
        y = (hs @ Cm.unsqueeze(-1)).squeeze(-1) + blk.D.float() * xc  # [B, T, I]
        out = blk.out_proj(y * F.silu(z))
        return out, {"h": hs[:, -1], "conv": conv_next}

    def step(self, x: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        """One step through mambapy's own step mode: x [B, D] -> (y [B, D], state)."""
        if self.cfg.impl != "mambapy":
            raise ValueError("step is available for impl 'mambapy' only")
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        y, (h, conv) = self.block.step(x, (state["h"], state["conv"]))
        return y, {"h": h, "conv": conv}


def mambapy_param_count(d_model: int, d_state: int = 16, expand: int = 2, d_conv: int = 4,
                        dt_rank: int | None = None) -> int:
    """Parameters of one mambapy MambaBlock (bias=False, conv_bias=True), by hand."""
    D, I, N, K = d_model, expand * d_model, d_state, d_conv
    R = dt_rank or math.ceil(D / 16)
    return (D * 2 * I          # in_proj
            + I * K + I        # conv1d (depthwise) + bias
            + I * (R + 2 * N)  # x_proj
            + R * I + I        # dt_proj + bias
            + I * N + I        # A_log, D
            + I * D)           # out_proj
