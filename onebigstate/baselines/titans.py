"""Titans' neural memory as a registered mixer (``titans``): ``titans_pytorch.NeuralMemory``.

Axes: B batch, T steps, D model width, H memory heads, E head width (``dim_head``),
c store chunk (``chunk_size``).

The memory is a small MLP per head and stream (depth ``mem_depth``, hidden width
``mem_expansion * E``) whose weights are trained at test time by gradient steps on
||M(k_t) - v_t||^2 with momentum and a learned forgetting rate; reads query it with q_t.
Steps are stored in chunks of c: a step reads the memory as it was after the last complete
chunk before it.

Carried state: titans' own ``NeuralMemState`` (the memory weights, their momentum, the
steps of an incomplete chunk, the step count). titans-pytorch gives one-pass values when
a stream is fed in pieces only if every piece but the last starts at a chunk boundary, or
the pieces are single steps (a piece that starts mid-chunk with more than one step reads
the wrong chunk's weights, or fails on a shape mismatch). So ``forward`` feeds the first
steps of a piece up to the next chunk boundary one at a time and the rest in one call; then
any split equals one pass (tested).

State size counted the Zoology way, per stream: the memory MLP weights of all heads, their
momentum (same size), and up to c - 1 pending steps of width D. ``memory_weight_floats``
reports the weights alone. Note on parameters: besides the learned initial memory weights
(``memory_model_parameters``, per head), NeuralMemory registers the template MLP it calls
functionally (``memory_model.*``); those values are always overridden, get no gradient, and
are still counted by ``count_params``.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from onebigstate.config import StrictModel
from onebigstate.nets.mixer import Mixer, register_mixer


class TitansConfig(StrictModel):
    chunk_size: int = Field(1, ge=1, description="c: steps per memory update (1: update every step)")
    heads: int = Field(4, ge=1, description="H memory heads")
    dim_head: int | None = Field(None, ge=1, description="E (None: d_model / heads); heads=1 needs E = d_model")
    mem_depth: int = Field(2, ge=1, description="layers of the memory MLP")
    mem_expansion: float = Field(4.0, gt=0.0, description="hidden width of the memory MLP / E")
    momentum: bool = Field(True, description="momentum on the test-time gradient steps")


@register_mixer("titans", TitansConfig)
class TitansMixer(Mixer):
    """x [B, T, D] -> (y [B, T, D], state: titans_pytorch NeuralMemState)."""

    def __init__(self, d_model: int, cfg: TitansConfig):
        super().__init__()
        from titans_pytorch import NeuralMemory
        if cfg.dim_head is None and d_model % cfg.heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({cfg.heads}) when dim_head is unset")
        self.dim_head = cfg.dim_head or d_model // cfg.heads
        if cfg.heads == 1 and self.dim_head != d_model:
            raise ValueError(f"titans with heads=1 needs dim_head = d_model ({d_model}), got {self.dim_head}")
        self.cfg = cfg
        self.d_model = d_model
        self.memory = NeuralMemory(dim=d_model, chunk_size=cfg.chunk_size, heads=cfg.heads, dim_head=self.dim_head,
                                   momentum=cfg.momentum,
                                   default_model_kwargs=dict(depth=cfg.mem_depth, expansion_factor=cfg.mem_expansion))
        # titans-pytorch 0.5 makes the per-head initial memory weights with einops.repeat, i.e.
        # expanded views whose heads share storage; in-place optimizer steps (Adam) then fail with
        # "more than one element of the written-to tensor refers to a single memory location".
        # Give every head its own copy (same values), as per_head_learned_parameters intends.
        params = self.memory.memory_model_parameters
        for i, p in enumerate(params):
            params[i] = nn.Parameter(p.detach().clone())

    def forward(self, x: torch.Tensor, state=None) -> tuple[torch.Tensor, object]:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected x [B, T, {self.d_model}], got {tuple(x.shape)}")
        c = self.cfg.chunk_size
        pos = 0 if state is None else self._position(state)
        # steps up to the next chunk boundary one at a time (see the module docstring)
        n_single = min((c - pos % c) % c, x.shape[1])
        outs = []
        for t in range(n_single):
            y, state = self.memory(x[:, t:t + 1], state=state)
            outs.append(y)
        if n_single < x.shape[1]:
            y, state = self.memory(x[:, n_single:], state=state)
            outs.append(y)
        return torch.cat(outs, dim=1), state

    @staticmethod
    def _position(state) -> int:
        """Steps seen so far: the stored ones plus those waiting in an incomplete chunk."""
        pending = state.cache_store_segment
        return int(state.seq_index) + (0 if pending is None else pending.shape[-2])

    def memory_weight_floats(self) -> int:
        """Floats of the memory MLP weights per stream (all heads)."""
        return sum(int(torch.Size(s).numel()) for s in self.memory.init_weight_shape)

    def state_size(self, seq_len: int) -> dict[str, int]:
        w = self.memory_weight_floats()
        momentum = w if self.cfg.momentum else 0
        return {"floats": w + momentum + (self.cfg.chunk_size - 1) * self.d_model, "memory_weight_floats": w}
