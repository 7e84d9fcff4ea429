"""Carried states cut into the streams of each rank, and joined back into one batch.

Data parallel training gives rank ``r`` of ``P`` the streams ``r*b .. (r+1)*b - 1`` of a global
batch of ``P*b``. A checkpoint holds the carried states of the whole global batch, as a one-process
run writes them, so that a run checkpointed with P processes resumes with any other count of
processes that divides the batch (one included) and continues the same streams.
"""
from __future__ import annotations

import torch

from onebigstate.model.sparse_state import SparseState
from onebigstate.model.state import DenseState, StateStore


def _carry_tensors(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: t[k] for k in ("active_idx", "active_w", "circuit_idx", "alpha") if k in t}


def select_streams(state: StateStore, start: int, stop: int) -> StateStore:
    """Streams ``start .. stop-1`` of a store, as a store of ``stop - start`` streams (a copy)."""
    t = state.to_tensors()
    carry = {k: v[start:stop].clone() for k, v in _carry_tensors(t).items()}
    if isinstance(state, DenseState):
        out = {"S": t["S"][start:stop].clone(), **carry}
        if "touched" in t:
            out["touched"] = t["touched"][start:stop].clone()
        return DenseState.from_tensors(out)
    if isinstance(state, SparseState):
        per = state.n_nodes * state.n_nodes
        keys = t["keys"]
        keep = (keys >= start * per) & (keys < stop * per)
        meta = t["meta"].clone()
        meta[1] = stop - start
        return SparseState.from_tensors({"keys": keys[keep] - start * per, "vals": t["vals"][keep].clone(),
                                         "meta": meta, "std": t["std"], **carry})
    raise TypeError(f"cannot split the streams of a {type(state).__name__} (dense and sparse OBS stores only)")


def join_streams(parts: list[StateStore]) -> StateStore:
    """One store holding the streams of ``parts`` in order (the inverse of :func:`select_streams`)."""
    first = parts[0]
    ts = [p.to_tensors() for p in parts]
    carry = {}
    if all(_carry_tensors(t) for t in ts):
        carry = {k: torch.cat([t[k] for t in ts]) for k in _carry_tensors(ts[0])}
    if isinstance(first, DenseState):
        out = {"S": torch.cat([t["S"] for t in ts]), **carry}
        if all("touched" in t for t in ts):
            out["touched"] = torch.cat([t["touched"] for t in ts])
        return DenseState.from_tensors(out)
    if isinstance(first, SparseState):
        per = first.n_nodes * first.n_nodes
        keys, offset = [], 0
        for p, t in zip(parts, ts):
            keys.append(t["keys"] + offset * per)
            offset += p.batch
        meta = ts[0]["meta"].clone()
        meta[1] = offset
        return SparseState.from_tensors({"keys": torch.cat(keys), "vals": torch.cat([t["vals"] for t in ts]),
                                         "meta": meta, "std": ts[0]["std"], **carry})
    raise TypeError(f"cannot join the streams of a {type(first).__name__} (dense and sparse OBS stores only)")


def _check_layers(states: list) -> None:
    for i, s in enumerate(states):
        if s is not None and not isinstance(s, (DenseState, SparseState)):
            raise TypeError(f"layer {i} carries a {type(s).__name__} state: data parallel training carries the "
                            f"states of OBS layers (dense or sparse store) only; use train.carry_state=false "
                            f"or one process")


def local_states(states: list, rank: int, world: int) -> list:
    """Rank ``rank``'s share of a global batch's carried states (one entry per layer)."""
    _check_layers(states)
    out = []
    for s in states:
        if s is None:
            out.append(None)
            continue
        if s.batch % world:
            raise ValueError(f"the carried states hold {s.batch} streams, which {world} processes cannot share "
                             f"equally")
        b = s.batch // world
        out.append(select_streams(s, rank * b, (rank + 1) * b))
    return out


def global_states(per_rank: list[list]) -> list:
    """Every rank's carried states (by rank, one entry per layer) joined into the global batch's."""
    for states in per_rank:
        _check_layers(states)
    return [None if layer[0] is None else join_streams(list(layer)) for layer in zip(*per_rank)]
