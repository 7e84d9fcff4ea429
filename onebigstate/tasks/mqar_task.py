"""MQAR as a :class:`Task`: batches generated in numpy per step, accuracy on the answers only.

Params are :class:`MQARConfig` (vocab_size, seq_len, num_kv_pairs, power_a,
random_non_queries). Batch ``step`` of a run with data seed ``s`` is
``generate_mqar(params, batch_size, batch_seed(s, step))``; the held-out set is
``generate_mqar(params, test_size, heldout_seed(s))``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from onebigstate.tasks.base import Task, TaskConfig, heldout_seed, batch_seed
from onebigstate.tasks.mqar import IGNORE, MQARConfig, answer_accuracy, generate_mqar
from onebigstate.tasks.registry import register_task


@register_task("mqar", MQARConfig)
class MQARTask(Task):
    def __init__(self, cfg: TaskConfig, params: MQARConfig):
        super().__init__(cfg, params)
        self.vocab_size = params.vocab_size
        self.n_out = params.vocab_size

    def train_batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return generate_mqar(self.params, batch_size, batch_seed(self.cfg.seed, step))

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return generate_mqar(self.params, self.cfg.test_size, heldout_seed(self.cfg.seed))

    def forward(self, model, inputs: torch.Tensor, labels: torch.Tensor,
                states: list | None = None) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Logits at the answer positions only: (outputs [Q, V], labels [Q], states).

        Only about 1 position in 8 carries an answer, and the output vocabulary is large, so the
        head is applied there alone (``model.hidden`` then ``model.head``).
        """
        if not hasattr(model, "hidden"):
            return super().forward(model, inputs, labels, states)
        h, states = model.hidden(inputs, states)
        mask = labels != IGNORE
        return model.head(h[mask]), labels[mask], states

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the answer positions only (labels != IGNORE)."""
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]).float(), labels.reshape(-1),
                               ignore_index=IGNORE)

    def metrics(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {k: s / max(n, 1.0) for k, (s, n) in self.metric_counts(outputs, labels).items()}

    def metric_counts(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[float, float]]:
        correct, total = answer_accuracy(outputs, labels)
        mask = labels != IGNORE
        loss_sum = F.cross_entropy(outputs[mask].float(), labels[mask], reduction="sum")
        return {"loss": (float(loss_sum), float(total)), "accuracy": (float(correct), float(total))}
