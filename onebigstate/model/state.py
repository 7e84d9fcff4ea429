"""Storage of the one big state ``S`` (one N x N matrix per stream) behind a small interface.

The recurrence touches ``S`` only through the methods of :class:`StateStore`: add at flat
positions, read values at positions, read whole rows. Positions are flat indices
``(b * N + row) * N + col`` (int64). Two backends (``OBSConfig.state_backend``):
:class:`DenseState` here (a [B, N, N] tensor) and
:class:`~onebigstate.model.sparse_state.SparseState` (a hash-generated S_0 plus the entries
written, memory independent of N^2).
"""
from __future__ import annotations

import torch

from onebigstate.kernels.interface import (STATE_STORES, StateBase, StateStore, WriteSetGradient,  # noqa: F401
                                           find_sorted, register_store, store_class)
from onebigstate.kernels.step import Carry, take


def initial_state(n_nodes: int, std: float, seed: int, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """The seeded Gaussian ``S_0`` [N, N] every stream starts from (same seed, same matrix)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return (torch.randn(n_nodes, n_nodes, generator=gen, dtype=torch.float64) * std).to(dtype=dtype, device=device)


@register_store("dense")
class DenseState(StateStore):
    """A dense [B, N, N] tensor per batch of streams, and a [B, N, N] bool map of touched entries.

    A fresh state (:meth:`fresh`) holds only the shared S_0 [N, N] and the writes made since, and
    builds its [B, N, N] tensors the first time something reads them (:attr:`S`, :attr:`touched`,
    rows, values, checkpoints). An episodic window whose final state nobody reads then never
    pays for B copies of S_0: 128 MB at N = 1024 and B = 32, more than the compiled scan's whole
    forward pass costs. The compiled backend reads the shared S_0 directly (:meth:`base_view`).
    """

    # gradient_store keeps dL/dS dense while B N^2 <= this x the window's write positions
    DENSE_GRADIENT_RATIO = 32

    def __init__(self, S: torch.Tensor, touched: torch.Tensor | None = None, carry: Carry | None = None,
                 track_written: bool = True):
        if S.dim() != 3 or S.shape[1] != S.shape[2]:
            raise ValueError(f"dense state must be [B, N, N], got shape {tuple(S.shape)}")
        self._S, self._s0 = S, None
        self.batch, self.n_nodes = S.shape[0], S.shape[1]
        if touched is None and track_written:
            touched = torch.zeros(S.shape, dtype=torch.bool, device=S.device)
        self._touched = touched
        self._track = touched is not None
        # writes not yet applied (a fresh state not yet built): (pos, vals) and (pos, written) pairs
        self._adds: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._marks: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.carry = carry

    @classmethod
    def create(cls, batch, *, s0=None, n_nodes=0, std=0.0, seed=0, dtype=torch.float32, device="cpu"):
        if s0 is None:
            raise ValueError("the dense state backend needs the initial state s0 [N, N]")
        return cls.fresh(s0, batch)

    @classmethod
    def fresh(cls, s0: torch.Tensor, batch: int, track_written: bool = True) -> "DenseState":
        """``batch`` streams, each starting from the initial state ``s0`` [N, N] (built on first read)."""
        state = cls.__new__(cls)
        state._S, state._s0, state._touched, state._track = None, s0, None, track_written
        state.batch, state.n_nodes = batch, s0.shape[0]
        state._adds, state._marks, state.carry = [], [], None
        return state

    # ---- the tensors, built on first read ------------------------------------------------------
    @property
    def S(self) -> torch.Tensor:
        """The state [B, N, N]."""
        if self._S is None:
            S = self._s0.unsqueeze(0).expand(self.batch, -1, -1).clone()
            for pos, vals in self._adds:
                S.view(-1).index_add_(0, pos, vals)
            self._S, self._adds = S, []
        return self._S

    @S.setter
    def S(self, value: torch.Tensor) -> None:
        self.set_dense(value)

    @property
    def touched(self) -> torch.Tensor | None:
        """Which entries a nonzero write ever reached [B, N, N] bool (None without tracking)."""
        if self._track and self._touched is None:
            touched = torch.zeros((self.batch, self.n_nodes, self.n_nodes), dtype=torch.bool, device=self._device)
            for pos, written in self._marks:
                touched.view(-1)[pos[written]] = True
            self._touched, self._marks = touched, []
        return self._touched

    @property
    def _device(self) -> torch.device:
        return (self._S if self._S is not None else self._s0).device

    @property
    def dtype(self) -> torch.dtype:
        return (self._S if self._S is not None else self._s0).dtype

    def add_(self, pos, vals):
        pos, vals = pos.reshape(-1), vals.reshape(-1).to(self.dtype)
        if self._S is None:
            self._adds.append((pos, vals))
        else:
            self._S.view(-1).index_add_(0, pos, vals)

    def values_at(self, pos):
        return take(self.S.view(-1), pos)

    def rows(self, rows):
        B, N = self.batch, self.n_nodes
        flat_rows = rows + torch.arange(B, device=rows.device).unsqueeze(1) * N
        return take(self.S.view(B * N, N), flat_rows)

    def base_view(self):
        if self._S is None and not self._adds:
            return StateBase(dense=self._s0)          # [N, N]: every stream still at S_0
        return StateBase(dense=self.S)

    def mark_written(self, pos, written):
        if not self._track:
            return
        if self._touched is None:
            self._marks.append((pos.reshape(-1), written.reshape(-1)))
            # pending marks past the map's own size are built into it: a stream read window after
            # window without anyone asking for the map held every window's marks (24 GB after
            # 10^6 tokens of 8 streams at N = 1024)
            if sum(p.numel() for p, _ in self._marks) * 9 > self.batch * self.n_nodes * self.n_nodes:
                self.touched
        else:
            self._touched.view(-1)[pos[written]] = True

    def entries_written(self):
        if not self._track:
            raise ValueError("this state does not track written entries (track_written=False)")
        return self.touched.view(self.batch, -1).sum(1)

    def clone(self):
        carry = None if self.carry is None else self.carry.clone()
        if self._S is None:
            out = DenseState.fresh(self._s0, self.batch, self._track)
            out._adds, out.carry = list(self._adds), carry
        else:
            out = DenseState(self._S.clone(), track_written=False, carry=carry)
        out._track = self._track
        if self._touched is not None:
            out._touched = self._touched.clone()
        else:
            out._marks = list(self._marks)
        return out

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
        B, N = self.batch, self.n_nodes
        if B * N * N <= self.DENSE_GRADIENT_RATIO * write_positions.numel():
            return DenseState(torch.zeros((B, N, N), dtype=self.dtype, device=self._device), track_written=False)
        return WriteSetGradient(write_positions, self.dtype)

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
        self._S, self._adds = dense, []

    def __repr__(self) -> str:
        return f"DenseState(batch={self.batch}, n_nodes={self.n_nodes}, dtype={self.dtype})"


# State backends by name (OBSConfig.state_backend). A new backend implements StateStore, registers
# itself with ``@register_store(name)`` (kernels/interface.py), and the model is unchanged.


def make_state(backend: str, batch: int, *, s0: torch.Tensor | None = None, n_nodes: int = 0, std: float = 0.0,
               seed: int = 0, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> StateStore:
    """A fresh state of ``batch`` streams: ``dense`` copies ``s0`` [N, N] into every stream;
    ``sparse`` starts from the hash-generated S_0 of (n_nodes, std, seed) and stores nothing yet;
    ``sharded`` holds this process's columns of the dense backend's S_0 (of ``s0`` when given, else
    of the hashed S_0, generated for those columns only) and needs a live ``torch.distributed``
    process group; it is registered by importing :mod:`onebigstate.distributed`."""
    return store_class(backend).create(batch, s0=s0, n_nodes=n_nodes, std=std, seed=seed, dtype=dtype,
                                       device=device)
