"""The task interface every training run and benchmark uses.

A task owns its data and its loss. Inputs are token ids ``[B, T]`` int64 (the task sets
``vocab_size``) or features ``[B, T, d_input]`` (the task sets ``d_input``); the model outputs
``[B, T, n_out]``. Training batches are a pure function of ``(seed, step)``, so a resumed run
sees exactly the batches an uninterrupted one would; the test set comes from a separate seed
range, so no training batch is a test sequence.

    task = build_task(TaskConfig(name="mqar", params={"seq_len": 64, "num_kv_pairs": 8}))
    x, y = task.train_batch(step=0, batch_size=32)
    out, y, _ = task.forward(model, x, y)     # MQAR: logits at the answer positions only
    loss = task.loss(out, y)
    task.metrics(out, y)    # {"loss": ..., "accuracy": ...}

Tasks register themselves by name with their params' config class
(:mod:`onebigstate.tasks.registry`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import Field

import onebigstate.baselines  # noqa: F401  (registers the baseline mixers)
from onebigstate.config import StrictModel

if TYPE_CHECKING:
    from onebigstate.nets.stack import ModelConfig, SeqModel

# Train batches use seeds below this; test sets use seeds at or above it.
TEST_SEED_OFFSET = 1_000_000


class TaskConfig(StrictModel):
    """Which task, its seed, the size of its held-out set, and the task's own typed params."""

    name: str = Field("mqar", description="registered task: see onebigstate.tasks.registry.TASKS")
    seed: int = Field(0, ge=0, description="data seed: train batches from (seed, step), test set from seed")
    test_size: int = Field(1000, ge=1, description="held-out sequences evaluated at every eval")
    params: dict[str, Any] = Field(default_factory=dict, description="the task's own config keys")


def batch_seed(seed: int, step: int) -> int:
    """The generator seed of training batch ``step``: a hash of (seed, step) in [0, TEST_SEED_OFFSET)."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] % TEST_SEED_OFFSET)


def heldout_seed(seed: int) -> int:
    """The generator seed of the held-out set: from the range no training batch uses."""
    return TEST_SEED_OFFSET + seed


class Task(ABC):
    """A source of training batches, a held-out set, a loss and metrics.

    Exactly one of ``vocab_size`` (token inputs) or ``d_input`` (feature inputs) is set.
    """

    vocab_size: int | None = None
    d_input: int | None = None
    n_out: int

    def __init__(self, cfg: TaskConfig, params: StrictModel):
        self.cfg = cfg
        self.params = params

    @property
    def seq_len(self) -> int:
        """Steps of one training sequence, where the task fixes them (0 where it does not): the length
        at which state sizes are counted (attention's KV cache grows with it)."""
        return int(getattr(self.params, "seq_len", 0) or 0)

    def build_model(self, cfg: "ModelConfig") -> "SeqModel":
        """The model for this task's inputs; tasks with their own encoder (see-and-hear) override it."""
        from onebigstate.nets.stack import build_model
        return build_model(cfg, self.n_out, vocab_size=self.vocab_size, d_input=self.d_input)

    def forward(self, model: "SeqModel", inputs: torch.Tensor, labels: torch.Tensor,
                states: list | None = None, *, in_place: bool = False) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Run the model on a batch: (outputs, labels, states), the pair :meth:`loss` and
        :meth:`metrics` take. The default runs the whole model; a task that scores only a few
        positions (MQAR) may apply the output head there alone and return those labels.
        ``in_place``: the model may advance ``states`` rather than copy them (lifelong training).
        """
        outputs, states = model(inputs, states, in_place=in_place)
        return outputs, labels, states

    @abstractmethod
    def train_batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of training step ``step``; the same for the same (seed, step)."""

    @abstractmethod
    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of the held-out set: ``cfg.test_size`` sequences."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scalar loss to minimise, outputs [B, T, n_out]."""

    @abstractmethod
    def metrics(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Metrics of one batch, e.g. ``{"loss": 0.12, "accuracy": 0.97}``."""

    def metric_counts(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[float, float]]:
        """Per-metric (sum, count) of one batch, so an evaluation over many batches is exact.

        The default weighs every batch's :meth:`metrics` by its number of sequences.
        """
        n = float(outputs.shape[0])
        return {k: (v * n, n) for k, v in self.metrics(outputs, labels).items()}
