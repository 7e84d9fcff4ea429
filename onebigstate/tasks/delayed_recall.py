"""Delayed recall: remember a few tokens through ``delay`` steps of random noise, then copy them.

A sequence is ``n_tokens`` data tokens, ``delay`` noise tokens, then ``n_tokens`` marker tokens 1;
at the i-th marker the model must output the i-th data token. Data and noise tokens are both
drawn from ``2 .. vocab_size - 1``, so only their position tells them apart. Only the markers
are scored. ``test_delay`` (default: ``delay``) sets the held-out delay, to test longer gaps.

Worked example (vocab 8, n_tokens 2, delay 3):

    inputs : 6 2 | 4 7 4 | 1 1
    labels : - - | - - - | 6 2          (- is IGNORE)

Train batches from ``batch_seed(seed, step)``, the held-out set from ``heldout_seed(seed)``.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from onebigstate.config import StrictModel
from onebigstate.tasks.base import TaskConfig
from onebigstate.tasks.common import IGNORE, LabelledTokenTask
from onebigstate.tasks.registry import register_task

MARKER = 1


class DelayedRecallConfig(StrictModel):
    vocab_size: int = Field(16, ge=3, description="tokens: 1 marker, 2.. data and noise (0 unused)")
    n_tokens: int = Field(1, ge=1, description="data tokens to remember")
    delay: int = Field(32, ge=0, description="D: noise steps between the data and the first marker")
    test_delay: int | None = Field(None, ge=0, description="D of the held-out set (None: delay)")

    @property
    def seq_len(self) -> int:
        return 2 * self.n_tokens + self.delay


def generate_delayed_recall(vocab_size: int, n_tokens: int, delay: int, n: int, rng: np.random.Generator):
    """(inputs [n, T], labels [n, T], groups [n, T]) int64 arrays, T = 2 n_tokens + delay."""
    K = n_tokens
    data = rng.integers(2, vocab_size, size=(n, K))
    noise = rng.integers(2, vocab_size, size=(n, delay))
    marks = np.full((n, K), MARKER, dtype=np.int64)
    x = np.concatenate([data, noise, marks], axis=1).astype(np.int64)
    y = np.full_like(x, IGNORE)
    y[:, K + delay:] = data
    g = np.where(y != IGNORE, 0, -1)
    return x, y, g


@register_task("delayed_recall", DelayedRecallConfig)
class DelayedRecallTask(LabelledTokenTask):
    def __init__(self, cfg: TaskConfig, params: DelayedRecallConfig):
        super().__init__(cfg, params)
        self.vocab_size = self.n_out = params.vocab_size

    def generate(self, n, rng, test):
        p = self.params
        delay = p.test_delay if (test and p.test_delay is not None) else p.delay
        return generate_delayed_recall(p.vocab_size, p.n_tokens, delay, n, rng)
