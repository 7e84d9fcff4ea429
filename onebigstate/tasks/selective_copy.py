"""Selective copying (as in the Mamba paper): copy the data tokens scattered among noise, in order.

A sequence is a body of ``body_len`` positions holding ``n_tokens`` data tokens at random
positions (in order) and the noise token 0 everywhere else, then ``n_tokens`` marker tokens 1.
At the i-th marker the model must output the i-th data token. Data tokens come from
``2 .. vocab_size - 1``. Only the marker positions are scored.

Worked example (vocab 8, body_len 6, n_tokens 2; data tokens from 2..7):

    inputs : 0 5 0 0 3 0 | 1 1
    labels : - - - - - - | 5 3          (- is IGNORE)

Train batches from ``batch_seed(seed, step)``, the held-out set from ``heldout_seed(seed)``
(disjoint ranges, see :mod:`onebigstate.tasks.base`).
"""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from onebigstate.config import StrictModel
from onebigstate.tasks.base import TaskConfig
from onebigstate.tasks.common import IGNORE, LabelledTokenTask, distinct_rows
from onebigstate.tasks.registry import register_task

NOISE, MARKER = 0, 1


class SelectiveCopyConfig(StrictModel):
    vocab_size: int = Field(16, ge=3, description="tokens: 0 noise, 1 marker, 2.. data")
    body_len: int = Field(64, ge=1, description="positions over which the data tokens are scattered")
    n_tokens: int = Field(8, ge=1, description="data tokens to copy")

    @model_validator(mode="after")
    def _check(self) -> "SelectiveCopyConfig":
        if self.n_tokens > self.body_len:
            raise ValueError(f"n_tokens ({self.n_tokens}) must be <= body_len ({self.body_len})")
        return self

    @property
    def seq_len(self) -> int:
        return self.body_len + self.n_tokens


def generate_selective_copy(cfg: SelectiveCopyConfig, n: int, rng: np.random.Generator):
    """(inputs [n, T], labels [n, T], groups [n, T]) int64 arrays, T = body_len + n_tokens."""
    L, K = cfg.body_len, cfg.n_tokens
    pos = np.sort(distinct_rows(rng, n, L, K), axis=1)
    data = rng.integers(2, cfg.vocab_size, size=(n, K))
    x = np.full((n, L + K), NOISE, dtype=np.int64)
    np.put_along_axis(x, pos, data, axis=1)
    x[:, L:] = MARKER
    y = np.full_like(x, IGNORE)
    y[:, L:] = data
    g = np.where(y != IGNORE, 0, -1)
    return x, y, g


@register_task("selective_copy", SelectiveCopyConfig)
class SelectiveCopyTask(LabelledTokenTask):
    def __init__(self, cfg: TaskConfig, params: SelectiveCopyConfig):
        super().__init__(cfg, params)
        self.vocab_size = self.n_out = params.vocab_size

    def generate(self, n, rng, test):
        return generate_selective_copy(self.params, n, rng)
