"""Permutation composition on S_n (S_5 by default): the running product of permutations.

Tokens are the n! permutations of ``0..n-1`` in lexicographic order (``itertools.permutations``);
the label at step t is the token of ``g_t o ... o g_1``, where ``(a o b)(i) = a[b[i]]``. S_5 is
the smallest non-solvable group, so no fixed-depth linear recurrence of the usual kind tracks
it exactly. Trained on ``seq_len`` steps, tested on ``test_len`` (see
:mod:`onebigstate.tasks.state_tracking`).

Worked example (degree 3; tokens 0:(0,1,2) 1:(0,2,1) 2:(1,0,2) 3:(1,2,0) 4:(2,0,1) 5:(2,1,0)):

    inputs : 1        2                3
    product: (0,2,1)  (1,0,2)o(0,2,1)  (1,2,0)o(1,2,0)o(0,2,1)
           = (0,2,1)  = (1,2,0)        = (1,2,0)o(1,2,0) = (2,0,1)
    labels : 1        3                4

Train batches from ``batch_seed(seed, step)``, the held-out set from ``heldout_seed(seed)``.
"""
from __future__ import annotations

import itertools

import numpy as np
from pydantic import Field

from onebigstate.tasks.base import TaskConfig
from onebigstate.tasks.registry import register_task
from onebigstate.tasks.state_tracking import StateTrackingConfig, StateTrackingTask


class S5Config(StateTrackingConfig):
    degree: int = Field(5, ge=2, le=6, description="n of S_n (n! tokens)")


def composition_table(degree: int) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """The permutations in token order, and ``table[a, b]`` = token of ``a o b`` [n!, n!]."""
    perms = list(itertools.permutations(range(degree)))
    index = {p: i for i, p in enumerate(perms)}
    table = np.array([[index[tuple(a[b[i]] for i in range(degree))] for b in perms] for a in perms],
                     dtype=np.int64)
    return perms, table


@register_task("s5", S5Config)
class S5Task(StateTrackingTask):
    def __init__(self, cfg: TaskConfig, params: S5Config):
        super().__init__(cfg, params)
        self.perms, self.table = composition_table(params.degree)
        self.vocab_size = self.n_out = len(self.perms)

    def run(self, n, T, rng):
        x = rng.integers(0, self.vocab_size, size=(n, T)).astype(np.int64)
        y = np.empty_like(x)
        acc = x[:, 0]
        y[:, 0] = acc
        for t in range(1, T):
            acc = self.table[x[:, t], acc]
            y[:, t] = acc
        return x, y
