"""What the synthetic token tasks share: labels only at scored positions, grouped held-out sets.

Every task here produces ``inputs [B, T]`` int64 tokens and ``labels [B, T]`` int64 holding the
target token where the model is scored and ``IGNORE`` (-100) elsewhere, exactly like MQAR; the
model's head is applied at the scored positions only (:meth:`LabelledTokenTask.forward`).

Tasks whose results are reported per group (retention: per query distance; continual: per
phase; state tracking: per position bucket) also give ``groups [B, T]`` int64 beside the labels,
an index into ``group_names`` at every scored position, through :meth:`LabelledTokenTask.grouped_test_set`.
The benchmark evaluates those with :func:`onebigstate.bench.evaluate.grouped_accuracy`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from onebigstate.tasks.base import Task, TaskConfig, batch_seed, heldout_seed
from onebigstate.tasks.mqar import IGNORE, answer_accuracy

__all__ = ["IGNORE", "Grouped", "LabelledTokenTask"]


@dataclass
class Grouped:
    """A held-out set with a group id at every scored position (``-1`` where unscored)."""

    inputs: torch.Tensor     # [B, T] int64
    labels: torch.Tensor     # [B, T] int64, IGNORE where unscored
    groups: torch.Tensor     # [B, T] int64, index into names, -1 where unscored
    names: list[str]


class LabelledTokenTask(Task):
    """A token task scored at the positions whose label is not ``IGNORE``.

    Subclasses implement :meth:`generate` ``(n, rng) -> (inputs, labels, groups)`` and set
    ``vocab_size``, ``n_out`` and ``group_names``; train batches and the held-out set follow
    from the seeds (``batch_seed(seed, step)`` and ``heldout_seed(seed)``).
    """

    group_names: list[str] = ["all"]

    def __init__(self, cfg: TaskConfig, params):
        super().__init__(cfg, params)

    # ---- data ------------------------------------------------------------------------
    def generate(self, n: int, rng: np.random.Generator, test: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` sequences: (inputs [n, T], labels [n, T], groups [n, T]) as int64 arrays.

        ``test`` selects the held-out form (e.g. the longer test length of state tracking).
        """
        raise NotImplementedError

    def train_batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = self.generate(batch_size, np.random.default_rng(batch_seed(self.cfg.seed, step)), test=False)
        return torch.from_numpy(x), torch.from_numpy(y)

    def grouped_test_set(self) -> Grouped:
        x, y, g = self.generate(self.cfg.test_size, np.random.default_rng(heldout_seed(self.cfg.seed)), test=True)
        return Grouped(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(g), list(self.group_names))

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.grouped_test_set()
        return g.inputs, g.labels

    # ---- model, loss, metrics ----------------------------------------------------------
    def forward(self, model, inputs: torch.Tensor, labels: torch.Tensor,
                states: list | None = None, *, in_place: bool = False) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Outputs at the scored positions only: (outputs [Q, n_out], labels [Q], states)."""
        if not hasattr(model, "hidden"):
            return super().forward(model, inputs, labels, states, in_place=in_place)
        h, states = model.hidden(inputs, states, in_place=in_place)
        mask = labels != IGNORE
        return model.head(h[mask]), labels[mask], states

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]).float(), labels.reshape(-1),
                               ignore_index=IGNORE)

    def metrics(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {k: s / max(n, 1.0) for k, (s, n) in self.metric_counts(outputs, labels).items()}

    def metric_counts(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[float, float]]:
        outputs = outputs.reshape(-1, outputs.shape[-1])
        labels = labels.reshape(-1)
        correct, total = answer_accuracy(outputs, labels)
        mask = labels != IGNORE
        loss_sum = F.cross_entropy(outputs[mask].float(), labels[mask], reduction="sum")
        return {"loss": (float(loss_sum), float(total)), "accuracy": (float(correct), float(total))}


def distinct_rows(rng: np.random.Generator, n: int, pool: int, k: int, offset: int = 0) -> np.ndarray:
    """``n`` rows of ``k`` distinct integers from ``offset .. offset + pool - 1`` [n, k]."""
    if k > pool:
        raise ValueError(f"cannot draw {k} distinct values from a pool of {pool}")
    return np.argsort(rng.random((n, pool)), axis=1)[:, :k] + offset
