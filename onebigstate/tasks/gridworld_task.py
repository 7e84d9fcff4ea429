"""Action and outcome in a MiniGrid world as a :class:`Task` (``obs train`` runs OBS and the
baselines on the same streams).

Inputs are per-step features ``[B, T, F]`` (see :mod:`onebigstate.tasks.gridworld`), labels
``[B, T, 2]``: the front class after each action (``IGNORE`` on observation steps) and its
category (novel action at a place, action seen there before, query about a place where the
action was taken once). Exploration observations are passed to the model as continuous
inputs (OBS chains their circuits); actions and queries are discrete.

Metrics: ``accuracy`` over every labelled action, ``acc_novel``, ``acc_seen`` and
``acc_query`` per category.

    task = build_task(TaskConfig(name="gridworld", params={"explore_steps": 48, "n_queries": 8}))
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from onebigstate.tasks.base import Task, TaskConfig, batch_seed, heldout_seed
from onebigstate.tasks.gridworld import (IGNORE, N_FRONT, NOVEL, QUERY, SEEN, GridConfig, feature_dim,
                                         generate_grid, make_layout)
from onebigstate.tasks.registry import register_task

CATEGORIES = {"novel": NOVEL, "seen": SEEN, "query": QUERY}


def continuous_flags(x: torch.Tensor) -> torch.Tensor:
    """Exploration observations (is_obs and not is_query) are continuous: [B, T, F] -> [B, T] bool."""
    return (x[..., 0] > 0.5) & (x[..., 2] < 0.5)


@register_task("gridworld", GridConfig)
class GridWorldTask(Task):
    def __init__(self, cfg: TaskConfig, params: GridConfig):
        super().__init__(cfg, params)
        self.d_input = feature_dim(make_layout(params.env_id, 0).size)
        self.n_out = N_FRONT

    def _batch(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        feats, labels, _ = generate_grid(self.params, n, seed)
        return torch.from_numpy(feats), torch.from_numpy(labels)

    @property
    def seq_len(self) -> int:
        """An episode's steps: observation and action per walk step, the last observation, and the
        queries' observation-action pairs."""
        return 2 * self.params.explore_steps + 1 + 2 * self.params.n_queries

    def train_batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._batch(batch_size, batch_seed(self.cfg.seed, step))

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._batch(self.cfg.test_size, heldout_seed(self.cfg.seed))

    def forward(self, model, inputs: torch.Tensor, labels: torch.Tensor,
                states: list | None = None, *, in_place: bool = False) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Logits at the labelled (action) steps only: (outputs [P, 4], labels [P, 2], states)."""
        h, states = model.hidden(inputs, states, continuous_flags(inputs), in_place=in_place)
        mask = labels[..., 0] != IGNORE
        return model.head(h[mask]), labels[mask], states

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), labels[:, 0])

    def metrics(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {k: s / n for k, (s, n) in self.metric_counts(outputs, labels).items() if n > 0}

    def metric_counts(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[float, float]]:
        correct = (outputs.argmax(-1) == labels[:, 0]).double()
        loss_sum = F.cross_entropy(outputs.float(), labels[:, 0], reduction="sum")
        out = {"loss": (float(loss_sum), float(labels.shape[0])),
               "accuracy": (float(correct.sum()), float(labels.shape[0]))}
        for name, cat in CATEGORIES.items():
            m = labels[:, 1] == cat
            out[f"acc_{name}"] = (float(correct[m].sum()), float(m.sum()))
        return out
