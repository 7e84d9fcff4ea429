"""Parity: the running XOR of a bit string (state tracking on Z_2).

Inputs are bits (tokens 0 and 1); the label at step t is the parity of bits 0..t. Trained on
``seq_len`` steps, tested on ``test_len`` (see :mod:`onebigstate.tasks.state_tracking`).

Worked example (seq_len 6):

    inputs : 1 0 1 1 0 1
    labels : 1 1 0 1 1 0

Train batches from ``batch_seed(seed, step)``, the held-out set from ``heldout_seed(seed)``.
"""
from __future__ import annotations

import numpy as np

from onebigstate.tasks.base import TaskConfig
from onebigstate.tasks.registry import register_task
from onebigstate.tasks.state_tracking import StateTrackingConfig, StateTrackingTask


class ParityConfig(StateTrackingConfig):
    pass


def running_parity(bits: np.ndarray) -> np.ndarray:
    """[n, T] bits -> [n, T] parity of each prefix."""
    return np.bitwise_xor.accumulate(bits, axis=1)


@register_task("parity", ParityConfig)
class ParityTask(StateTrackingTask):
    def __init__(self, cfg: TaskConfig, params: ParityConfig):
        super().__init__(cfg, params)
        self.vocab_size = self.n_out = 2

    def run(self, n, T, rng):
        x = rng.integers(0, 2, size=(n, T)).astype(np.int64)
        return x, running_parity(x)
