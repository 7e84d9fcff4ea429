"""Where the op meets the state stores: the one interface both sides import.

The scan (``scan.py`` and its backends) reads and writes ``S`` only through :class:`StateStore`'s
methods and :class:`StateBase` (the compiled backends' view of it); the stores (``model/state.py``,
``model/sparse_state.py``, ``distributed/sharded.py``) implement it and register themselves by
name (:func:`register_store`). Neither side imports the other, so the layering is one way:
``step`` <- ``interface`` <- backends <- ``scan`` <- stores and layer.

Also here: the scan's inputs and outputs (:class:`ScanInputs`, :class:`ScanOutputs`) and the
sampling of written positions that the Gaussian regulariser and every backend share.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from onebigstate.kernels.step import Carry, StepConfig, row_scale, spread


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


# ---- the hash behind S_0 of the sparse store (state_init: hash) ----------------------------------
# Stores and backends that generate S_0 share it: model/sparse_state.py (hash_normal), the triton
# kernels (kernels/triton_kernels.py, in uint32) and the compiled CPU scan (csrc, in C++).
MASK32 = 0xFFFFFFFF
MIX_MUL = 0x45D9F3B       # < 2^27, so (x < 2^32) * MIX_MUL < 2^59 never overflows int64


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixing function (xor-shift-multiply) on int64 tensors holding values < 2^32."""
    x = ((x >> 16) ^ x) * MIX_MUL & MASK32
    x = ((x >> 16) ^ x) * MIX_MUL & MASK32
    return (x >> 16) ^ x


def s0_seed_words(seed: int) -> tuple[int, int]:
    """The two 32-bit words that key S_0's hash for ``seed``."""
    s = torch.tensor([(2 * seed + 1) & MASK32, (2 * seed + 2) & MASK32], dtype=torch.long)
    a, b = mix32(mix32(s)).tolist()
    return a, b


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


def find_sorted(keys: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For positions [P] and sorted keys: (index of each in keys, clamped; whether it is there)."""
    if keys.numel() == 0:
        return torch.zeros_like(pos), torch.zeros_like(pos, dtype=torch.bool)
    idx = torch.searchsorted(keys, pos).clamp(max=keys.numel() - 1)
    return idx, keys[idx] == pos


class WriteSetGradient:
    """dL/dS at a fixed set of flat positions (the window's writes); adds elsewhere are dropped.

    positions [...] long (duplicates fine). ``add_(pos, vals)`` and ``values_at(pos)`` have the
    state store's meaning; ``values_at`` must only ask for positions of the set.
    """

    def __init__(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32):
        self.keys = torch.unique(positions.reshape(-1))
        self.vals = torch.zeros(self.keys.shape, dtype=dtype, device=positions.device)

    def add_(self, pos: torch.Tensor, vals: torch.Tensor) -> None:
        idx, found = find_sorted(self.keys, pos.reshape(-1))
        self.vals.index_add_(0, idx[found], vals.reshape(-1)[found].to(self.vals.dtype))

    def values_at(self, pos: torch.Tensor) -> torch.Tensor:
        idx, found = find_sorted(self.keys, pos.reshape(-1))
        if not bool(found.all()):
            raise RuntimeError("WriteSetGradient read outside its write set (a bug in the backward pass)")
        return self.vals[idx].view(pos.shape)


class StateStore(ABC):
    """The big state of ``batch`` independent streams, plus the recurrence's small carry."""

    n_nodes: int
    batch: int
    carry: Carry | None
    kind: ClassVar[str] = ""                 # the name it is registered under (``register_store``)
    # A store split over processes runs its own recurrence (the sharded store: the reference step
    # with collectives); the op then hands the window to ``own_scan`` instead of a backend.
    runs_own_scan: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def create(cls, batch: int, *, s0: torch.Tensor | None = None, n_nodes: int = 0, std: float = 0.0,
               seed: int = 0, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
               ) -> "StateStore":
        """A fresh state of ``batch`` streams (what :func:`~onebigstate.model.state.make_state` builds)."""

    def own_scan(self, carry: Carry, inputs: ScanInputs, params, cfg: StepConfig, n_reg_samples: int
                 ) -> ScanOutputs:
        """The window's recurrence, for a store with ``runs_own_scan``."""
        raise NotImplementedError(f"{type(self).__name__} runs the op's backends, not its own scan")

    @abstractmethod
    def add_(self, pos: torch.Tensor, vals: torch.Tensor) -> None:
        """In place: S.flat[pos] += vals (duplicates accumulate). No autograd."""

    @abstractmethod
    def values_at(self, pos: torch.Tensor) -> torch.Tensor:
        """S.flat[pos], any shape of ``pos``."""

    @abstractmethod
    def rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows of every stream: rows [B, R] long -> [B, R, N]."""

    def spread(self, rows: torch.Tensor, coeff: torch.Tensor, row_norm: bool
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Spreading activation from ``rows`` [B, R] long with coefficients [B, R]: the activation
        [B, N] and, with ``row_norm``, the rows' scales [B, R] (already applied). A backend may
        override it to avoid gathering the [B, R, N] rows."""
        row_values = self.rows(rows)                                  # [B, R, N]
        scale = None
        if row_norm:
            scale = row_scale(row_values)
            coeff = coeff * scale
        return spread(coeff, row_values), scale

    @abstractmethod
    def base_view(self) -> StateBase:
        """The state as the compiled backends read it (no copy): see :class:`StateBase`."""

    @abstractmethod
    def mark_written(self, pos: torch.Tensor, written: torch.Tensor) -> None:
        """Record which entries were changed (for the 'entries actually written' count)."""

    @abstractmethod
    def entries_written(self) -> torch.Tensor:
        """Number of distinct entries ever changed, per stream [B] long."""

    @abstractmethod
    def clone(self) -> "StateStore":
        ...

    @abstractmethod
    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the values only (no carry, no written-entry map), for the backward pass."""

    @classmethod
    @abstractmethod
    def from_snapshot(cls, tensors: dict[str, torch.Tensor]) -> "StateStore":
        """A store over a snapshot's tensors (used, and changed in place, by the backward pass)."""

    @abstractmethod
    def gradient_store(self, write_positions: torch.Tensor):
        """An all-zero accumulator for dL/dS in the reversible backward pass, with ``add_`` and
        ``values_at``; it is read only at ``write_positions`` (the window's writes, [B, T, W])."""

    @abstractmethod
    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Everything needed to restore this state exactly (for checkpoints)."""

    @property
    def dense_size(self) -> int:
        """State size the dense way: N^2 floats per stream."""
        return self.n_nodes * self.n_nodes

    @property
    def dtype(self) -> torch.dtype:
        return self.as_dense().dtype

    @abstractmethod
    def as_dense(self) -> torch.Tensor:
        """The whole state as a dense [B, N, N] tensor (small sizes and the reference path only)."""

    @abstractmethod
    def set_dense(self, dense: torch.Tensor) -> None:
        """Replace the whole state (used by the out-of-place reference path)."""


# State stores by name (``OBSConfig.state_backend``), filled by ``@register_store`` where each store
# is defined; ``model/__init__`` imports dense and sparse, ``onebigstate.distributed`` the sharded one.
STATE_STORES: dict[str, type[StateStore]] = {}
# Where each store that ships with the package is defined, for the error when it is not loaded yet.
STORE_MODULES = {"dense": "onebigstate.model.state", "sparse": "onebigstate.model.sparse_state",
                 "sharded": "onebigstate.distributed.sharded"}


def register_store(name: str):
    """Class decorator: ``make_state(name, ...)`` builds this store with ``cls.create(...)``."""
    def deco(cls):
        if STATE_STORES.get(name, cls) is not cls:
            raise ValueError(f"state store '{name}' registered twice")
        cls.kind = name
        STATE_STORES[name] = cls
        return cls
    return deco


def store_class(name: str) -> type[StateStore]:
    """The registered store called ``name``, or an error that says which module registers it."""
    if name not in STATE_STORES:
        where = STORE_MODULES.get(name)
        hint = f" (it is registered by importing {where})" if where else ""
        raise ValueError(f"unknown state backend '{name}'{hint}; registered: {sorted(STATE_STORES)}")
    return STATE_STORES[name]
