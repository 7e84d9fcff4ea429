"""The OBS scan: run the recurrence over a window of T steps, with a backend chosen by name.

    out = obs_scan(state, carry, inputs, params, cfg, backend="auto")
    out.read, out.k_soft, ...          # per-step results [B, T, ...]
    out.state, out.carry               # the final state and carry

Backends (one signature, the same results up to floating-point rounding):

- ``reference``: a plain step-by-step loop, out-of-place updates of the dense state, plain
  autograd. The specification; O(N^2) work per step, for small sizes and tests.
- ``reversible``: the Python training path. Writes go in place; the backward pass walks the
  window in reverse, rebuilding each earlier state by subtracting the logged deltas, so memory
  saved for backward is one copy of the state plus O(T (k^2 + m k)) logged numbers, not T x N^2.
- ``cpu``: the same recurrence compiled (C++, ``kernels/cpu.py``): the whole window's loop,
  forward and backward, parallel over streams. CPU tensors only.
- ``auto`` (the default): ``cpu`` on CPU tensors when it loads, else ``reversible``
  (:func:`onebigstate.kernels.backends.resolve_backend` says once why).

A column-sharded state (``onebigstate.distributed.sharded.ColumnShardedState``, S split over the
processes of a ``torch.distributed`` group) runs in ``scan_sharded`` for ``auto`` and ``reference``;
the other backends and the chunked mode refuse it.

Gradients flow within one call. The state and carry handed in are treated as constants
(truncated backpropagation at call boundaries, as in lifelong training over windows).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from onebigstate.kernels.step import Carry, StepConfig, StepParams


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
    gates: torch.Tensor       # [B, T, 3 or 4]  signed gates (g_in, g_as, g_ch[, g_rev])
    reg_values: torch.Tensor  # [B, P]     final-state values at sampled written entries
    k_hard: torch.Tensor      # [B, T] long  node count used
    active_idx: torch.Tensor  # [B, T, M] long  A_t
    active_w: torch.Tensor    # [B, T, M]  w_t (detached, for inspection)
    state: object = None      # the final state (a StateStore; its .carry is the final carry too)
    carry: Carry | None = None  # the final carry (A_T, w_T, I_T, alpha_T), detached
    chunk_lengths: list[int] | None = None  # chunked mode: the length of every chunk
    chunk_sweeps: list[int] | None = None   # chunked mode: the sweeps every chunk took


@dataclass
class StateBase:
    """The state at a window's start as a compiled backend reads it (``StateStore.base_view``).

    Either ``dense`` [B, N, N], or the sparse store's parts: S_0 as a shared [N, N] table
    (``s0_table``) or, without one, hashed from ``(s0_std, s0_seed)`` (S_0 = 0 when the std is
    0), plus the stored changes as sorted runs of (int64 flat positions, values)."""

    dense: torch.Tensor | None = None
    s0_table: torch.Tensor | None = None
    s0_row_sq: torch.Tensor | None = None     # the table's squared row norms [N]
    s0_std: float = 0.0
    s0_seed: int = 0
    runs: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()


def sample_indices(n_total: int, n_samples: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A deterministic, evenly strided subset of ``range(n_total)``: [min(n_samples, n_total)] long."""
    n = min(n_samples, n_total)
    if n <= 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.linspace(0, n_total - 1, n, device=device).round().long()


def sample_positions(pos_log: torch.Tensor, n_samples: int) -> torch.Tensor:
    """The written positions at :func:`sample_indices` of the window's write log.

    pos_log [B, T, W] -> [B, P] with P = min(n_samples, T * W). Used by the Gaussian
    regulariser, so that it looks at entries the window touched and never at all N^2.
    """
    flat = pos_log.reshape(pos_log.shape[0], -1)
    return flat[:, sample_indices(flat.shape[1], n_samples, flat.device)]


def obs_scan(state, carry: Carry | None, inputs: ScanInputs, params: StepParams, cfg: StepConfig, *,
             backend: str = "auto", in_place: bool = False, n_reg_samples: int = 0, chunks=None) -> ScanOutputs:
    """Run the recurrence over a window of T >= 1 steps.

    state: a :class:`~onebigstate.model.state.StateStore` (B streams of N x N). It is *not*
    changed unless ``in_place=True`` (lifelong windows, where copying S each window would cost
    B N^2): then it is updated and returned as ``out.state``; otherwise ``out.state`` is a new
    store. carry: the small state handed from the previous step (None: every stream starts
    with an empty active set). inputs: what was computed in parallel over time; params: the
    weights used inside the recurrence; cfg: sizes and switches. ``n_reg_samples`` > 0 also
    returns the final state at that many of the window's written entries (the Gaussian
    regulariser's sample). ``chunks``, a :class:`~onebigstate.kernels.chunked.ChunkSpec`, runs
    the chunked mode (``kernels/chunked.py``): ``reference`` by its specification, ``auto`` and
    ``reversible`` by the chunk-parallel path; the compiled backends run the sequential mode only
    and raise. Nothing else is changed: ``carry``, ``inputs`` and ``params`` are read
    only. ``out.state.carry`` is set to the final carry as well (stores keep it for checkpoints).
    """
    from onebigstate.kernels.backends import resolve_backend, run_backend

    inputs.check(cfg)
    B, T, _ = inputs.circuit_idx.shape
    if T == 0:
        raise ValueError("obs_scan needs at least one step (T >= 1)")
    if B == 0:
        raise ValueError("obs_scan needs at least one stream (B >= 1)")
    if state.batch != B or state.n_nodes != cfg.n_nodes:
        raise ValueError(f"state holds {state.batch} streams of N={state.n_nodes} nodes, but the inputs have "
                         f"{B} streams and the config N={cfg.n_nodes}")
    sharded = is_sharded_state(state)
    if sharded:
        _check_sharded_backend(backend, chunks)
    name = "sharded" if sharded else resolve_backend(backend, inputs.scores.device)
    if not in_place:
        state = state.clone()
    if carry is None:
        carry = Carry.empty(B, cfg, inputs.scores.dtype, inputs.scores.device)
    if sharded:
        from onebigstate.distributed.sharded import scan_sharded
        out = scan_sharded(state, carry.detach(), inputs, params, cfg, n_reg_samples)
    elif chunks is not None:
        out = _run_chunked(backend, name, state, carry.detach(), inputs, params, cfg, n_reg_samples, chunks)
    else:
        out = run_backend(name, state, carry.detach(), inputs, params, cfg, n_reg_samples)
    out.carry = out.carry.detach()
    out.state.carry = out.carry
    return out


def is_sharded_state(state) -> bool:
    """Whether ``state`` is split over processes (imported only when distributed is loaded, so
    that a plain run never imports the sharded module)."""
    mod = sys.modules.get("onebigstate.distributed.sharded")
    return mod is not None and isinstance(state, mod.ColumnShardedState)


def _check_sharded_backend(backend: str, chunks) -> None:
    """A column-sharded state runs in ``scan_sharded`` (the reference recurrence with collectives):
    backends ``auto`` and ``reference``, sequential mode only."""
    from onebigstate.kernels.backends import BACKENDS
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend '{backend}'; expected one of {list(BACKENDS)}")
    if backend not in ("auto", "reference"):
        raise ValueError(f"scan backend '{backend}' cannot run a column-sharded state (ColumnShardedState): "
                         f"use backend 'auto' or 'reference', which run the sharded scan")
    if chunks is not None:
        raise ValueError("scan_mode 'chunked' is not supported with a column-sharded state; use the "
                         "sequential mode")


def _run_chunked(asked: str, name: str, state, carry, inputs, params, cfg, n_reg_samples, spec) -> ScanOutputs:
    from onebigstate.kernels.chunked import scan_chunked, scan_chunked_reference

    if name == "reference":
        return scan_chunked_reference(state, carry, inputs, params, cfg, n_reg_samples, spec)
    if asked in ("auto", "reversible"):
        return scan_chunked(state, carry, inputs, params, cfg, n_reg_samples, spec)
    raise ValueError(f"scan_mode 'chunked' runs on backend 'auto' or 'reversible' (the chunk-parallel PyTorch "
                     f"path) or 'reference' (its specification); backend '{asked}' runs the sequential mode only")
