"""State tracking on a group: the running product of the inputs, trained short, tested long.

Every position is scored with the group element obtained by composing all inputs so far, so a
model must carry that element in its state. Training sequences have ``seq_len`` steps; the
held-out set has ``test_len`` steps (default ``seq_len``), so a longer ``test_len`` tests length
extrapolation. Held-out positions are grouped by length bucket ``t<=L``, ``t<=2L``, ... (steps
1..L, L+1..2L, ...; L = ``seq_len``), so one test set gives accuracy at, and beyond, the
training length.

The concrete tasks: :mod:`onebigstate.tasks.parity` (Z_2) and :mod:`onebigstate.tasks.s5`
(the symmetric group S_n, S_5 by default).
"""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from onebigstate.config import StrictModel
from onebigstate.tasks.base import TaskConfig
from onebigstate.tasks.common import LabelledTokenTask


class StateTrackingConfig(StrictModel):
    seq_len: int = Field(64, ge=1, description="steps of a training sequence")
    test_len: int | None = Field(None, ge=1, description="steps of a held-out sequence (None: seq_len)")

    @model_validator(mode="after")
    def _check_len(self) -> "StateTrackingConfig":
        if self.test_len is not None and self.test_len < self.seq_len:
            raise ValueError(f"test_len ({self.test_len}) must be >= seq_len ({self.seq_len})")
        return self

    @property
    def held_out_len(self) -> int:
        return self.test_len or self.seq_len


def length_buckets(seq_len: int, test_len: int) -> tuple[np.ndarray, list[str]]:
    """Bucket of every position [test_len] and the bucket names ``t<=L``, ``t<=2L``, ..."""
    idx = np.arange(test_len) // seq_len
    names = [f"t<={min((b + 1) * seq_len, test_len)}" for b in range(int(idx[-1]) + 1)]
    return idx.astype(np.int64), names


class StateTrackingTask(LabelledTokenTask):
    """Subclasses implement :meth:`run` ``(n, T, rng) -> (inputs, prefix products)``."""

    def __init__(self, cfg: TaskConfig, params: StateTrackingConfig):
        super().__init__(cfg, params)
        _, self.group_names = length_buckets(params.seq_len, params.held_out_len)

    def run(self, n: int, T: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def generate(self, n, rng, test):
        T = self.params.held_out_len if test else self.params.seq_len
        x, y = self.run(n, T, rng)
        bucket, _ = length_buckets(self.params.seq_len, T)
        return x, y, np.broadcast_to(bucket, (n, T)).copy()
