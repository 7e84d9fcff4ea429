"""Shared test utilities."""
from __future__ import annotations

import torch


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(max |b|, tiny): the named relative-error measure of these tests."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
