"""The write module (the proposal's 'dedicated module').

Input: the step's features and the summary of the most active nodes. Output: how many nodes
to activate (k_t), and signed gates that scale the changes of the pairs inside the new circuit,
from the active nodes to it, and from the previous circuit to it (continuous inputs). The math
of one step lives in :func:`onebigstate.kernels.step.plan_writes`; this module owns its weights.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from onebigstate.kernels.step import n_write_outputs


class WriteModule(nn.Module):
    def __init__(self, d_model: int, d_value: int, d_write: int, gate_init: float, reverse_assoc: bool = False):
        super().__init__()
        # features -> hidden, applied to all T steps at once
        self.feature_proj = nn.Linear(d_model, d_write)
        # active-node summary -> hidden, applied step by step inside the recurrence
        self.w_summary = nn.Parameter(torch.randn(d_write, d_value) / math.sqrt(d_value))
        n_out = n_write_outputs(reverse_assoc)
        self.w_out = nn.Parameter(torch.randn(n_out, d_write) * 0.02)
        gate = math.atanh(gate_init)
        # k logit 0 starts k_t in the middle of [k_min, k_max]; gates start at gate_init.
        self.b_out = nn.Parameter(torch.tensor([0.0] + [gate] * (n_out - 1)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] -> write-module input projection [B, T, H]."""
        return self.feature_proj(x)
