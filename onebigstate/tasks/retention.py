"""Retention: associations written once, early, then queried after growing amounts of traffic.

Vocabulary: 0 the pad after a query, keys ``1 .. V/2 - 1``, values ``V/2 .. V - 1``. A stream
opens with ``n_pairs`` key-value pairs ``k v`` (distinct keys), the *writes*. Then come two-token
slots: distractor traffic ``k' v'`` (a random key not among the written ones and a random
value: other writes that interfere) or a query ``k 0`` of one written key, scored at the key's
position with its value. Every written key is queried exactly once, so no query refreshes a
memory.

Training episodes (and the held-out set the trainer evaluates) have ``seq_len`` tokens, with
the queries in uniformly random slots. The *lifelong* set (:meth:`RetentionTask.lifelong_set`)
queries the written keys at the distances ``test_distances`` (tokens from the end of the writes
to the query; key i at distance ``test_distances[i % len]``), in streams as long as the largest
distance: models that carry state stream it in windows (see :mod:`onebigstate.bench.evaluate`),
and accuracy per distance is the forgetting curve.

Worked example (vocab 16, n_pairs 2, seq_len 12; keys 1..7, values 8..15):

    writes   : 3 12 5 9                     (positions 0-3: 3 -> 12, 5 -> 9)
    slots    : 6 10 | 5 0 | 2 14 | 3 0      (distractor, query of 5, distractor, query of 3)
    labels   : IGNORE except position 6 -> 9 and position 10 -> 12

Train batches from ``batch_seed(seed, step)``; held-out and lifelong sets from
``heldout_seed(seed)`` (disjoint ranges).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from pydantic import Field, model_validator

from onebigstate.config import StrictModel
from onebigstate.tasks.base import TaskConfig, heldout_seed
from onebigstate.tasks.common import IGNORE, Grouped, LabelledTokenTask, distinct_rows
from onebigstate.tasks.registry import register_task

PAD = 0


class RetentionConfig(StrictModel):
    vocab_size: int = Field(256, ge=8)
    n_pairs: int = Field(8, ge=1, description="associations written at the start of a stream")
    seq_len: int = Field(128, ge=4, description="tokens of a training episode")
    test_distances: list[int] = Field(default_factory=lambda: [16, 64, 256, 1024],
                                      description="query distances of the lifelong set (tokens after the writes)")
    lifelong_streams: int = Field(16, ge=1, description="streams in the lifelong set")

    @model_validator(mode="after")
    def _check(self) -> "RetentionConfig":
        if self.seq_len % 2:
            raise ValueError(f"seq_len must be even, got {self.seq_len}")
        slots = (self.seq_len - 2 * self.n_pairs) // 2
        if slots < self.n_pairs:
            raise ValueError(f"seq_len {self.seq_len} leaves {slots} slots for {self.n_pairs} queries")
        if 2 * self.n_pairs >= self.vocab_size // 2 - 1:
            raise ValueError(f"n_pairs ({self.n_pairs}) needs a vocabulary larger than {self.vocab_size}")
        if not self.test_distances or min(self.test_distances) < 0:
            raise ValueError("test_distances must be a non-empty list of distances >= 0")
        return self


def generate_retention(cfg: RetentionConfig, n: int, rng: np.random.Generator,
                       distances: list[int] | None = None):
    """(inputs [n, T], labels [n, T], groups [n, T]) int64 arrays.

    ``distances=None``: episodes of ``seq_len`` with queries in random slots (group 0).
    Otherwise key i is queried at ``distances[i % len]`` (rounded down to an even number of
    tokens), group ``i % len``; T = writes + largest distance + 2.
    """
    P, V = cfg.n_pairs, cfg.vocab_size
    half = V // 2
    keys = distinct_rows(rng, n, half - 1, P, offset=1)
    values = rng.integers(half, V, size=(n, P))
    if distances is None:
        n_slots = (cfg.seq_len - 2 * P) // 2
        slot_of = distinct_rows(rng, n, n_slots, P)                       # query slot of key i
        group_of = np.zeros((n, P), dtype=np.int64)
    else:
        n_slots = max(distances) // 2 + 1
        d = np.array([distances[i % len(distances)] // 2 for i in range(P)])
        slot_of = np.broadcast_to(d, (n, P)).copy()
        group_of = np.broadcast_to(np.arange(P) % len(distances), (n, P)).copy()
        # two keys at one distance: spread them over neighbouring slots
        for i in range(P):
            clash = (slot_of[:, :i] == slot_of[:, i:i + 1]).any(axis=1)
            while clash.any():
                slot_of[clash, i] += 1
                clash = (slot_of[:, :i] == slot_of[:, i:i + 1]).any(axis=1)
        n_slots = int(slot_of.max()) + 1
    # distractor keys: random keys other than the stream's written ones
    dk = rng.integers(1, half, size=(n, n_slots))
    written = np.zeros((n, half), dtype=bool)
    np.put_along_axis(written, keys, True, axis=1)
    bad = np.take_along_axis(written, dk, axis=1)
    while bad.any():
        dk[bad] = rng.integers(1, half, size=int(bad.sum()))
        bad = np.take_along_axis(written, dk, axis=1)
    dv = rng.integers(half, V, size=(n, n_slots))
    slots = np.stack([dk, dv], axis=2)                                     # [n, S, 2]
    rows = np.arange(n)[:, None]
    slots[rows, slot_of, 0] = keys
    slots[rows, slot_of, 1] = PAD
    head = np.stack([keys, values], axis=2).reshape(n, 2 * P)
    x = np.concatenate([head, slots.reshape(n, -1)], axis=1).astype(np.int64)
    y = np.full_like(x, IGNORE)
    g = np.full_like(x, -1)
    qpos = 2 * P + 2 * slot_of
    np.put_along_axis(y, qpos, values, axis=1)
    np.put_along_axis(g, qpos, group_of, axis=1)
    return x, y, g


def retention_stream(cfg: RetentionConfig, n: int, distances: list[int], window: int,
                     rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The lifelong set's streams made window by window, for distances too long to hold at once.

    Yields ``(inputs, labels, groups)`` [n, window] int64 (the last window shorter) until the
    farthest query: the same layout as ``generate_retention(cfg, n, rng, distances)`` (writes,
    then two-token slots of distractor traffic, key i queried ``distances[i % len]`` tokens
    after the writes, group ``i % len``), but the distractors are drawn per window, so a stream
    of 10^7 tokens costs memory for one window only.
    """
    if window < 2 or window % 2:
        raise ValueError(f"window must be an even number >= 2, got {window}")
    P, V = cfg.n_pairs, cfg.vocab_size
    half = V // 2
    keys = distinct_rows(rng, n, half - 1, P, offset=1)
    values = rng.integers(half, V, size=(n, P))
    slot_of = np.array([distances[i % len(distances)] // 2 for i in range(P)])
    for i in range(P):                                   # two keys at one distance: neighbouring slots
        while (slot_of[:i] == slot_of[i]).any():
            slot_of[i] += 1
    written = np.zeros((n, half), dtype=bool)
    np.put_along_axis(written, keys, True, axis=1)
    head = np.stack([keys, values], axis=2).reshape(n, 2 * P)
    total = 2 * P + 2 * (int(slot_of.max()) + 1)
    for t0 in range(0, total, window):
        t1 = min(t0 + window, total)
        x = np.empty((n, t1 - t0), dtype=np.int64)
        y = np.full_like(x, IGNORE)
        g = np.full_like(x, -1)
        # distractor slots covering [t0, t1), then the head and the queries that fall inside
        s0, s1 = max(0, (t0 - 2 * P) // 2), (t1 - 2 * P + 1) // 2
        if s1 > s0:
            dk = rng.integers(1, half, size=(n, s1 - s0))
            bad = np.take_along_axis(written, dk, axis=1)
            while bad.any():
                dk[bad] = rng.integers(1, half, size=int(bad.sum()))
                bad = np.take_along_axis(written, dk, axis=1)
            dv = rng.integers(half, V, size=(n, s1 - s0))
            slots = np.stack([dk, dv], axis=2).reshape(n, -1)            # tokens 2P + 2 s0 ...
            a = 2 * P + 2 * s0
            lo, hi = max(t0, a), min(t1, a + slots.shape[1])
            x[:, lo - t0:hi - t0] = slots[:, lo - a:hi - a]
        if t0 < 2 * P:
            x[:, :min(t1, 2 * P) - t0] = head[:, t0:min(t1, 2 * P)]
        for i in range(P):
            q = 2 * P + 2 * int(slot_of[i])
            if t0 <= q < t1:
                x[:, q - t0] = keys[:, i]
                if q + 1 < t1:
                    x[:, q + 1 - t0] = PAD
                y[:, q - t0] = values[:, i]
                g[:, q - t0] = i % len(distances)
            if t0 <= q + 1 < t1 and q < t0:               # the query's pad opens this window
                x[:, q + 1 - t0] = PAD
        yield x, y, g


@register_task("retention", RetentionConfig)
class RetentionTask(LabelledTokenTask):
    def __init__(self, cfg: TaskConfig, params: RetentionConfig):
        super().__init__(cfg, params)
        self.vocab_size = self.n_out = params.vocab_size

    def generate(self, n, rng, test):
        return generate_retention(self.params, n, rng)

    def lifelong_set(self) -> Grouped:
        """``lifelong_streams`` long streams, queries at ``test_distances``, grouped by distance."""
        p = self.params
        rng = np.random.default_rng([heldout_seed(self.cfg.seed), 1])
        x, y, g = generate_retention(p, p.lifelong_streams, rng, distances=p.test_distances)
        return Grouped(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(g),
                       [f"d={d}" for d in p.test_distances])
