"""MQAR as a :class:`Task`: batches generated in numpy per step, accuracy on the answers only.

Params are :class:`MQARConfig` (vocab_size, seq_len, num_kv_pairs, power_a,
random_non_queries). Batch ``step`` of a run with data seed ``s`` is
``generate_mqar(params, batch_size, batch_seed(s, step))``; the held-out set is
``generate_mqar(params, test_size, heldout_seed(s))``.
"""
from __future__ import annotations

import torch

from onebigstate.tasks.base import TaskConfig, batch_seed, heldout_seed
from onebigstate.tasks.common import LabelledTokenTask
from onebigstate.tasks.mqar import MQARConfig, generate_mqar
from onebigstate.tasks.registry import register_task


@register_task("mqar", MQARConfig)
class MQARTask(LabelledTokenTask):
    """Scored at the answer positions only (forward, loss and metrics from LabelledTokenTask):
    about 1 position in 8 carries an answer and the vocabulary is large, so the head is
    applied there alone."""

    def __init__(self, cfg: TaskConfig, params: MQARConfig):
        super().__init__(cfg, params)
        self.vocab_size = params.vocab_size
        self.n_out = params.vocab_size

    def train_batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return generate_mqar(self.params, batch_size, batch_seed(self.cfg.seed, step))

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return generate_mqar(self.params, self.cfg.test_size, heldout_seed(self.cfg.seed))

    def generate(self, n: int, rng, test: bool):
        """``n`` sequences from a seed drawn from ``rng``; one group ("all") at the answers."""
        x, y = generate_mqar(self.params, n, int(rng.integers(2**31)))
        groups = torch.where(y != -100, 0, -1)
        return x.numpy(), y.numpy(), groups.numpy()
