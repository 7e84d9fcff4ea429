"""Start and end process groups: ``torchrun`` runs, and P local processes for tests and benchmarks.

    from onebigstate.distributed.launch import run_local
    results = run_local(fn, 4, arg)      # fn(rank, world, arg) in 4 gloo processes, results by rank

Under ``torchrun`` (``WORLD_SIZE`` set in the environment) :func:`init_from_env` joins the group
the launcher describes: ``nccl`` when the process has a CUDA device, ``gloo`` otherwise.
"""
from __future__ import annotations

import os
import pickle
import queue as _queue
import socket
import traceback
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# How long a collective waits for a rank that stopped before the job fails with an error.
# (a rank writing a large checkpoint or evaluating keeps the others waiting: torch's own default)
DEFAULT_TIMEOUT_S = 1800
# local test processes: a dead rank should fail the call sooner
LOCAL_TIMEOUT_S = 120


class LoopbackUnavailable(RuntimeError):
    """Local processes cannot reach each other over 127.0.0.1 (no loopback networking here)."""


def world() -> tuple[int, int]:
    """(rank, world size): (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0, and outside a process group: the process that writes the run folder
    (before the group is joined, the rank torchrun gave the process)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def backend_for(device: torch.device | str) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_from_env(device: torch.device | str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (once); returns (rank, world size)."""
    if not dist.is_initialized():
        if torch.device(device).type == "cuda":
            torch.cuda.set_device(local_device(device))
        dist.init_process_group(backend_for(device), timeout=timedelta(seconds=timeout_s))
    return world()


def finish() -> None:
    """Leave the process group joined by :func:`init_from_env` (at the end of a torchrun process:
    a group left alive aborts the interpreter's exit in gloo's threads; a rarer abort at exit that
    remains is handled where the worker exits, ``cli/main.py``)."""
    if launched_by_torchrun() and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device | str) -> torch.device:
    """The device of this process under torchrun: ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per
    process); an explicit index would put every rank on one GPU and is refused."""
    device = torch.device(device)
    if device.type != "cuda" or not launched_by_torchrun():
        return device
    if device.index is not None:
        raise ValueError(f"train.device={device} names one GPU for every process; use train.device=cuda (or auto): "
                         f"each process takes the GPU of its LOCAL_RANK")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (raises LoopbackUnavailable without loopback)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    except OSError as err:
        raise LoopbackUnavailable(f"cannot bind a TCP socket on 127.0.0.1 ({err}): gloo process groups "
                                  f"need loopback networking") from None


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, queue, timeout_s: float) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s))
        try:
            # pickled here: tensors put on the queue as they are travel as shared memory that
            # this process takes with it when it ends first
            queue.put((rank, True, pickle.dumps(fn(rank, world_size, *args))))
        finally:
            dist.destroy_process_group()
    except BaseException as err:          # the parent raises it, with the rank's traceback
        queue.put((rank, False, f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))


def run_local(fn: Callable[..., Any], world_size: int, *args, timeout_s: float = LOCAL_TIMEOUT_S) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` fresh gloo processes on this machine
    (one intra-op thread each); returns their results by rank. ``fn`` must be importable (a
    module-level function) and its results picklable. A rank that raises fails the whole call
    with its traceback."""
    port = free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, world_size, port, fn, args, queue, timeout_s), daemon=False)
             for r in range(world_size)]
    for p in procs:
        p.start()
    results, errors = {}, {}
    while len(results) + len(errors) < world_size:
        try:
            rank, ok, value = queue.get(timeout=1.0)
        except _queue.Empty:
            # a rank killed from outside reports nothing: its exit code says what happened
            for r, p in enumerate(procs):
                if p.exitcode not in (None, 0) and r not in results and r not in errors:
                    errors[r] = f"process exited with code {p.exitcode} before reporting a result"
            continue
        if ok:
            results[rank] = pickle.loads(value)
        else:
            errors[rank] = value
    for p in procs:
        p.join(timeout=timeout_s)
        if p.is_alive():
            p.kill()
    if errors:
        rank = min(errors)
        raise RuntimeError(f"rank {rank} of {world_size} failed: {errors[rank]}")
    return [results[r] for r in range(world_size)]
