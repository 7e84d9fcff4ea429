"""Continual learning in a stream: the key-value mapping changes in phases; what stays?

Vocabulary: 0 the pad after a probe, keys ``1 .. V/2 - 1``, values ``V/2 .. V - 1``. A stream
has ``n_phases`` phases. Phase p has its own mapping of ``pairs_per_phase`` keys to values (new
keys in every phase, or with ``shared_keys`` the same keys with new values) and shows its pairs
``k v`` ``repeats`` times, each round in a new order; the model is scored at every key after the
first round (it has seen the pair before, in this phase): group ``current``. After the last
phase comes a probe: every key of every phase once, ``k 0``, scored with its value, grouped by
the phase it belongs to (``phase 0`` ... ``phase P-1``); with ``shared_keys`` the probe asks
the latest values (group ``probe latest``). Accuracy on ``phase 0`` against ``current`` is the
forgetting of the first mapping after all the later ones.

The mappings are drawn per stream, so only the state can hold them.

Worked example (vocab 16, 2 phases, 1 pair per phase, 2 repeats; keys 1..7, values 8..15):

    phase 0 : 3 12 | 3 12          (3 -> 12, shown twice)
    phase 1 : 6 9  | 6 9           (6 -> 9)
    probe   : 6 0  | 3 0
    labels  : position 2 -> 12 (current), 6 -> 9 (current), 8 -> 9 (phase 1), 10 -> 12 (phase 0)

Train batches from ``batch_seed(seed, step)``, the held-out set from ``heldout_seed(seed)``.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from onebigstate.config import StrictModel
from onebigstate.tasks.base import TaskConfig
from onebigstate.tasks.common import IGNORE, LabelledTokenTask, distinct_rows
from onebigstate.tasks.registry import register_task

PAD = 0


class ContinualConfig(StrictModel):
    vocab_size: int = Field(256, ge=8)
    n_phases: int = Field(3, ge=1)
    pairs_per_phase: int = Field(4, ge=1)
    repeats: int = Field(3, ge=2, description="rounds of a phase's pairs (scored from the second on)")
    shared_keys: bool = Field(False, description="every phase remaps the same keys (probe asks the latest values)")

    @model_validator(mode="after")
    def _check(self) -> "ContinualConfig":
        keys = self.pairs_per_phase * (1 if self.shared_keys else self.n_phases)
        if keys > self.vocab_size // 2 - 1:
            raise ValueError(f"{keys} distinct keys need a vocabulary larger than {self.vocab_size}")
        return self

    @property
    def seq_len(self) -> int:
        probe = self.pairs_per_phase * (1 if self.shared_keys else self.n_phases)
        return 2 * (self.n_phases * self.pairs_per_phase * self.repeats + probe)


def generate_continual(cfg: ContinualConfig, n: int, rng: np.random.Generator):
    """(inputs [n, T], labels [n, T], groups [n, T]) int64 arrays; groups as ``group_names``."""
    P, K, R, V = cfg.n_phases, cfg.pairs_per_phase, cfg.repeats, cfg.vocab_size
    half = V // 2
    n_keys = K if cfg.shared_keys else P * K
    all_keys = distinct_rows(rng, n, half - 1, n_keys, offset=1)
    xs, ys, gs = [], [], []
    rows = np.arange(n)[:, None]
    latest = {}
    for p in range(P):
        keys = all_keys if cfg.shared_keys else all_keys[:, p * K:(p + 1) * K]
        vals = rng.integers(half, V, size=(n, K))
        for j in range(K):
            latest[(p, j)] = (keys[:, j], vals[:, j])
        for r in range(R):
            order = distinct_rows(rng, n, K, K)
            k, v = keys[rows, order], vals[rows, order]
            xs.append(np.stack([k, v], axis=2).reshape(n, 2 * K))
            lab = np.full((n, 2 * K), IGNORE, dtype=np.int64)
            grp = np.full((n, 2 * K), -1, dtype=np.int64)
            if r > 0:
                lab[:, 0::2] = v
                grp[:, 0::2] = 0
            ys.append(lab)
            gs.append(grp)
    # probe: every key once (of its phase; with shared keys, of the last phase), in random order
    if cfg.shared_keys:
        pk = np.stack([latest[(P - 1, j)][0] for j in range(K)], axis=1)
        pv = np.stack([latest[(P - 1, j)][1] for j in range(K)], axis=1)
        pg = np.ones((n, K), dtype=np.int64)
    else:
        pk = np.stack([latest[(p, j)][0] for p in range(P) for j in range(K)], axis=1)
        pv = np.stack([latest[(p, j)][1] for p in range(P) for j in range(K)], axis=1)
        pg = np.broadcast_to(1 + np.repeat(np.arange(P), K), (n, P * K)).copy()
    order = distinct_rows(rng, n, pk.shape[1], pk.shape[1])
    pk, pv, pg = pk[rows, order], pv[rows, order], pg[rows, order]
    xs.append(np.stack([pk, np.full_like(pk, PAD)], axis=2).reshape(n, -1))
    lab = np.full((n, 2 * pk.shape[1]), IGNORE, dtype=np.int64)
    grp = np.full_like(lab, -1)
    lab[:, 0::2], grp[:, 0::2] = pv, pg
    ys.append(lab)
    gs.append(grp)
    return (np.concatenate(xs, axis=1).astype(np.int64), np.concatenate(ys, axis=1),
            np.concatenate(gs, axis=1))


@register_task("continual", ContinualConfig)
class ContinualTask(LabelledTokenTask):
    def __init__(self, cfg: TaskConfig, params: ContinualConfig):
        super().__init__(cfg, params)
        self.vocab_size = self.n_out = params.vocab_size
        self.group_names = ["current"] + (["probe latest"] if params.shared_keys
                                          else [f"phase {p}" for p in range(params.n_phases)])

    def generate(self, n, rng, test):
        return generate_continual(self.params, n, rng)
