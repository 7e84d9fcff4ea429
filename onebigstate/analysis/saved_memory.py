"""Bytes saved for backward by a forward pass, counted with saved_tensors_hooks.

Counts each distinct storage once (a tensor saved twice, or a view of a saved tensor, is not
double-counted). Wall-clock free: the number is exact and repeatable.
"""
from __future__ import annotations

from typing import Callable

import torch


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Run ``fn`` (a forward pass) and return the bytes autograd saved for its backward."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())
