"""The OBS scan: run the recurrence over a window of T steps, with a backend chosen by name.

    out = obs_scan(store, inputs, params, cfg, backend="reversible")

Backends (same signature, same results up to floating-point rounding):

- ``reference``: a plain step-by-step loop, out-of-place updates of the dense state, plain
  autograd. The specification; O(N^2) work per step, for small sizes and tests.
- ``reversible``: the training path. Writes go in place; the backward pass walks the window
  in reverse, rebuilding each earlier state by subtracting the logged deltas, so memory saved
  for backward is one copy of the state plus O(T (k^2 + m k)) logged numbers, not T x N^2.

Gradients flow within one call. The state and carry handed in are treated as constants
(truncated backpropagation at call boundaries, as in lifelong training over windows).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from onebigstate.kernels.step import StepConfig, StepParams


@dataclass
class ScanInputs:
    """Per-step inputs computed in parallel from the features (shapes [B, T, ...])."""

    circuit_idx: torch.Tensor  # [B, T, K] long, top-K nodes by address score, descending
    scores: torch.Tensor       # [B, T, K]  their address scores
    features: torch.Tensor     # [B, T, H]  write-module input projection of the features
    continuous: torch.Tensor   # [B, T]     1.0 where the input is continuous (chains circuits)

    def check(self, cfg: StepConfig) -> None:
        B, T, K = self.circuit_idx.shape
        if K != cfg.k_max:
            raise ValueError(f"circuit_idx must be [B, T, k_max={cfg.k_max}], got {tuple(self.circuit_idx.shape)}")
        if self.circuit_idx.dtype != torch.long:
            raise ValueError(f"circuit_idx must be int64, got {self.circuit_idx.dtype}")
        if self.scores.shape != (B, T, K):
            raise ValueError(f"scores must be {(B, T, K)}, got {tuple(self.scores.shape)}")
        if self.features.shape[:2] != (B, T):
            raise ValueError(f"features must be [B={B}, T={T}, H], got {tuple(self.features.shape)}")
        if self.continuous.shape != (B, T):
            raise ValueError(f"continuous must be {(B, T)}, got {tuple(self.continuous.shape)}")


@dataclass
class ScanOutputs:
    read: torch.Tensor        # [B, T, Dv] read vector r_t
    k_soft: torch.Tensor      # [B, T]     continuous node count (differentiable)
    gates: torch.Tensor       # [B, T, 3]  signed gates (g_in, g_as, g_ch)
    reg_values: torch.Tensor  # [B, P]     final-state values at sampled written entries
    k_hard: torch.Tensor      # [B, T] long  node count used
    active_idx: torch.Tensor  # [B, T, M] long  A_t
    active_w: torch.Tensor    # [B, T, M]  w_t (detached, for inspection)


def sample_positions(pos_log: torch.Tensor, n_samples: int) -> torch.Tensor:
    """A deterministic, evenly strided subset of the window's written positions.

    pos_log [B, T, W] -> [B, P] with P = min(n_samples, T * W). Used by the Gaussian
    regulariser, so that it looks at entries the window touched and never at all N^2.
    """
    B = pos_log.shape[0]
    flat = pos_log.reshape(B, -1)
    n = min(n_samples, flat.shape[1])
    if n <= 0:
        return flat.new_zeros((B, 0))
    pick = torch.linspace(0, flat.shape[1] - 1, n, device=flat.device).round().long()
    return flat[:, pick]


def obs_scan(store, inputs: ScanInputs, params: StepParams, cfg: StepConfig, *,
             backend: str = "reversible", n_reg_samples: int = 0) -> ScanOutputs:
    """Run the recurrence over the window; updates ``store`` (state and carry) in place."""
    inputs.check(cfg)
    if inputs.circuit_idx.shape[1] == 0:
        raise ValueError("obs_scan needs at least one step (T >= 1)")
    if backend == "reference":
        from onebigstate.kernels.reference import scan_reference
        return scan_reference(store, inputs, params, cfg, n_reg_samples)
    if backend == "reversible":
        from onebigstate.kernels.reversible import scan_reversible
        return scan_reversible(store, inputs, params, cfg, n_reg_samples)
    raise ValueError(f"unknown scan backend '{backend}'; expected 'reference' or 'reversible'")
