"""The big state S split by columns over the processes of a ``torch.distributed`` group.

    state = ColumnShardedState.fresh(batch, s0=s0)          # rank r holds S[:, :, c0:c1]
    with count_comm() as comm:
        out = obs_scan(state, None, inputs, params, cfg)     # runs scan_sharded; equals the dense scan
    comm.bytes                                               # what the collectives moved

Every rank runs the same model on the same inputs: the computation outside S (addressing, the
write module, the top-m choice, the read vector) is replicated, and only S is split. Each rank
holds all N rows of its columns ``[c0, c1)`` (:func:`column_range`; uneven splits allowed).

Row or column sharding: bytes per step
-------------------------------------
Per step and stream a step reads ``R = K + M`` rows of S (K = k_max circuit, M = m_active
previously active), each of N values, forms the activation ``a = sum_r coeff_r S[row_r, :]``
(``step.spread``) and takes the top-m of ``a`` over the N nodes (``step.choose_active``). It
writes ``W`` entries (``StepConfig.writes_per_step``). Bytes below are the whole group's traffic
per step for B streams, P ranks, b bytes a value, with ring collectives: an all-reduce of n
values moves ``2 (P-1) n b``, an all-gather of P slices of n/P values ``(P-1) n b``.

- Row sharding, rows fetched (rank r holds N/P whole rows). The replicated step needs the R
  rows on every rank, each sent by its owner to the P-1 others:  ``(P-1) B R N b``.
- Row sharding, partial activations: each owner spreads from its own read rows and the
  partial activations are summed:  ``2 (P-1) B N b``.
- Column sharding, gathered activation (built here): the activation over a rank's columns
  needs only its own columns of the R rows, so it is computed locally; the slices are
  gathered:  ``(P-1) B N' b`` with ``N' = P ceil(N/P)`` (gloo's all-gather takes equal slices,
  so an uneven split is padded). ``row_norm`` needs every read row's whole L2 norm: an
  all-reduce of the R partial sums of squares, ``2 (P-1) B R b``; ``state_bound`` needs S at
  the W written entries before the writes: each rank fills its columns, zeros elsewhere, and
  an all-reduce sums them, ``2 (P-1) B W b``.
- Column sharding, local top-m (not built): each rank sends only the top-M of its own slice
  as (int64 index, value) pairs:  ``(P-1) P B M (8 + b)``, plus the same row_norm and
  state_bound terms.

Writes cost nothing in either layout: the write plan is replicated, and each rank applies the
writes that fall in its part. The backward pass adds, for column sharding, the all-reduce of
the gradients of the replicated tensors that entered the sharded part (spread coefficients
and write values): ``2 (P-1) B (R + W) b``; the activation's gather needs none (each rank keeps
its own slice of the replicated gradient). Row sharding's backward needs the write values'
gradients as well (``2 (P-1) B W b``) and, with partial activations, the coefficients' too.

At N = 65536, K = 12, M = 16, W = 480, B = 8, P = 8, float32 (:func:`sharding_bytes_per_step`):
rows fetched 411 MB, partial activations 29.4 MB, gathered activation 14.7 MB (+ 0.23 MB with
row_norm and state_bound), local top-m 86 KB (+ 0.23 MB). The gathered column layout moves half
the partial-activation bytes and R = 28 times fewer than fetching rows, and it alone admits the
local top-m, whose traffic does not grow with N. So the column layout is built first.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.distributed as dist

from onebigstate.kernels.interface import (ScanInputs, ScanOutputs, StateBase, StateStore, register_store,
                                           sample_positions)
from onebigstate.kernels.reference import StepResult, stack_outputs
from onebigstate.kernels.step import (Carry, StepConfig, StepParams, active_weights_and_read, add_direct, add_persist,
                                      bound_factors, choose_active, flat_positions, plan_writes,
                                      read_rows_and_coeffs, scale_plan, spread, take)

NO_GROUP = ("the sharded state backend needs a torch.distributed process group: launch the job with torchrun "
            "(onebigstate.distributed.launch.init_from_env) or in local processes (launch.run_local)")


# ---- the paper comparison --------------------------------------------------------------------
def sharding_bytes_per_step(n_nodes: int, k_max: int, m_active: int, writes: int, batch: int, world: int,
                            dtype_bytes: int, *, row_norm: bool = False, state_bound: bool = False,
                            backward: bool = False) -> dict[str, int]:
    """Whole-group bytes one step moves for ``batch`` streams, by layout (formulas in the module
    docstring): ``row_fetch``, ``row_partial``, ``column_gather`` (built: :func:`scan_sharded`)
    and ``column_topm`` (not built). ``backward`` adds the gradient pass's collectives."""
    P, B, b = world, batch, dtype_bytes
    R, W = k_max + m_active, writes
    padded = P * math.ceil(n_nodes / P)
    reduce = lambda n: 2 * (P - 1) * n * b                          # ring all-reduce of n values
    column_extra = (reduce(B * R) if row_norm else 0) + (reduce(B * W) if state_bound else 0)
    column_back = reduce(B * (R + W)) if backward else 0
    return {
        "row_fetch": (P - 1) * B * R * n_nodes * b + (reduce(B * W) if backward else 0),
        "row_partial": reduce(B * n_nodes) + column_back,
        "column_gather": (P - 1) * B * padded * b + column_extra + column_back,
        "column_topm": (P - 1) * P * B * m_active * (8 + b) + column_extra + column_back,
    }


def column_range(n_nodes: int, rank: int, world: int) -> tuple[int, int]:
    """Columns ``[c0, c1)`` of rank ``rank`` out of ``world``: the first ``N mod P`` ranks hold one
    column more than the others (N = 13 over 4 ranks: 4, 3, 3, 3)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    base, extra = divmod(n_nodes, world)
    c0 = rank * base + min(rank, extra)
    return c0, c0 + base + int(rank < extra)


# ---- counting what the collectives move ------------------------------------------------------
@dataclass
class CommCounter:
    """Whole-group bytes of the collectives made while it was active (ring model, as in
    :func:`sharding_bytes_per_step`), by kind ('all_gather', 'all_reduce'), and the calls."""

    bytes: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    calls: int = 0

    def add(self, kind: str, nbytes: int) -> None:
        self.bytes += nbytes
        self.by_kind[kind] = self.by_kind.get(kind, 0) + nbytes
        self.calls += 1


_COUNTERS: list[CommCounter] = []


@contextmanager
def count_comm() -> Iterator[CommCounter]:
    """Count the bytes of every collective this module makes inside the block (the backward pass
    too, if it runs inside)."""
    counter = CommCounter()
    _COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _COUNTERS.remove(counter)


def _count(kind: str, nbytes: int) -> None:
    for c in _COUNTERS:
        c.add(kind, nbytes)


# ---- collectives -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """Where this rank's columns lie in a group."""

    n_nodes: int
    rank: int
    world: int
    group: object = None

    @staticmethod
    def of(n_nodes: int, group=None) -> "Shard":
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(NO_GROUP)
        return Shard(n_nodes, dist.get_rank(group), dist.get_world_size(group), group)

    @property
    def columns(self) -> tuple[int, int]:
        return column_range(self.n_nodes, self.rank, self.world)

    @property
    def width(self) -> int:
        c0, c1 = self.columns
        return c1 - c0

    @property
    def max_width(self) -> int:
        return math.ceil(self.n_nodes / self.world)


def all_reduce_sum(t: torch.Tensor, shard: Shard) -> torch.Tensor:
    """The sum over ranks of ``t`` (a new tensor; ``t`` is left alone)."""
    out = t.detach().clone().contiguous()
    if out.numel() and shard.world > 1:
        _count("all_reduce", 2 * (shard.world - 1) * out.numel() * out.element_size())
        dist.all_reduce(out, group=shard.group)
    return out


def gather_columns(local: torch.Tensor, shard: Shard) -> torch.Tensor:
    """Every rank's ``[..., C_r]`` slice side by side: ``[..., N]``. Slices are padded to the widest
    (gloo gathers equal sizes only), so the padding travels too and is counted."""
    if shard.world == 1:
        return local.detach().clone()
    pad = shard.max_width - local.shape[-1]
    sent = torch.nn.functional.pad(local.detach(), (0, pad)).contiguous()
    parts = [torch.empty_like(sent) for _ in range(shard.world)]
    _count("all_gather", (shard.world - 1) * shard.world * sent.numel() * sent.element_size())
    dist.all_gather(parts, sent, group=shard.group)
    widths = [column_range(shard.n_nodes, r, shard.world) for r in range(shard.world)]
    return torch.cat([p[..., :c1 - c0] for p, (c0, c1) in zip(parts, widths)], -1)


class _CopyToShards(torch.autograd.Function):
    """A replicated tensor entering the sharded part: identity forward; each rank's gradient covers
    only its columns, so the backward sums them over the ranks."""

    @staticmethod
    def forward(ctx, x, shard):
        ctx.shard = shard
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return all_reduce_sum(grad, ctx.shard), None


class _GatherFromShards(torch.autograd.Function):
    """Column slices [..., C] -> the replicated whole [..., N]; the gradient is replicated too, so
    each rank keeps its own slice of it (no communication)."""

    @staticmethod
    def forward(ctx, local, shard):
        ctx.shard = shard
        return gather_columns(local, shard)

    @staticmethod
    def backward(ctx, grad):
        c0, c1 = ctx.shard.columns
        return grad[..., c0:c1].contiguous(), None


class _ReduceFromShards(torch.autograd.Function):
    """Per-rank parts (zeros outside a rank's columns) summed into the replicated whole; the
    replicated gradient goes to every part unchanged."""

    @staticmethod
    def forward(ctx, x, shard):
        return all_reduce_sum(x, shard)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def copy_to_shards(x: torch.Tensor, shard: Shard) -> torch.Tensor:
    return _CopyToShards.apply(x, shard)


def gather_from_shards(local: torch.Tensor, shard: Shard) -> torch.Tensor:
    return _GatherFromShards.apply(local, shard)


def reduce_from_shards(x: torch.Tensor, shard: Shard) -> torch.Tensor:
    return _ReduceFromShards.apply(x, shard)


# ---- positions -------------------------------------------------------------------------------
def local_positions(pos: torch.Tensor, shard: Shard) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions of the whole [B, N, N] state -> (flat positions in this rank's [B, N, C]
    block, clamped to 0 where not ours; whether each is ours), both shaped like ``pos``."""
    c0, c1 = shard.columns
    col, row = pos % shard.n_nodes, pos // shard.n_nodes          # row: b * N + node
    own = (col >= c0) & (col < c1)
    return torch.where(own, row * (c1 - c0) + (col - c0), torch.zeros_like(pos)), own


def local_values_at(local: torch.Tensor, pos: torch.Tensor, shard: Shard) -> torch.Tensor:
    """This rank's part of S.flat[pos]: its values where the position is in its columns, 0 elsewhere
    (differentiable in ``local``); summing the parts over ranks gives S.flat[pos]."""
    lpos, own = local_positions(pos, shard)
    vals = take(local.reshape(-1), lpos)
    return torch.where(own, vals, torch.zeros_like(vals))


# ---- the store -------------------------------------------------------------------------------
@register_store("sharded")
class ColumnShardedState(StateStore):
    """This rank's columns of the big state: ``local`` [B, N, C] holds ``S[:, :, c0:c1]``, ``touched``
    [B, N, C] bool which of them a nonzero write reached. The carry is replicated.

    Methods that read S across columns (``values_at``, ``rows``, ``spread``, ``as_dense``,
    ``entries_written``) are collectives: every rank must call them, in the same order, with the
    same arguments. ``add_`` and ``mark_written`` apply the part of a replicated change that falls in
    this rank's columns and need no communication. The reversible and compiled backends' hooks
    (``base_view``, ``snapshot``, ``gradient_store``) raise: the op runs :func:`scan_sharded` for it
    (``runs_own_scan``).
    """

    runs_own_scan = True

    def __init__(self, local: torch.Tensor, n_nodes: int, touched: torch.Tensor | None = None,
                 carry: Carry | None = None, group=None, track_written: bool = True):
        self.shard = Shard.of(n_nodes, group)
        B = local.shape[0]
        if local.shape != (B, n_nodes, self.shard.width):
            c0, c1 = self.shard.columns
            raise ValueError(f"rank {self.shard.rank} holds columns [{c0}, {c1}) of N={n_nodes}: its block must be "
                             f"[B, {n_nodes}, {c1 - c0}], got {tuple(local.shape)}")
        if touched is None and track_written:
            touched = torch.zeros(local.shape, dtype=torch.bool, device=local.device)
        self.local, self.touched, self.carry = local, touched, carry
        self.batch, self.n_nodes = B, n_nodes

    @classmethod
    def create(cls, batch: int, *, s0=None, n_nodes=0, std=0.0, seed=0, dtype=torch.float32, device="cpu"):
        return cls.fresh(batch, s0=s0, n_nodes=n_nodes, std=std, seed=seed, dtype=dtype, device=device)

    def own_scan(self, carry, inputs, params, cfg, n_reg_samples):
        return scan_sharded(self, carry, inputs, params, cfg, n_reg_samples)

    @classmethod
    def fresh(cls, batch: int, *, s0: torch.Tensor | None = None, n_nodes: int = 0, std: float = 0.0,
              seed: int = 0, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
              group=None) -> "ColumnShardedState":
        """``batch`` streams starting from S_0: this rank's columns of ``s0`` [N, N] when given (the
        dense backend's randn or hash S_0), else of the hash-generated S_0 of (n_nodes, std, seed),
        generated for these columns only."""
        from onebigstate.model.sparse_state import s0_values

        n = s0.shape[0] if s0 is not None else n_nodes
        c0, c1 = Shard.of(n, group).columns
        if s0 is not None:
            block = s0[:, c0:c1]
        else:
            rows = torch.arange(n, device=device).unsqueeze(1)
            block = s0_values(rows, torch.arange(c0, c1, device=device), std, seed, dtype)
        return cls(block.unsqueeze(0).expand(batch, -1, -1).contiguous(), n, group=group)

    @classmethod
    def from_dense(cls, dense: torch.Tensor, group=None, carry: Carry | None = None) -> "ColumnShardedState":
        """This rank's columns of a whole [B, N, N] state (the same on every rank)."""
        N = dense.shape[1]
        c0, c1 = Shard.of(N, group).columns
        return cls(dense[:, :, c0:c1].contiguous().clone(), N, carry=carry, group=group)

    # ---- reads and writes ----------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.local.dtype

    @property
    def columns(self) -> tuple[int, int]:
        return self.shard.columns

    def add_(self, pos, vals):
        lpos, own = local_positions(pos.reshape(-1), self.shard)
        self.local.view(-1).index_add_(0, lpos[own], vals.reshape(-1)[own].to(self.dtype))

    def values_at(self, pos):
        return all_reduce_sum(local_values_at(self.local, pos, self.shard), self.shard)

    def _local_rows(self, rows: torch.Tensor) -> torch.Tensor:
        B, N = self.batch, self.n_nodes
        return take(self.local.reshape(B * N, -1), rows + torch.arange(B, device=rows.device).unsqueeze(1) * N)

    def rows(self, rows):
        return gather_columns(self._local_rows(rows), self.shard)

    def spread(self, rows, coeff, row_norm):
        return sharded_spread(self.local, rows, coeff, row_norm, self.shard)

    def base_view(self) -> StateBase:
        raise NotImplementedError("a column-sharded state runs only in the sharded scan (backend 'auto' or "
                                  "'reference'); the compiled backends read a whole state")

    def mark_written(self, pos, written):
        if self.touched is None:
            return
        lpos, own = local_positions(pos.reshape(-1), self.shard)
        self.touched.view(-1)[lpos[own & written.reshape(-1)]] = True

    def entries_written(self):
        if self.touched is None:
            raise ValueError("this state does not track written entries (track_written=False)")
        return all_reduce_sum(self.touched.reshape(self.batch, -1).sum(1), self.shard)

    def written_map(self) -> torch.Tensor:
        """Which entries were written, whole [B, N, N] bool (a collective; small sizes)."""
        return gather_columns(self.touched.to(torch.uint8), self.shard).bool()

    # ---- copies and checkpoints ----------------------------------------------------------
    def clone(self):
        carry = None if self.carry is None else self.carry.clone()
        touched = None if self.touched is None else self.touched.clone()
        return ColumnShardedState(self.local.clone(), self.n_nodes, touched, carry, self.shard.group,
                                  track_written=touched is not None)

    def snapshot(self):
        raise NotImplementedError("a column-sharded state has no snapshot for the reversible backward; "
                                  "it runs in the sharded scan (backend 'auto' or 'reference')")

    @classmethod
    def from_snapshot(cls, tensors):
        raise NotImplementedError("a column-sharded state is not rebuilt from a snapshot (reversible backward)")

    def gradient_store(self, write_positions):
        raise NotImplementedError("a column-sharded state has no gradient store (reversible backward); "
                                  "the sharded scan differentiates with plain autograd")

    def to_tensors(self):
        """This rank's part: its block, written map, column range and the carry."""
        c0, c1 = self.columns
        out = {"S_local": self.local, "columns": torch.tensor([c0, c1, self.n_nodes])}
        if self.touched is not None:
            out["touched_local"] = self.touched
        if self.carry is not None:
            out.update(self.carry.to_tensors())
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "ColumnShardedState":
        """This rank's part back (the group must split the columns as when it was saved)."""
        c0, c1, n = t["columns"].tolist()
        if Shard.of(n).columns != (c0, c1):
            raise ValueError(f"the saved part holds columns [{c0}, {c1}) of N={n}, but this rank's are "
                             f"{Shard.of(n).columns}: restore with the same number of processes")
        return cls(t["S_local"], n, t.get("touched_local"), Carry.from_tensors(t),
                   track_written="touched_local" in t)

    def as_dense(self):
        return gather_columns(self.local, self.shard)

    def set_dense(self, dense):
        """Replace the whole state by ``dense`` [B, N, N] (the same on every rank): keep our columns."""
        c0, c1 = self.columns
        self.local = dense[:, :, c0:c1].contiguous().clone()

    def set_local(self, local: torch.Tensor) -> None:
        self.local = local

    def __repr__(self) -> str:
        c0, c1 = self.columns
        return (f"ColumnShardedState(batch={self.batch}, n_nodes={self.n_nodes}, columns=[{c0}, {c1}), "
                f"rank={self.shard.rank}/{self.shard.world}, dtype={self.dtype})")


# ---- the scan --------------------------------------------------------------------------------
def sharded_spread(local: torch.Tensor, rows: torch.Tensor, coeff: torch.Tensor, row_norm: bool,
                   shard: Shard) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``step.spread`` (with ``row_scale``) on a column block: the activation [B, N], replicated, and
    the rows' scales [B, R] with ``row_norm``. Each rank spreads over its own columns; the
    whole rows' norms come from an all-reduce of partial sums of squares, and the activation's
    slices are gathered."""
    B, N = local.shape[0], local.shape[1]
    row_values = take(local.reshape(B * N, -1), rows + torch.arange(B, device=rows.device).unsqueeze(1) * N)
    scale = None
    if row_norm:
        # detached like step.row_scale: a constant of the step for the gradient
        scale = 1.0 / (1.0 + all_reduce_sum(row_values.detach().pow(2).sum(-1), shard).sqrt())
        coeff = coeff * scale
    local_act = spread(copy_to_shards(coeff, shard), row_values)          # [B, C]
    return gather_from_shards(local_act, shard), scale


def sharded_step(local: torch.Tensor, carry: Carry, inputs: ScanInputs, t: int, params: StepParams,
                 cfg: StepConfig, with_chain: bool, shard: Shard) -> tuple[torch.Tensor, Carry, StepResult]:
    """``reference.reference_step`` on this rank's block [B, N, C]: the same plan on every rank,
    the writes that fall in our columns applied (in place without autograd), then the sharded
    read. Returns (block after the step, carry, the step's results, replicated)."""
    B, N = local.shape[0], cfg.n_nodes
    plan = plan_writes(params, cfg, inputs.circuit_idx[:, t], inputs.scores[:, t], inputs.features[:, t],
                       inputs.continuous[:, t], carry, with_chain=with_chain)
    pos = flat_positions(plan.rows, plan.cols, N)                         # [B, W], whole-state positions
    if cfg.state_bound > 0:
        before = all_reduce_sum(local_values_at(local, pos, shard), shard)
        plan = scale_plan(plan, bound_factors(plan.vals, before, cfg))
    lpos, own = local_positions(pos.reshape(-1), shard)
    vals = copy_to_shards(plan.vals, shard).reshape(-1)[own]
    if torch.is_grad_enabled():
        local = local.reshape(-1).index_add(0, lpos[own], vals).view_as(local)
    else:
        local.view(-1).index_add_(0, lpos[own], vals)
    rows, coeff = read_rows_and_coeffs(params, cfg, inputs.circuit_idx[:, t], plan.alpha, carry)
    activation, _ = sharded_spread(local, rows, coeff, cfg.row_norm, shard)   # [B, N]
    activation = add_persist(add_direct(activation, inputs.circuit_idx[:, t], plan.alpha, cfg), carry, cfg)
    active_idx = choose_active(activation.detach(), cfg)
    w, r = active_weights_and_read(params, cfg, activation.gather(1, active_idx), active_idx)
    carry = Carry(active_idx, w, inputs.circuit_idx[:, t], plan.alpha)
    return local, carry, StepResult(r, plan.k_soft, plan.k_hard, plan.gates, pos, plan.vals)


def scan_sharded(store: ColumnShardedState, carry: Carry, inputs: ScanInputs, params: StepParams,
                 cfg: StepConfig, n_reg_samples: int) -> ScanOutputs:
    """The scan over a column-sharded state: :func:`reference.scan_reference`'s results (to rounding),
    with collectives in place of the whole-state operations. Every rank must call it with the same
    carry, inputs and parameters. Plain autograd: the gradients reaching the replicated tensors are
    the unsharded run's on every rank. Updates ``store`` (in place under ``torch.no_grad()``)."""
    if not isinstance(store, ColumnShardedState):
        raise TypeError(f"scan_sharded needs a ColumnShardedState, got {type(store).__name__}")
    shard = store.shard
    local = store.local if not torch.is_grad_enabled() else store.local.detach()
    with_chain = bool(inputs.continuous.any())
    steps, carries = [], []
    for t in range(inputs.circuit_idx.shape[1]):
        local, carry, res = sharded_step(local, carry, inputs, t, params, cfg, with_chain, shard)
        with torch.no_grad():
            store.mark_written(res.pos, res.vals != 0)
        steps.append(res); carries.append(carry)
    sample = sample_positions(torch.stack([s.pos for s in steps], 1), n_reg_samples)
    reg_values = reduce_from_shards(local_values_at(local, sample, shard), shard)
    store.set_local(local.detach())
    return stack_outputs(store, steps, carries, reg_values)
