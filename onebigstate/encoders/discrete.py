"""Token and action encoders: embeddings of discrete ids (or a linear map of action vectors)."""
from __future__ import annotations

import torch
from torch import nn


def _ids(x: torch.Tensor, n: int, what: str) -> torch.Tensor:
    """Integer ids from ``[...]`` ids, or from ``[..., F]`` features holding the id in ``[..., 0]``."""
    ids = x if not x.is_floating_point() else x[..., 0].round().long()
    if ids.numel() and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"{what} ids must be in [0, {n}), got min {ids.min().item()} max {ids.max().item()}")
    return ids


class TokenEncoder(nn.Module):
    """Token ids ``[...]`` int (or float features ``[..., F]`` with the id in ``[..., 0]``) -> ``[..., D]``."""

    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(_ids(x, self.vocab_size, "token"))


class ActionEncoder(nn.Module):
    """Discrete actions (``n_actions``: ids as for :class:`TokenEncoder`) or continuous
    action vectors (``action_dim``: ``[..., action_dim]`` through a linear map) -> ``[..., D]``."""

    def __init__(self, d_model: int, n_actions: int | None = None, action_dim: int | None = None):
        super().__init__()
        if (n_actions is None) == (action_dim is None):
            raise ValueError(f"give exactly one of n_actions ({n_actions}) and action_dim ({action_dim})")
        self.n_actions, self.action_dim = n_actions, action_dim
        self.embed = nn.Embedding(n_actions, d_model) if n_actions is not None else None
        self.proj = nn.Linear(action_dim, d_model) if action_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            return self.embed(_ids(x, self.n_actions, "action"))
        if x.shape[-1] < self.action_dim:
            raise ValueError(f"ActionEncoder expects [..., >= {self.action_dim}], got {tuple(x.shape)}")
        return self.proj(x[..., : self.action_dim])
