"""An LSTM as a registered mixer (``lstm``): ``torch.nn.LSTM`` with the (h, c) pair carried.

Axes: B batch, T steps, D model width, L stacked LSTM layers inside one mixer, R hidden width.

State size counted the Zoology way: h and c of every inner layer, ``2 * L * R`` floats per
stream, independent of the sequence length. With ``d_hidden`` unset, R = D and the mixer has
``L * (8 R^2 + 8 R)`` parameters (``nn.LSTM`` keeps two bias vectors per gate).
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from onebigstate.config import StrictModel
from onebigstate.nets.mixer import Mixer, register_mixer


class LSTMConfig(StrictModel):
    d_hidden: int | None = Field(None, ge=1, description="hidden width R (None: d_model); R != D adds an output projection")
    n_layers: int = Field(1, ge=1, description="LSTM layers stacked inside one mixer")


@register_mixer("lstm", LSTMConfig)
class LSTMMixer(Mixer):
    """x [B, T, D] -> y [B, T, D]; state = (h [L, B, R], c [L, B, R])."""

    def __init__(self, d_model: int, cfg: LSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.d_model = d_model
        self.d_hidden = cfg.d_hidden or d_model
        self.lstm = nn.LSTM(d_model, self.d_hidden, num_layers=cfg.n_layers, batch_first=True)
        self.proj = nn.Linear(self.d_hidden, d_model, bias=False) if self.d_hidden != d_model else nn.Identity()

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected x [B, T, {self.d_model}], got {tuple(x.shape)}")
        if state is not None:
            want = (self.cfg.n_layers, x.shape[0], self.d_hidden)
            if tuple(state[0].shape) != want or tuple(state[1].shape) != want:
                raise ValueError(f"expected state (h, c) each of shape {want}, got "
                                 f"{tuple(state[0].shape)} and {tuple(state[1].shape)}")
        y, (h, c) = self.lstm(x, state)
        return self.proj(y), (h, c)

    def step(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One step: x [B, D] -> (y [B, D], state)."""
        y, state = self.forward(x.unsqueeze(1), state)
        return y.squeeze(1), state

    def state_size(self, seq_len: int) -> dict[str, int]:
        return {"floats": 2 * self.cfg.n_layers * self.d_hidden}
