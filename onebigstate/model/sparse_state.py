"""The sparse state backend: a hash-generated initial state plus the entries actually written.

SPEC.md: "a sparse backend (a seeded, hash-generated initial state plus stored deltas only)
lets N reach millions of nodes with memory proportional to what was written". Here:

- ``S_0[i, j] = std * z(seed, i, j)``, with ``z`` a standard normal made from an integer hash
  of (seed, i, j) (:func:`hash_normal`). Every stream starts from the same ``S_0``, so nothing
  per stream is stored for it. Below :data:`S0_TABLE_MAX_BYTES` the values are computed once
  and kept in one [N, N] table shared by every state of the process (reads are then a gather,
  as fast as the dense backend's; the tables of all settings together stay below that size,
  the least recently used going first); above it every row read hashes its N values afresh
  (O(N) work, no memory).
- The changes ``S_t - S_0`` are sorted int64 keys (the flat position ``(b * N + i) * N + j``,
  as in :class:`~onebigstate.model.state.StateStore`) and their values, in two runs (a main one
  and a small recent one, see :class:`SparseState`). Adding looks keys up by binary search and
  merges new ones in order; reading a row finds its entries as one contiguous range of keys.

Memory per stream: 12 bytes per entry written (key + float32 value) instead of 4 N^2 bytes.
The dense backend, built with ``state_init: hash``, starts from the same ``S_0``
(:func:`hashed_initial_state`), so the two backends give the same numbers; the tests check
values and gradients through the reversible scan.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from onebigstate.kernels.interface import MASK32 as _MASK32
from onebigstate.kernels.interface import (StateBase, StateStore, WriteSetGradient, find_sorted, register_store,
                                           s0_seed_words)
from onebigstate.kernels.interface import mix32 as _mix32
from onebigstate.kernels.step import Carry, take

# Largest shared S_0 table kept in memory (bytes); above it rows are hashed on every read.
S0_TABLE_MAX_BYTES = 2 << 30
_S0_TABLES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def hash_normal(rows: torch.Tensor, cols: torch.Tensor, seed: int, dtype: torch.dtype = torch.float32
                ) -> torch.Tensor:
    """Standard normal numbers, a fixed function of (seed, row, col): rows and cols are int64
    tensors (< 2^32) that broadcast together. Two hashed uniforms, then Box-Muller."""
    sa, sb = s0_seed_words(seed)
    ra, rb = _mix32((rows ^ sa) & _MASK32), _mix32((rows ^ sb) & _MASK32)
    ha, hb = _mix32(ra ^ cols), _mix32(rb ^ cols)
    u1 = (ha.to(torch.float64) + 0.5) * 2.0 ** -32          # in (0, 1): the log stays finite
    u2 = hb.to(torch.float64) * 2.0 ** -32
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).to(dtype)


def s0_values(rows: torch.Tensor, cols: torch.Tensor, std: float, seed: int,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """S_0 at (rows, cols): ``std * hash_normal``, rounded through float32 so that every dtype
    (and the dense and sparse backends) sees the same numbers."""
    return (hash_normal(rows, cols, seed) * torch.tensor(std, dtype=torch.float32)).to(dtype)


def hashed_initial_state(n_nodes: int, std: float, seed: int, dtype: torch.dtype = torch.float32,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """The sparse backend's S_0 as a dense [N, N] matrix (the dense backend's ``state_init: hash``)."""
    out = torch.empty(n_nodes, n_nodes, dtype=dtype, device=device)
    cols = torch.arange(n_nodes, device=device)
    step = max(1, (1 << 22) // max(1, n_nodes))           # rows per block: ~4M values at a time
    for i in range(0, n_nodes, step):
        rows = torch.arange(i, min(n_nodes, i + step), device=device).unsqueeze(1)
        out[i:i + rows.shape[0]] = s0_values(rows, cols, std, seed, dtype)
    return out


def _s0_table(n_nodes: int, std: float, seed: int, dtype: torch.dtype, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The shared S_0 table for these settings and its rows' squared norms ([N, N], [N]), or None
    when the table would exceed S0_TABLE_MAX_BYTES."""
    size = n_nodes * n_nodes * torch.finfo(dtype).bits // 8
    if size > S0_TABLE_MAX_BYTES:
        return None
    key = (n_nodes, float(std), int(seed), dtype, str(device))
    if key in _S0_TABLES:
        _S0_TABLES[key] = _S0_TABLES.pop(key)                 # most recently used last
    else:
        # Tables of other settings (another N, dtype or device) go, oldest first, while all
        # together would exceed the limit: it bounds what this cache holds, not each table.
        while _S0_TABLES and size + sum(t.numel() * t.element_size() for t, _ in _S0_TABLES.values()) \
                > S0_TABLE_MAX_BYTES:
            del _S0_TABLES[next(iter(_S0_TABLES))]
        table = hashed_initial_state(n_nodes, std, seed, dtype, device)
        _S0_TABLES[key] = (table, table.pow(2).sum(1))
    return _S0_TABLES[key]


def _merge(keys: torch.Tensor, vals: torch.Tensor, new_keys: torch.Tensor, new_vals: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sorted runs of distinct keys -> one: each key moves up by the number of the other run's
    keys below it. O(len(keys) + len(new_keys) log len(keys))."""
    n_old, n_new = keys.numel(), new_keys.numel()
    dev = keys.device
    ins = torch.searchsorted(keys, new_keys)                              # in [0, n_old]
    new_at = ins + torch.arange(n_new, device=dev)
    below = torch.zeros(n_old + 1, dtype=torch.long, device=dev).index_add_(
        0, ins, torch.ones_like(ins)).cumsum(0)[:n_old]                    # new keys before old key i
    old_at = below + torch.arange(n_old, device=dev)
    out_k = torch.empty(n_old + n_new, dtype=torch.long, device=dev)
    out_v = torch.empty(n_old + n_new, dtype=vals.dtype, device=dev)
    out_k.index_copy_(0, new_at, new_keys).index_copy_(0, old_at, keys)
    out_v.index_copy_(0, new_at, new_vals).index_copy_(0, old_at, vals)
    return out_k, out_v


@register_store("sparse")
class SparseState(StateStore):
    """``batch`` streams over one hash-generated S_0, storing only the written entries.

    The changes from S_0 are two sorted runs of int64 flat positions and their values, with no
    key in both: a main run and a small recent one that new keys are merged into. The recent
    run joins the main one when it outgrows ``max(RECENT_MIN, main / RECENT_FRACTION)``, so a
    step's new entries cost a merge into the small run, not into everything stored (at 4096
    tokens x 64 streams the state holds ~20M entries). ``keys`` / ``vals`` give both as one run.
    ``std = 0`` means S_0 = 0 (``init_std: 0``).
    """

    RECENT_MIN = 1 << 16
    RECENT_FRACTION = 16

    def __init__(self, n_nodes: int, batch: int, std: float, seed: int, keys: torch.Tensor, vals: torch.Tensor,
                 carry: Carry | None = None):
        if keys.dim() != 1 or vals.shape != keys.shape:
            raise ValueError(f"sparse state needs 1-D keys and values of one length, got {tuple(keys.shape)} "
                             f"and {tuple(vals.shape)}")
        if n_nodes >= 1 << 32 or batch * n_nodes * n_nodes >= 1 << 63:
            raise ValueError(f"sparse state needs N < 2^32 and batch * N^2 < 2^63 (int64 flat positions); got "
                             f"N = {n_nodes}, batch = {batch}")
        if keys.numel() > 1 and not bool((keys[1:] > keys[:-1]).all()):
            raise ValueError("sparse state keys must be strictly increasing (a corrupt checkpoint?)")
        self.n_nodes, self.batch, self.std, self.seed = n_nodes, batch, float(std), int(seed)
        self._runs = [(keys, vals), (keys[:0], vals[:0])]          # main, recent
        self.carry = carry

    @classmethod
    def create(cls, batch, *, s0=None, n_nodes=0, std=0.0, seed=0, dtype=torch.float32, device="cpu"):
        return cls.fresh(n_nodes, batch, std, seed, dtype, device)

    @classmethod
    def fresh(cls, n_nodes: int, batch: int, std: float, seed: int, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> "SparseState":
        empty = torch.empty(0, dtype=torch.long, device=device)
        return cls(n_nodes, batch, std, seed, empty, torch.empty(0, dtype=dtype, device=device))

    @property
    def keys(self) -> torch.Tensor:
        """Every stored position, sorted (merges the recent run into the main one)."""
        self._compact()
        return self._runs[0][0]

    @property
    def vals(self) -> torch.Tensor:
        """The changes at :attr:`keys`."""
        self._compact()
        return self._runs[0][1]

    def _compact(self) -> None:
        (mk, mv), (rk, rv) = self._runs
        if rk.numel():
            self._runs = [_merge(mk, mv, rk, rv), (rk[:0], rv[:0])]

    @property
    def _dtype(self) -> torch.dtype:
        return self._runs[0][1].dtype

    @property
    def _device(self) -> torch.device:
        return self._runs[0][1].device

    # ---- S_0 -------------------------------------------------------------------------------
    def _s0_at(self, pos: torch.Tensor) -> torch.Tensor:
        if self.std == 0:
            return torch.zeros(pos.shape, dtype=self._dtype, device=pos.device)
        N = self.n_nodes
        rc = pos % (N * N)
        shared = _s0_table(N, self.std, self.seed, self._dtype, self._device)
        if shared is not None:
            return take(shared[0].view(-1), rc)
        return s0_values(rc // N, rc % N, self.std, self.seed, self._dtype)

    def _s0_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """S_0 rows [..., N] for row indices ``rows`` [...]."""
        N = self.n_nodes
        if self.std == 0:
            return torch.zeros(*rows.shape, N, dtype=self._dtype, device=rows.device)
        shared = _s0_table(N, self.std, self.seed, self._dtype, self._device)
        if shared is not None:
            return take(shared[0], rows)
        cols = torch.arange(N, device=rows.device)
        return s0_values(rows.unsqueeze(-1), cols, self.std, self.seed, self._dtype)

    # ---- the stored changes ----------------------------------------------------------------
    def add_(self, pos, vals):
        pos, vals = pos.reshape(-1), vals.reshape(-1).to(self._dtype)
        nonzero = vals != 0                     # a zero change stores nothing (an unused circuit slot)
        pos, vals = pos[nonzero], vals[nonzero]
        if pos.numel() == 0:
            return
        uniq, inverse = torch.unique(pos, return_inverse=True)            # sorted
        summed = torch.zeros(uniq.shape, dtype=vals.dtype, device=vals.device).index_add_(0, inverse, vals)
        stored = torch.zeros_like(uniq, dtype=torch.bool)
        for keys, run_vals in self._runs:
            idx, found = find_sorted(keys, uniq)
            run_vals.index_add_(0, idx[found], summed[found])
            stored |= found
        if not bool(stored.all()):
            (mk, mv), (rk, rv) = self._runs
            rk, rv = _merge(rk, rv, uniq[~stored], summed[~stored])
            self._runs = [(mk, mv), (rk, rv)]
            if rk.numel() > max(self.RECENT_MIN, mk.numel() // self.RECENT_FRACTION):
                self._compact()

    def values_at(self, pos):
        flat = pos.reshape(-1)
        out = self._s0_at(flat)
        for keys, run_vals in self._runs:
            if keys.numel():
                idx, found = find_sorted(keys, flat)
                out = out + torch.where(found, run_vals[idx], torch.zeros_like(out))
        return out.view(pos.shape)

    def _row_entries(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stored changes in rows [B, R] of their streams: (read row b * R + r, column, value)."""
        B, N = self.batch, self.n_nodes
        R = rows.shape[1]
        first = ((torch.arange(B, device=rows.device).unsqueeze(1) * N + rows) * N).reshape(-1)
        parts = []
        for keys, run_vals in self._runs:
            if not keys.numel():
                continue
            # a row's entries are one contiguous range of each run
            lo = torch.searchsorted(keys, first)
            counts = torch.searchsorted(keys, first + N) - lo
            total = int(counts.sum())
            if total:
                row_of = torch.repeat_interleave(torch.arange(B * R, device=rows.device), counts)
                starts = torch.cumsum(counts, 0) - counts
                entry = lo[row_of] + torch.arange(total, device=rows.device) - starts[row_of]
                parts.append((row_of, keys[entry] % N, run_vals[entry]))
        if not parts:
            empty = rows.new_empty(0)
            return empty, empty, torch.empty(0, dtype=self._dtype, device=rows.device)
        return tuple(torch.cat(p) for p in zip(*parts))

    def rows(self, rows):
        B, N = self.batch, self.n_nodes
        R = rows.shape[1]
        out = self._s0_rows(rows).reshape(B * R, N)                       # [B*R, N]
        row_of, cols, vals = self._row_entries(rows)
        out.view(-1).index_add_(0, row_of * N + cols, vals)
        return out.view(B, R, N)

    def spread(self, rows, coeff, row_norm):
        """As :meth:`StateStore.spread`, without gathering the rows: with the shared S_0 table,
        ``embedding_bag`` sums the weighted S_0 rows (skipping rows of weight 0, the circuit
        slots beyond k_t) and the stored changes are added on top; row norms come from the
        table's row norms plus the changes (|s + d|^2 = |s|^2 + sum 2 s_j d_j + d_j^2)."""
        N = self.n_nodes
        shared = None if self.std == 0 else _s0_table(N, self.std, self.seed, self._dtype, self._device)
        if shared is None:
            return super().spread(rows, coeff, row_norm)
        table, row_sq = shared
        B, R = rows.shape
        flat_rows = rows.reshape(-1)
        row_of, cols, vals = self._row_entries(rows)
        scale = None
        if row_norm:
            s0_here = take(table.view(-1), flat_rows[row_of] * N + cols)
            sq = row_sq[flat_rows].index_add(0, row_of, vals * (2 * s0_here + vals))
            scale = (1.0 / (1.0 + sq.clamp(min=0).sqrt())).view(B, R)
            coeff = coeff * scale
        w = coeff.reshape(-1)
        keep = w != 0
        per_stream = keep.view(B, R).sum(1)
        offsets = torch.cumsum(per_stream, 0) - per_stream
        act = F.embedding_bag(flat_rows[keep], table, offsets, mode="sum", per_sample_weights=w[keep])  # [B, N]
        act.view(-1).index_add_(0, torch.div(row_of, R, rounding_mode="floor") * N + cols, w[row_of] * vals)
        return act, scale

    def gradient_store(self, write_positions):
        return WriteSetGradient(write_positions, self._dtype)

    def base_view(self):
        shared = None if self.std == 0 else _s0_table(self.n_nodes, self.std, self.seed, self._dtype, self._device)
        table, row_sq = shared if shared is not None else (None, None)
        return StateBase(s0_table=table, s0_row_sq=row_sq, s0_std=self.std, s0_seed=self.seed,
                         runs=tuple(self._runs))

    def mark_written(self, pos, written):
        """Nothing to do: the stored keys are exactly the entries a nonzero change reached."""

    def entries_written(self):
        per_stream = self.n_nodes * self.n_nodes
        return sum(torch.bincount(keys // per_stream, minlength=self.batch) for keys, _ in self._runs)

    # ---- copies, snapshots, checkpoints ----------------------------------------------------
    def _meta(self) -> dict[str, torch.Tensor]:
        return {"meta": torch.tensor([self.n_nodes, self.batch, self.seed], dtype=torch.long),
                "std": torch.tensor(self.std, dtype=torch.float64)}

    def clone(self):
        carry = None if self.carry is None else self.carry.clone()
        return SparseState(self.n_nodes, self.batch, self.std, self.seed, self.keys.clone(), self.vals.clone(), carry)

    def snapshot(self):
        return {"keys": self.keys.clone(), "vals": self.vals.clone(), **self._meta()}

    @classmethod
    def from_snapshot(cls, tensors):
        return cls.from_tensors(tensors)

    def to_tensors(self):
        out = {"keys": self.keys, "vals": self.vals, **self._meta()}
        if self.carry is not None:
            out.update(self.carry.to_tensors())
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "SparseState":
        missing = {"keys", "vals", "meta", "std"} - set(t)
        if missing:
            raise ValueError(f"sparse state tensors lack {sorted(missing)}")
        n_nodes, batch, seed = (int(v) for v in t["meta"].tolist())
        return cls(n_nodes, batch, float(t["std"]), seed, t["keys"], t["vals"], Carry.from_tensors(t))

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def as_dense(self):
        B, N = self.batch, self.n_nodes
        S0 = self._s0_rows(torch.arange(N, device=self._device))
        S = S0.unsqueeze(0).expand(B, N, N).clone()
        S.view(-1).index_add_(0, self.keys, self.vals)
        return S

    def set_dense(self, dense):
        B, N = self.batch, self.n_nodes
        delta = (dense - self._s0_rows(torch.arange(N, device=dense.device)).unsqueeze(0)).reshape(-1)
        keys = torch.nonzero(delta).squeeze(1)
        self._runs = [(keys, delta[keys].to(self._dtype)), (keys[:0], delta[:0].to(self._dtype))]

    def __repr__(self) -> str:
        entries = sum(keys.numel() for keys, _ in self._runs)
        return f"SparseState(batch={self.batch}, n_nodes={self.n_nodes}, entries={entries}, dtype={self._dtype})"
