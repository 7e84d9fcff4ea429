"""Storage of the one big state ``S`` (one N x N matrix per stream) behind a small interface.

The recurrence touches ``S`` only through the methods of :class:`StateStore`: add at flat
positions, read values at positions, read whole rows. Positions are flat indices
``(b * N + row) * N + col`` (int64). Two backends (``OBSConfig.state_backend``):
:class:`DenseState` here (a [B, N, N] tensor) and
:class:`~onebigstate.model.sparse_state.SparseState` (a hash-generated S_0 plus the entries
written, memory independent of N^2).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from onebigstate.kernels.step import Carry, row_scale, spread, take


def initial_state(n_nodes: int, std: float, seed: int, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """The seeded Gaussian ``S_0`` [N, N] every stream starts from (same seed, same matrix)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return (torch.randn(n_nodes, n_nodes, generator=gen, dtype=torch.float64) * std).to(dtype=dtype, device=device)


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


class DenseState(StateStore):
    """A dense [B, N, N] tensor per batch of streams, and a [B, N, N] bool map of touched entries."""

    # gradient_store keeps dL/dS dense while B N^2 <= this x the window's write positions
    DENSE_GRADIENT_RATIO = 32

    def __init__(self, S: torch.Tensor, touched: torch.Tensor | None = None, carry: Carry | None = None,
                 track_written: bool = True):
        if S.dim() != 3 or S.shape[1] != S.shape[2]:
            raise ValueError(f"dense state must be [B, N, N], got shape {tuple(S.shape)}")
        self.S = S
        self.batch, self.n_nodes = S.shape[0], S.shape[1]
        if touched is None and track_written:
            touched = torch.zeros(S.shape, dtype=torch.bool, device=S.device)
        self.touched = touched
        self.carry = carry

    @classmethod
    def fresh(cls, s0: torch.Tensor, batch: int) -> "DenseState":
        """``batch`` streams, each a copy of the initial state ``s0`` [N, N]."""
        return cls(s0.unsqueeze(0).expand(batch, -1, -1).clone())

    def add_(self, pos, vals):
        self.S.view(-1).index_add_(0, pos.reshape(-1), vals.reshape(-1).to(self.S.dtype))

    def values_at(self, pos):
        return take(self.S.view(-1), pos)

    def rows(self, rows):
        B, N = self.batch, self.n_nodes
        flat_rows = rows + torch.arange(B, device=rows.device).unsqueeze(1) * N
        return take(self.S.view(B * N, N), flat_rows)

    def mark_written(self, pos, written):
        if self.touched is not None:
            self.touched.view(-1)[pos[written]] = True

    def entries_written(self):
        if self.touched is None:
            raise ValueError("this state does not track written entries (track_written=False)")
        return self.touched.view(self.batch, -1).sum(1)

    def clone(self):
        carry = None if self.carry is None else self.carry.clone()
        touched = None if self.touched is None else self.touched.clone()
        return DenseState(self.S.clone(), touched, carry, track_written=touched is not None)

    def snapshot(self):
        return {"S": self.S.clone()}

    @classmethod
    def from_snapshot(cls, tensors):
        return cls(tensors["S"], track_written=False)

    def gradient_store(self, write_positions):
        # A second dense state while it is small next to the write set (cheapest to index);
        # beyond that zeroing it costs more than searching the write set. Backward CPU s, batch 32,
        # 128 tokens (benchmarks/step_time.py --dense-gradient-ratio 1e12 vs 0 / 32):
        # N = 1024: 0.52 dense vs 1.01 write set; N = 4096: 1.62 vs 1.19.
        if self.S.numel() <= self.DENSE_GRADIENT_RATIO * write_positions.numel():
            return DenseState(torch.zeros_like(self.S), track_written=False)
        return WriteSetGradient(write_positions, self.S.dtype)

    def to_tensors(self):
        out = {"S": self.S}
        if self.touched is not None:
            out["touched"] = self.touched
        if self.carry is not None:
            out.update(self.carry.to_tensors())
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "DenseState":
        return cls(t["S"], t.get("touched"), Carry.from_tensors(t), track_written="touched" in t)

    def as_dense(self):
        return self.S

    def set_dense(self, dense):
        self.S = dense

    def __repr__(self) -> str:
        return f"DenseState(batch={self.batch}, n_nodes={self.n_nodes}, dtype={self.S.dtype})"


# State backends by name (OBSConfig.state_backend). A new backend (row-sharded, say) implements
# StateStore and gets a branch here; the model is unchanged.
STATE_BACKENDS = ("dense", "sparse")


def make_state(backend: str, batch: int, *, s0: torch.Tensor | None = None, n_nodes: int = 0, std: float = 0.0,
               seed: int = 0, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> StateStore:
    """A fresh state of ``batch`` streams: ``dense`` copies ``s0`` [N, N] into every stream;
    ``sparse`` starts from the hash-generated S_0 of (n_nodes, std, seed) and stores nothing yet."""
    if backend == "dense":
        if s0 is None:
            raise ValueError("the dense state backend needs the initial state s0 [N, N]")
        return DenseState.fresh(s0, batch)
    if backend == "sparse":
        from onebigstate.model.sparse_state import SparseState
        return SparseState.fresh(n_nodes, batch, std, seed, dtype, device)
    raise ValueError(f"unknown state backend '{backend}'; known: {list(STATE_BACKENDS)}")
