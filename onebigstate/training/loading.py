"""A trained run back in Python, in one line.

    import onebigstate
    model = onebigstate.load("runs/mqar")            # the last checkpoint's model, in eval mode
    run = onebigstate.training.load_run("runs/mqar") # model, task, config and step together
    run.task.test_set()                              # the held-out set the run was evaluated on

The path may be a run folder (its ``checkpoints/last``), a ``checkpoints`` folder or one
checkpoint folder. The files are checked against their recorded sizes and checksums first
(``read_checkpoint``), and the model is built by the run's task, as ``obs eval`` builds it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from onebigstate.tasks.base import Task
from onebigstate.training.checkpoint import read_checkpoint
from onebigstate.training.config import RunConfig
from onebigstate.training.trainer import model_from_checkpoint


@dataclass
class LoadedRun:
    """What a checkpoint holds, rebuilt: the model (eval mode) and the task that feeds it."""

    model: nn.Module
    task: Task
    config: RunConfig
    step: int                 # the training step the checkpoint was written at
    path: Path                # the checkpoint folder read


def load_run(path: str | Path, device: str | None = None) -> LoadedRun:
    """The run's model with its trained weights, its task and config. ``device`` overrides the
    run's own (``train.device``), e.g. ``"cpu"`` for a run trained on a GPU."""
    ckpt = read_checkpoint(path)
    task, model = model_from_checkpoint(ckpt, device=device)
    return LoadedRun(model.eval(), task, ckpt.config, ckpt.step, ckpt.path)
