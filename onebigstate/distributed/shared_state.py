"""One lifelong state shared by P processes: the changes each wrote, summed into every copy.

The proposal: each device works out the changes of the big state for its own data, and "summing
these updates coming from multiple GPU nodes is a good way to represent all of the patterns that
were caught in parallel". Here every rank holds a copy of the carried states (stream ``j`` of
every rank shares one S), runs its own data through the layer, and at a sync point (every
``train.sync_every`` training windows):

1. each rank takes its changes since the last sync, ``D_r = S_r - S_sync``, as (flat position,
   value) pairs at the entries that moved;
2. the ranks exchange them, one of two ways, chosen by the bytes each moves (:func:`choose_exchange`):
   - ``sparse``: every rank's pairs gathered by every rank (``all_gather``), received bytes per
     rank ``(P - 1) * n_max * (8 + e)`` (int64 position + value of e bytes, padded to the largest
     rank's count ``n_max``);
   - ``dense``: the changes as a full tensor, summed by ``all_reduce`` (a ring moves about
     ``2 (P - 1) / P * B N^2 * e`` bytes per rank, whatever was written);
3. every rank sets ``S = S_sync + D_0 + D_1 + ... + D_{P-1}``.

With the sparse exchange the sum is added in rank order on every rank, so the copies are
bitwise equal and equal to one process adding all the pairs in that order. With the dense
all-reduce the copies are bitwise equal (the reduced tensor is the same on every rank) and equal
to the ordered sum up to float rounding of the reduction order. The carry (active set, last
circuit) stays each rank's own: it is the context of that rank's stream, not shared memory.

Costs: a copy of the state taken at each sync (``S_sync``), and one pass over ``B N^2`` entries
(dense store) to find the changes.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from onebigstate.model.sparse_state import SparseState
from onebigstate.model.state import DenseState, StateStore, find_sorted

EXCHANGES = ("auto", "sparse", "dense")
POSITION_BYTES = 8      # int64 flat positions


def sparse_bytes(counts: list[int], value_bytes: int) -> int:
    """Bytes one rank receives in the sparse exchange: every other rank's pairs, padded to the
    largest count (``all_gather`` moves tensors of one size)."""
    return (len(counts) - 1) * max(counts) * (POSITION_BYTES + value_bytes)


def dense_bytes(n_entries: int, world: int, value_bytes: int) -> int:
    """Bytes one rank sends (and receives) in a ring all-reduce of ``n_entries`` values."""
    return int(2 * (world - 1) / world * n_entries * value_bytes)


def choose_exchange(counts: list[int], n_entries: int, value_bytes: int, asked: str = "auto") -> str:
    """``sparse`` or ``dense``: the asked one, or with ``auto`` the one that moves fewer bytes."""
    if asked not in EXCHANGES:
        raise ValueError(f"unknown state exchange '{asked}'; known: {list(EXCHANGES)}")
    if asked != "auto":
        return asked
    world = len(counts)
    return "sparse" if sparse_bytes(counts, value_bytes) <= dense_bytes(n_entries, world, value_bytes) else "dense"


def changes_since(store: StateStore, before: StateStore) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat positions sorted [n] int64, changes [n]) where ``store`` differs from ``before``."""
    if isinstance(store, DenseState):
        delta = (store.S - before.S).reshape(-1)
        pos = delta.nonzero().squeeze(1)
        return pos, delta[pos]
    if isinstance(store, SparseState):
        keys, vals = store.keys, store.vals
        old_keys, old_vals = before.keys, before.vals
        idx, found = find_sorted(old_keys, keys)
        prev = old_vals[idx] if old_keys.numel() else torch.zeros_like(vals)      # nothing stored before
        delta = vals - torch.where(found, prev, torch.zeros_like(vals))
        # a stored change that went back to exactly 0 may have left the keys (set_dense)
        _, still = find_sorted(keys, old_keys)
        pos = torch.cat([keys, old_keys[~still]])
        delta = torch.cat([delta, -old_vals[~still]])
        order = torch.argsort(pos)
        pos, delta = pos[order], delta[order]
        moved = delta != 0
        return pos[moved], delta[moved]
    raise TypeError(f"a shared state must be a dense or sparse OBS store, got {type(store).__name__}")


def apply_changes(before: StateStore, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> StateStore:
    """A new store: ``before`` plus every part's changes, added part by part in order."""
    if isinstance(before, DenseState):
        S = before.S.clone()
        touched = before.touched.clone() if before.touched is not None else None
        for pos, vals in parts:
            S.view(-1).index_add_(0, pos, vals.to(S.dtype))
            if touched is not None:
                touched.view(-1)[pos] = True
        return DenseState(S, touched, track_written=touched is not None)
    if isinstance(before, SparseState):
        out = before.clone()
        for pos, vals in parts:
            out.add_(pos, vals)
        return out
    raise TypeError(f"a shared state must be a dense or sparse OBS store, got {type(before).__name__}")


def _all_gather_pairs(pos: torch.Tensor, vals: torch.Tensor, counts: list[int], group=None
                      ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    n_max = max(counts)
    pad_pos = torch.zeros(n_max, dtype=pos.dtype, device=pos.device)
    pad_vals = torch.zeros(n_max, dtype=vals.dtype, device=vals.device)
    pad_pos[:pos.numel()], pad_vals[:vals.numel()] = pos, vals
    all_pos = [torch.empty_like(pad_pos) for _ in counts]
    all_vals = [torch.empty_like(pad_vals) for _ in counts]
    dist.all_gather(all_pos, pad_pos, group=group)
    dist.all_gather(all_vals, pad_vals, group=group)
    return [(p[:n], v[:n]) for p, v, n in zip(all_pos, all_vals, counts)]


def state_digest(store: StateStore) -> str:
    """A checksum of a store's values (not its carry)."""
    h = hashlib.sha256()
    for t in ((store.S,) if isinstance(store, DenseState) else (store.keys, store.vals)):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_equal_on_every_rank(states: list, group=None) -> None:
    """Refuse to share states that are not equal on every rank (a checkpoint of another process
    count, or of a run whose streams did not share a state): every sync would keep them apart."""
    mine = [state_digest(s) for s in states]
    every: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(every, mine, group=group)
    if any(d != every[0] for d in every):
        raise ValueError("train.shared_state: the carried states differ between the processes (a checkpoint "
                         "written with another process count, or without train.shared_state): resume it with "
                         "the process count and the shared_state setting it was written with")


@dataclass
class SyncRecord:
    """What one sync of one store moved."""

    exchange: str
    pairs: list[int]          # changed entries per rank
    bytes_sparse: int         # what the sparse exchange moves per rank (computed for both ways)
    bytes_dense: int          # what the dense all-reduce moves per rank
    seconds: float = 0.0


def sync_store(store: StateStore, before: StateStore, exchange: str = "auto", group=None
               ) -> tuple[StateStore, SyncRecord]:
    """Sum every rank's changes since ``before`` (the state at the last sync, equal on every rank)
    into a new store, equal on every rank; the rank's own carry is kept."""
    t0 = time.perf_counter()
    pos, vals = changes_since(store, before)
    world = dist.get_world_size(group)
    n = torch.tensor([pos.numel()], dtype=torch.long, device=pos.device)
    all_n = [torch.empty_like(n) for _ in range(world)]
    dist.all_gather(all_n, n, group=group)
    counts = [int(c) for c in all_n]
    e = vals.element_size() if vals.numel() else torch.empty(0, dtype=store.dtype).element_size()
    n_entries = store.batch * store.n_nodes * store.n_nodes
    way = choose_exchange(counts, n_entries, e, exchange)
    if way == "sparse":
        parts = _all_gather_pairs(pos, vals.to(store.dtype), counts, group)
    else:
        total = torch.zeros(n_entries, dtype=store.dtype, device=pos.device)
        total.index_add_(0, pos, vals.to(store.dtype))
        dist.all_reduce(total, group=group)
        moved = total.nonzero().squeeze(1)
        parts = [(moved, total[moved])]
    new = apply_changes(before, parts)
    new.carry = store.carry
    record = SyncRecord(way, counts, sparse_bytes(counts, e), dense_bytes(n_entries, world, e),
                        time.perf_counter() - t0)
    return new, record


@dataclass
class SharedStates:
    """The carried states of a model (one store per OBS layer) kept equal on every rank.

        shared = SharedStates.start(model, states, local_batch)
        ... train or stream a window; shared.states = the advanced states
        shared.sync()                       # now equal on every rank
    """

    states: list
    before: list
    exchange: str = "auto"
    records: list[SyncRecord] = field(default_factory=list)

    @classmethod
    def start(cls, model, states: list | None, local_batch: int, exchange: str = "auto") -> "SharedStates":
        """Begin from ``states`` (equal on every rank), or from fresh states of every OBS layer."""
        from onebigstate.model.layer import OBSLayer
        if exchange not in EXCHANGES:
            raise ValueError(f"unknown state exchange '{exchange}'; known: {list(EXCHANGES)}")
        mixers = list(getattr(model, "mixers", []))
        bad = [type(m).__name__ for m in mixers if not isinstance(m, OBSLayer)]
        if bad or not mixers:
            raise ValueError(f"train.shared_state shares the big state of OBS layers; this model has other "
                             f"mixers ({', '.join(bad) or 'none'})")
        if states is None:
            states = [m.init_state(local_batch) for m in mixers]
        check_equal_on_every_rank(states)
        return cls(list(states), [s.clone() for s in states], exchange)

    def sync(self) -> list:
        """Sum every rank's changes since the last sync into every rank's states; returns them."""
        new_states = []
        for store, before in zip(self.states, self.before):
            new, record = sync_store(store, before, self.exchange)
            new_states.append(new)
            self.records.append(record)
        self.states = new_states
        self.before = [s.clone() for s in new_states]
        return new_states

    def summary(self) -> dict:
        """Totals over every sync so far (for results.json)."""
        if not self.records:
            return {"syncs": 0}
        return {"syncs": len(self.records),
                "exchanges": {w: sum(r.exchange == w for r in self.records) for w in ("sparse", "dense")},
                "mean_pairs_per_rank": sum(sum(r.pairs) / len(r.pairs) for r in self.records) / len(self.records),
                "bytes_moved_per_rank": sum(r.bytes_sparse if r.exchange == "sparse" else r.bytes_dense
                                            for r in self.records),
                "seconds": round(sum(r.seconds for r in self.records), 3)}
