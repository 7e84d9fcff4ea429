"""A generic model around any mixer: embedding or input projection, blocks, norm, head.

Block (pre-norm, as in Zoology): x = x + mixer(norm(x)); x = x + mlp(norm(x)) if mlp_ratio > 0.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from onebigstate.config import StrictModel
from onebigstate.model.discretiser import Discretiser, DiscretiserConfig
from onebigstate.nets.mixer import build_mixer, mixer_config


class ModelConfig(StrictModel):
    name: str = Field("obs", description="registered mixer: obs, transformer, lstm, s4d, mamba, deltanet, hopfield, titans")
    d_model: int = Field(64, ge=1)
    n_layers: int = Field(1, ge=1)
    mlp_ratio: float = Field(0.0, ge=0.0, description="MLP after each mixer (0: none)")
    mixer: dict[str, Any] = Field(default_factory=dict, description="the mixer's own config keys")
    tie_embeddings: bool = Field(True, description="token models: the output head reuses the input embedding")
    discretiser: DiscretiserConfig | None = Field(None, description="quantise the final hidden vector into "
                                                                     "discrete codes before the head (FSQ or VQ)")

    def check(self) -> None:
        mixer_config(self.name, self.mixer)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class SeqModel(nn.Module):
    """tokens [B, T] long (vocab_size set) or features [B, T, d_input] -> outputs [B, T, n_out]."""

    def __init__(self, cfg: ModelConfig, n_out: int, vocab_size: int | None = None, d_input: int | None = None,
                 encoder: nn.Module | None = None):
        super().__init__()
        if sum(a is not None for a in (vocab_size, d_input, encoder)) != 1:
            raise ValueError("give exactly one of vocab_size (token inputs), d_input (feature inputs) "
                             "or encoder (a module mapping the raw input to [B, T, d_model])")
        self.cfg = cfg
        self.vocab_size = vocab_size
        d = cfg.d_model
        if encoder is not None:
            self.embed = encoder
        else:
            self.embed = nn.Embedding(vocab_size, d) if vocab_size is not None else nn.Linear(d_input, d)
        self.mixers = nn.ModuleList(build_mixer(cfg.name, d, cfg.mixer) for _ in range(cfg.n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.n_layers))
        hidden = int(cfg.mlp_ratio * d)
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
            if hidden > 0 else nn.Identity() for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(d)
        # The discretiser turns the read-out into codes; the head then decides from the code.
        self.discretiser = Discretiser(d, cfg.discretiser) if cfg.discretiser is not None else None
        self.head = nn.Linear(d, n_out, bias=False)
        if vocab_size is not None:
            # small embeddings (as in GPT-2), so tied output logits start near uniform
            nn.init.normal_(self.embed.weight, std=0.02)
            if cfg.tie_embeddings and n_out == vocab_size:
                self.head.weight = self.embed.weight

    def forward(self, x: torch.Tensor, states: list | None = None,
                continuous: torch.Tensor | None = None, *, in_place: bool = False) -> tuple[torch.Tensor, list]:
        """x -> (outputs [B, T, n_out], new states).

        ``continuous`` [B, T] bool marks continuous-modality steps; it reaches the mixers that
        use it (OBS chains consecutive circuits of continuous input) and no others.
        ``states`` are left unchanged unless ``in_place=True``, which lets mixers that can
        (OBS) advance the states handed in rather than copy them (lifelong windows).
        """
        h, new_states = self.hidden(x, states, continuous, in_place=in_place)
        return self.head(h), new_states

    def hidden(self, x: torch.Tensor, states: list | None = None,
               continuous: torch.Tensor | None = None, *, in_place: bool = False) -> tuple[torch.Tensor, list]:
        """x -> (normalised hidden [B, T, d_model], states); ``self.head(h[mask])`` gives outputs.

        Tasks that score only a few positions (MQAR) apply the head there alone, which saves
        most of the work when the output vocabulary is large.
        """
        if self.vocab_size is not None:
            if x.dtype != torch.long or x.dim() != 2:
                raise ValueError(f"expected tokens int64 [B, T], got dtype {x.dtype} shape {tuple(x.shape)}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
                raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got range "
                                 f"[{int(x.min())}, {int(x.max())}]")
        elif isinstance(self.embed, nn.Linear) and x.dim() != 3:
            raise ValueError(f"expected features [B, T, d_input], got shape {tuple(x.shape)}")
        if states is not None and len(states) != len(self.mixers):
            raise ValueError(f"expected {len(self.mixers)} states (one per layer), got {len(states)}")
        h = self.embed(x)
        new_states = []
        for i, (norm, mixer, mlp) in enumerate(zip(self.norms, self.mixers, self.mlps)):
            state = None if states is None else states[i]
            if getattr(mixer, "uses_continuous_flags", False):
                y, st = mixer(norm(h), state, continuous=continuous, in_place=in_place)
            else:
                y, st = mixer(norm(h), state)
            h = h + y
            if not isinstance(mlp, nn.Identity):
                h = h + mlp(h)
            new_states.append(st)
        h = self.final_norm(h)
        if self.discretiser is not None:
            h, _ = self.discretiser(h)
        return h, new_states

    def aux_loss(self) -> torch.Tensor:
        """Auxiliary losses the mixers computed in the last forward (OBS: k cost, Gaussian reg, load balance)."""
        total = self.head.weight.new_zeros(())
        for m in self.mixers:
            stats = getattr(m, "last_stats", None)
            if stats is not None:
                total = total + stats.aux_loss
        if self.discretiser is not None and self.discretiser.aux_loss is not None:
            total = total + self.discretiser.aux_loss
        return total

    def state_size(self, seq_len: int) -> dict[str, int]:
        sizes = [m.state_size(seq_len) for m in self.mixers]
        return {k: sum(s.get(k, 0) for s in sizes) for k in sizes[0]}


def build_model(cfg: ModelConfig, n_out: int, vocab_size: int | None = None, d_input: int | None = None,
                encoder: nn.Module | None = None) -> SeqModel:
    return SeqModel(cfg, n_out, vocab_size=vocab_size, d_input=d_input, encoder=encoder)
