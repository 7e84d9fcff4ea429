"""The discretiser (SPEC.md part 8): a learned codebook that turns the continuous read-out of
the big state into discrete codes, where an action or decision can be taken.

Axis letters: ``B`` streams, ``T`` steps, ``D`` width of the read-out, ``C`` codebook size.

Two kinds, both from ``vector-quantize-pytorch``:

- ``fsq`` (finite scalar quantisation): project to ``len(levels)`` numbers, bound each and
  round it to one of ``levels[i]`` values; the code is the mixed-radix number of the rounded
  digits, so ``C = prod(levels)``. No codebook to collapse, no auxiliary loss.
- ``vq`` (vector quantisation): the nearest of ``codebook_size`` learned vectors (EMA
  updated), with a commitment loss pulling the input towards its code.

Both pass gradients straight through the rounding / nearest-code choice to the input.

    disc = Discretiser(64, DiscretiserConfig(kind="fsq", levels=[8, 5, 5]))
    q, codes = disc(x)             # x [B, T, 64] -> q [B, T, 64], codes [B, T] in [0, 200)
    disc.usage()                   # {"counts": [C], "perplexity", "dead_codes", "used_codes", ...}

``disc.codes`` holds the codes of the last call (detached), for inspection. Usage counts
accumulate over every call while ``disc.track_usage`` is on (the default); ``reset_usage()``
clears them.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from onebigstate.config import StrictModel


class DiscretiserConfig(StrictModel):
    """Which codebook and its size."""

    kind: Literal["fsq", "vq"] = Field("fsq", description="fsq: finite scalar quantisation; vq: nearest learned vector")
    levels: list[int] = Field(default_factory=lambda: [8, 5, 5, 5],
                              description="fsq: levels per code digit; codebook size is their product")
    codebook_size: int = Field(256, ge=2, description="vq: number of code vectors")
    code_dim: int | None = Field(None, ge=1, description="vq: width of the code vectors (default: the input width)")
    commitment_weight: float = Field(0.25, ge=0.0, description="vq: weight of the commitment loss")
    decay: float = Field(0.8, gt=0.0, lt=1.0, description="vq: EMA decay of the code vectors")

    @model_validator(mode="after")
    def _check(self) -> "DiscretiserConfig":
        if self.kind == "fsq":
            if not self.levels:
                raise ValueError("fsq needs at least one level")
            bad = [lv for lv in self.levels if lv < 2]
            if bad:
                raise ValueError(f"fsq levels must each be >= 2, got {self.levels}")
        return self

    @property
    def n_codes(self) -> int:
        return math.prod(self.levels) if self.kind == "fsq" else self.codebook_size


def usage_stats(counts: torch.Tensor) -> dict:
    """Code-usage statistics of per-code counts ``[C]``.

    ``perplexity`` = exp(entropy of the usage distribution): C when every code is used
    equally, 1 when one code takes everything. ``dead_codes`` = codes never used.

        >>> s = usage_stats(torch.tensor([2., 2., 0., 0.]))
        >>> round(s["perplexity"], 6), s["dead_codes"], s["used_codes"]
        (2.0, 2, 2)
    """
    counts = counts.detach().double().cpu()
    total = float(counts.sum())
    if total > 0:
        p = counts / total
        nz = p[p > 0]
        perplexity = float(torch.exp(-(nz * nz.log()).sum()))
    else:
        perplexity = 0.0
    used = int((counts > 0).sum())
    return {"counts": counts, "total": total, "n_codes": counts.numel(), "used_codes": used,
            "dead_codes": counts.numel() - used, "perplexity": perplexity}


class Discretiser(nn.Module):
    """``x [..., D] -> (quantised [..., D], codes [...] long)``, straight-through gradients."""

    def __init__(self, d_input: int, cfg: DiscretiserConfig | None = None):
        super().__init__()
        try:
            from vector_quantize_pytorch import FSQ, VectorQuantize
        except ImportError as err:   # the core installs without it: an optional extra
            raise ImportError(f"the discretiser needs vector-quantize-pytorch ({err}): "
                              "pip install 'onebigstate[discretiser]' (or [lab])") from err
        cfg = cfg or DiscretiserConfig()
        if d_input < 1:
            raise ValueError(f"d_input must be >= 1, got {d_input}")
        self.cfg, self.d_input = cfg, d_input
        if cfg.kind == "fsq":
            # The package's symmetric rounding is required for 2-level digits.
            self.quantiser = FSQ(levels=list(cfg.levels), dim=d_input, preserve_symmetry=2 in cfg.levels)
        else:
            # The EMA codebook learns without the optimizer; rotation-trick gradients (the
            # package's default) carry the input's gradient through the nearest-code choice.
            self.quantiser = VectorQuantize(dim=d_input, codebook_size=cfg.codebook_size, codebook_dim=cfg.code_dim,
                                            decay=cfg.decay, commitment_weight=cfg.commitment_weight)
        self.register_buffer("counts", torch.zeros(cfg.n_codes, dtype=torch.float64), persistent=False)
        self.track_usage = True
        self.codes: torch.Tensor | None = None
        self.aux_loss: torch.Tensor | None = None

    @property
    def n_codes(self) -> int:
        return self.cfg.n_codes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"Discretiser expects a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
        if x.dim() < 2 or x.shape[-1] != self.d_input:
            raise ValueError(f"Discretiser expects x of shape [..., {self.d_input}], got {tuple(x.shape)}")
        lead = x.shape[:-1]
        flat = x.reshape(1, -1, self.d_input)
        if self.cfg.kind == "fsq":
            q, codes = self.quantiser(flat)
            aux = x.new_zeros(())
        else:
            q, codes, aux = self.quantiser(flat)
            aux = aux.reshape(-1).sum()
        q, codes = q.reshape(*lead, self.d_input).to(x.dtype), codes.reshape(lead).long()
        self.codes, self.aux_loss = codes.detach(), aux
        if self.track_usage:
            self.counts += torch.bincount(codes.reshape(-1).detach().cpu(), minlength=self.n_codes).to(
                self.counts.device, self.counts.dtype)
        return q, codes

    def usage(self) -> dict:
        """Usage statistics of the codes seen since the last :meth:`reset_usage` (see :func:`usage_stats`)."""
        return usage_stats(self.counts)

    def reset_usage(self) -> None:
        self.counts.zero_()
