"""Data parallel training: P processes, each a share of the global batch, one set of weights.

The trainer (``training/trainer.py``) uses these pieces when it runs inside a process group
(``torchrun --nproc-per-node P -m onebigstate.cli.main train ...``, or ``obs train --nproc P``):

- :class:`TaskStep` puts the task's forward and loss in one module, so that
  ``DistributedDataParallel`` sees the whole step (tasks call ``model.hidden`` and
  ``model.head``, not ``model(...)``) and averages the gradients over the ranks;
- :func:`local_batch` gives each rank its rows of the global batch: batch ``i`` is a pure function
  of (task seed, i) on every rank, so the P shares together are exactly a one-process batch;
- :func:`mean_over_ranks` and :func:`sum_over_ranks` make the logged metrics those of the global
  batch, so every rank takes the same decisions (a NaN loss stops every rank together).

When every share holds as many scored entries (MQAR, retention, every task with a fixed number
of queries per sequence), the mean loss of the global batch is the mean of the ranks' mean
losses, so the averaged gradient equals the one-process gradient of the same global batch up to
float rounding (``tests/test_distributed.py`` checks the weights after training in float64).
Where the count varies per sequence (see-and-hear's queries, SAYCam's masks) each rank's mean
is weighted equally, which differs from one process's mean. OBS's load-balance loss
(``balance_cost``, on in the default layer) multiplies the batch's node loads by its address
probabilities: :func:`wrap` hands the layers the process group, so that the loads are the whole
batch's and the averaged loss and gradient equal one process's (``load_balance_loss``).
Every rank has the same seed: a model with dropout would draw the same masks on every share.
"""
from __future__ import annotations

import inspect

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class TaskStep(nn.Module):
    """One training forward: the task's outputs and loss for a batch, as one module call."""

    def __init__(self, task, model: nn.Module):
        super().__init__()
        self.task = task
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor, states, in_place: bool = False):
        """-> (loss, task loss, aux loss, outputs, labels, new states)."""
        out, y, new_states = self.task.forward(self.model, x, y, states, in_place=in_place)
        task_loss = self.task.loss(out, y)
        aux = self.model.aux_loss()
        return task_loss + aux, task_loss, aux, out, y, new_states


def wrap(task, model: nn.Module, world: int) -> nn.Module:
    """The step module; inside a process group of more than one rank, wrapped in DDP (which
    broadcasts rank 0's weights at once, so every rank starts from the same ones)."""
    step = TaskStep(task, model)
    if world == 1:
        return step
    for layer in model.modules():
        if hasattr(layer, "balance_group"):
            layer.balance_group = dist.group.WORLD
    device_ids = [model.head.weight.device.index] if model.head.weight.is_cuda else None
    # Every parameter of the OBS stack takes part in every step (the chain gate's row of w_out
    # gets a zero gradient in windows without continuous inputs); a model that leaves one out
    # gets DDP's error naming the parameter at its second step.
    # No buffer sync before each forward: OBS's S_0 buffer is a function of the seed, the same on
    # every rank, and DDP would send rank 0's (N^2 floats) to every rank every step. torch 2.13
    # names the switch forward_sync_buffers (broadcast_buffers is deprecated); 2.11 has the old one.
    params = inspect.signature(DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DistributedDataParallel(step, device_ids=device_ids, **no_sync)


def check_batch(batch_size: int, world: int) -> None:
    from onebigstate.config import ConfigError
    if batch_size % world:
        raise ConfigError(f"train.batch_size={batch_size} cannot be shared equally by {world} processes: choose a "
                         f"batch size divisible by the process count (it is the global batch)")


def local_batch(x: torch.Tensor, y: torch.Tensor, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s rows of a global batch (streams ``rank*b .. (rank+1)*b - 1``)."""
    b = x.shape[0] // world
    return x[rank * b:(rank + 1) * b], y[rank * b:(rank + 1) * b]


def sum_over_ranks(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Elementwise sums over every rank (float64); the values themselves outside a group."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def mean_over_ranks(values: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """Each value averaged over the ranks (every rank reports the same keys, in the same order)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    keys = list(values)
    sums = sum_over_ranks([values[k] for k in keys], device)
    return {k: s / world for k, s in zip(keys, sums)}


def gather_to_main(obj, rank: int, world: int) -> list | None:
    """Every rank's ``obj`` on rank 0 (a list by rank), None on the others."""
    if world == 1:
        return [obj]
    out = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out
