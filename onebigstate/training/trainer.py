"""The training loop: one run of a task and a model, resumable exactly.

    cfg = load_config(RunConfig, "configs/mqar_64_8.yaml", ["train.steps=500"])
    results = train(cfg, Path("runs/mqar"))                     # a fresh run
    results = train(cfg, Path("runs/mqar"), resume=read_checkpoint("runs/mqar"))

A run folder holds:

    config.yaml       the resolved config
    metrics.jsonl     one JSON record per line: {"step", "kind": "train", "loss", ...} every
                      train.log_every steps (means over those steps) and {"step", "kind": "eval",
                      ...} at every held-out evaluation. No wall-clock values, so a resumed run
                      writes the same file, byte for byte, as an uninterrupted one
    tb/               TensorBoard events (the same metrics, plus tokens per second)
    checkpoints/      see :mod:`onebigstate.training.checkpoint`
    results.json      at the end: final held-out metrics, parameter count, state size, wall time

Exact resumption rests on: batch ``i`` is a pure function of (task seed, i); the model's
weights, the optimizer, the LR schedule, the RNG states, the carried states (lifelong runs)
and the running sums of the current logging window are all in the checkpoint; and the
metrics a killed run wrote after its last checkpoint are dropped when it resumes.

A run folder holds one run: its config.yaml must name the same task and model as the config
(or the checkpoint) written into it (:func:`check_run_folder`). Everything a resume needs is
checked and loaded before the first file is written, and every rewrite of a file (config.yaml,
the trimming of metrics.jsonl, results.json) is atomic, so a refusal or a kill loses nothing.

The trainer owns the process's RNGs for the run: it seeds them from ``train.seed`` at the start
and restores them from the checkpoint on resumption.

Inside a process group (``torchrun``, ``obs train --nproc P``) the run is data parallel
(:mod:`onebigstate.distributed.data_parallel`): ``train.batch_size`` is the global batch, each
rank trains on its share under DDP, the logged metrics are those of the global batch, rank 0
alone writes the run folder, and checkpoints hold the global batch's carried states, so a run
resumes with any process count that divides the batch. With ``train.shared_state`` the ranks'
streams share one lifelong state (:mod:`onebigstate.distributed.shared_state`).
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from onebigstate.config import ConfigError, load_config
from onebigstate.distributed import data_parallel as dp
from onebigstate.distributed.launch import init_from_env, launched_by_torchrun, local_device, world
from onebigstate.distributed.streams import global_states, local_states
from onebigstate.files import atomic_write_text
from onebigstate.model.layer import NonFiniteInput
from onebigstate.nets.stack import SeqModel, count_params
from onebigstate.tasks.base import Task
from onebigstate.tasks.registry import build_task
from onebigstate.training.checkpoint import (Checkpoint, CheckpointError, check_same_run, detach_states,
                                             load_model_weights, read_checkpoint, save_checkpoint, set_rng_states)
from onebigstate.training.config import RunConfig
from onebigstate.training.optim import build_optimizer, build_scheduler

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
TB_DIR = "tb"
CKPT_DIR = "checkpoints"


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite; the run stopped, checkpoints untouched."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name} but CUDA is not available here; use train.device=cpu or auto")
    return device


def build_run(cfg: RunConfig) -> tuple[Task, SeqModel]:
    """The task and the model of a run, the model on its device and dtype (weights from the current RNG)."""
    task = build_task(cfg.task)
    model = task.build_model(cfg.model)
    return task, model.to(device=resolve_device(cfg.train.device), dtype=getattr(torch, cfg.train.dtype))


def model_from_checkpoint(ckpt: Checkpoint, device: str | None = None) -> tuple[Task, SeqModel]:
    """Rebuild the task and model a checkpoint was written by, with its weights."""
    cfg = ckpt.config
    if device is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": device})})
    task, model = build_run(cfg)
    load_model_weights(ckpt, model)
    return task, model


def _to_device(x: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)


@torch.no_grad()
def evaluate(model: SeqModel, task: Task, batch_size: int, test_set: tuple | None = None,
             ranks: tuple[int, int] | None = None) -> dict[str, float]:
    """Metrics over the task's whole held-out set (each sequence from a fresh state).

    ``ranks=(rank, P)`` (the trainer in a process group): each rank evaluates every P-th batch and
    the sums are added up over the ranks, so every rank must call it. Default ``(0, 1)``: this
    process evaluates every batch on its own."""
    inputs, labels = test_set if test_set is not None else task.test_set()
    device, dtype = model.head.weight.device, model.head.weight.dtype
    rank, n_ranks = ranks if ranks is not None else (0, 1)
    was_training = model.training
    model.eval()
    sums: dict[str, list[float]] = {}
    try:
        for start in range(rank * batch_size, inputs.shape[0], n_ranks * batch_size):
            x = _to_device(inputs[start:start + batch_size], device, dtype)
            # [:2] drops the final states at once; kept in a name they stayed alive through the
            # next batch's forward (OBS at large N: a dense N^2 per sequence)
            out, y = task.forward(model, x, labels[start:start + batch_size].to(device))[:2]
            for k, (s, n) in task.metric_counts(out, y).items():
                acc = sums.setdefault(k, [0.0, 0.0])
                acc[0] += s
                acc[1] += n
    finally:
        model.train(was_training)
    if n_ranks > 1:
        sums = _add_rank_sums(sums, n_ranks)
    return {k: s / n if n else float("nan") for k, (s, n) in sums.items()}


def _add_rank_sums(sums: dict[str, list[float]], n_ranks: int) -> dict[str, list[float]]:
    """Every rank's metric sums added up, in rank order (a rank may have had no batch)."""
    every: list = [None] * n_ranks
    torch.distributed.all_gather_object(every, sums)
    total: dict[str, list[float]] = {}
    for part in every:
        for k, (s, n) in part.items():
            acc = total.setdefault(k, [0.0, 0.0])
            acc[0] += s
            acc[1] += n
    return total


def state_size_of(model: SeqModel, task: Task) -> dict[str, int]:
    return model.state_size(task.seq_len)


class _Window:
    """Running sums of the training metrics over the current logging window."""

    def __init__(self, sums: dict[str, float] | None = None, n: int = 0):
        self.sums = dict(sums or {})
        self.n = n

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1

    def means(self) -> dict[str, float]:
        return {k: v / self.n for k, v in self.sums.items()}

    def state(self) -> dict:
        return {"sums": dict(self.sums), "n": self.n}


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _keep_metrics_until(path: Path, step: int) -> None:
    """Drop the records a killed run wrote after its last checkpoint (and a torn last line).

    The file is replaced atomically: a kill while it is rewritten leaves every record."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("step", 0) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def check_run_folder(run_dir: Path, cfg: RunConfig, resume: Checkpoint | None = None) -> None:
    """Refuse to write ``cfg``'s run (continued from ``resume``) into ``run_dir`` if the folder's
    config.yaml names another task or model.

    A run folder holds one run: train.* keys may change (a run continued for longer, at
    another lr), the task and the model may not."""
    saved = run_dir / CONFIG_FILE
    if not saved.exists():
        return
    name, source = ("checkpoint", f"checkpoint {resume.path}") if resume is not None else ("config", "the config")
    diff = load_config(RunConfig, saved).identity_diff(cfg, "run folder", name)
    if diff:
        raise ConfigError(f"{run_dir} holds another run: its {CONFIG_FILE} names another task or model than "
                          f"{source}: " + "; ".join(diff[:10]) + "; write this run into another folder (--out)")


def check_resume(resume: Checkpoint, cfg: RunConfig) -> None:
    """What a checkpoint must agree with before a run continues from it, beyond loading: the
    same task and model, and for lifelong runs the batch the carried states were made with."""
    check_same_run(resume, cfg)
    saved_batch, batch = resume.config.train.batch_size, cfg.train.batch_size
    if cfg.train.carry_state and resume.has_states and saved_batch != batch:
        raise ConfigError(f"train.batch_size={batch}, but checkpoint {resume.path} carries the states of "
                          f"{saved_batch} streams (train.carry_state=true continues the same streams): resume "
                          f"with train.batch_size={saved_batch} (or with train.carry_state=false, which "
                          f"carries no states)")


def train(cfg: RunConfig, run_dir: str | Path, resume: Checkpoint | None = None,
          log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or continue) training; returns what ``results.json`` holds."""
    tc = cfg.train
    run_dir = Path(run_dir)
    device, dtype = resolve_device(tc.device), getattr(torch, tc.dtype)
    if launched_by_torchrun():
        device = local_device(device)
        init_from_env(device)
    rank, world_size = world()
    main = rank == 0                       # the process that writes the run folder
    log = (log or (lambda msg: tqdm.write(msg))) if main else (lambda msg: None)
    # Everything is checked before the first file of the run folder is written (see below).
    check_run_folder(run_dir, cfg, resume)
    if resume is not None:
        check_resume(resume, cfg)
    # Data parallel over the group's ranks, unless S is sharded over them: then every rank runs
    # the same streams (model parallel) and the gradients are equal on every rank without DDP.
    sharded = _sharded_state(cfg, world_size)
    rank, n_ranks = (0, 1) if sharded else (rank, world_size)
    dp.check_batch(tc.batch_size, n_ranks)
    local_batch_size = tc.batch_size // n_ranks
    if tc.carry_state and n_ranks > 1:
        _check_carried_mixers(model_mixers(cfg))
    if tc.shared_state and n_ranks == 1:
        raise ConfigError("train.shared_state=true shares the big state between processes: train with --nproc P "
                          "(torchrun), P >= 2")

    if tc.threads:
        torch.set_num_threads(tc.threads)
    random.seed(tc.seed)
    np.random.seed(tc.seed)
    torch.manual_seed(tc.seed)
    task, model = build_run(cfg)
    optimizer = build_optimizer(model, tc, log=log)
    scheduler = build_scheduler(optimizer, tc)
    n_params = count_params(model)

    step, states = 0, None
    window, elapsed, last_eval, last_ckpt = _Window(), 0.0, None, None
    if tc.init_from is not None and resume is None:
        init = read_checkpoint(tc.init_from)
        load_model_weights(init, model)
        log(f"initialised the weights from {init.path} (step {init.step} of its run)")
    if resume is not None:
        load_model_weights(resume, model)
        saved = resume.trainer_state()
        try:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{resume.path}/trainer.pt does not fit this run's optimizer: {err}") from None
        set_rng_states(saved["rng"])
        step = int(saved["step"])
        t = saved["trainer"]
        window, elapsed, last_eval = _Window(t["window"]["sums"], t["window"]["n"]), t["elapsed_s"], t["last_eval"]
        if tc.carry_state:
            if resume.has_states:
                states = local_states(resume.states(device), rank, n_ranks) if n_ranks > 1 else resume.states(device)
            else:
                log(f"note: {resume.path} holds no carried states; the streams start afresh")
        last_ckpt = resume.path
        log(f"resuming {run_dir} from {resume.path} (step {step} of {tc.steps})")

    # Validated and loaded: from here on the run folder is written (by rank 0 alone).
    metrics_path = run_dir / METRICS_FILE
    writer = None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG_FILE, cfg.resolved().to_yaml())
        if resume is None:
            atomic_write_text(metrics_path, "")
        else:
            _keep_metrics_until(metrics_path, step)
        # Hide the events a killed run logged after its last checkpoint (all of them, when a run
        # stopped before its first checkpoint starts again).
        purge = step + 1 if resume is not None else (0 if (run_dir / TB_DIR).exists() else None)
        writer = SummaryWriter(str(run_dir / TB_DIR), purge_step=purge)
    shared = _shared_state_sync(tc, model, states, local_batch_size)
    if shared is not None:
        states = shared.states
    step_module = dp.wrap(task, model, n_ranks)
    where = f"{device}" if n_ranks == 1 else f"{n_ranks} processes ({device}, {local_batch_size} streams each)"
    if sharded:
        where = f"{world_size} processes ({device}), the big state split by columns over them"
    log(f"run {run_dir}: task {cfg.task.name}, model {cfg.model.name}, {n_params:,} parameters, "
        f"{tc.steps} steps of batch {tc.batch_size} on {where}")

    test_set = None

    def record(rec: dict) -> None:
        if not main:
            return
        with open(metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        for k, v in rec.items():
            if k not in ("step", "kind") and isinstance(v, (int, float)):
                writer.add_scalar(f"{rec['kind']}/{k}", v, rec["step"])

    def run_eval(at: int) -> dict:
        nonlocal test_set
        if test_set is None:
            test_set = task.test_set()
        metrics = evaluate(model, task, tc.eval_batch_size, test_set, ranks=(rank, n_ranks))
        record({"step": at, "kind": "eval", **metrics})
        return {"step": at, **metrics}

    def checkpoint(at: int, seg_start: float) -> Path:
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingDiverged(f"parameters {bad[:5]} hold NaN/inf after step {at}: training stopped "
                                   f"before writing a checkpoint; {_last_good(last_ckpt)}")
        trainer_state = {"window": window.state(), "elapsed_s": elapsed + time.perf_counter() - seg_start,
                         "last_eval": last_eval}
        saved_states = states if tc.carry_state else None
        if saved_states is not None and n_ranks > 1:      # the global batch's states, as one process has them
            per_rank = dp.gather_to_main(saved_states, rank, n_ranks)
            saved_states = global_states(per_rank) if main else None
        if not main:
            return run_dir / CKPT_DIR
        return save_checkpoint(run_dir / CKPT_DIR, at, cfg, model, optimizer, scheduler, trainer_state,
                               states=saved_states, keep=tc.keep_checkpoints)

    params = [p for p in model.parameters() if p.requires_grad]
    seg_start = time.perf_counter()
    bar = tqdm(total=tc.steps, initial=step, disable=not (tc.progress and main), desc="train", dynamic_ncols=True)
    tokens, tick = 0, time.perf_counter()
    try:
        model.train()
        while step < tc.steps:
            x, y = task.train_batch(step, tc.batch_size)
            if n_ranks > 1:                     # this rank's streams of the global batch
                x, y = dp.local_batch(x, y, rank, n_ranks)
            x, y = _to_device(x, device, dtype), y.to(device)
            # lifelong: the carried states are advanced in place (the old ones are not read again)
            try:
                loss, task_loss, aux, out, y, new_states = step_module(
                    x, y, states if tc.carry_state else None, in_place=tc.carry_state)
            except NonFiniteInput as err:       # weights or activations overflowed: divergence
                raise TrainingDiverged(f"the forward pass of step {step + 1} fed NaN or inf to an OBS layer "
                                       f"({err}): training stopped; {_last_good(last_ckpt)}") from None
            with torch.no_grad():
                batch_metrics = _batch_metrics(task, out.detach(), y, n_ranks, device)
            values = dp.mean_over_ranks({"loss": loss.item(), "task_loss": task_loss.item(), "aux_loss": aux.item()},
                                        device)
            loss_value = values["loss"]
            if not _finite(loss_value):
                raise TrainingDiverged(f"loss is {loss_value} at step {step + 1} (task loss {values['task_loss']}, "
                                       f"aux loss {values['aux_loss']}): training stopped; {_last_good(last_ckpt)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = tc.grad_clip if tc.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            if not _finite(grad_norm):
                raise TrainingDiverged(f"gradient norm is {grad_norm} at step {step + 1}: training stopped; "
                                       f"{_last_good(last_ckpt)}")
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            if tc.carry_state:
                states = detach_states(new_states)
            # not kept into the next step's forward: at large N a dense N^2 per sequence
            del new_states
            step += 1
            ckpt_due = (tc.ckpt_every and step % tc.ckpt_every == 0) or step == tc.steps
            if shared is not None and (step % tc.sync_every == 0 or ckpt_due):
                # a checkpoint always holds synced states, so a resume starts from a sync point
                shared.states = states
                states = shared.sync()
            batch_metrics.pop("loss", None)
            window.add({**values, "grad_norm": grad_norm, **batch_metrics})
            tokens += x.shape[0] * x.shape[1] * n_ranks
            bar.update(1)

            if step % tc.log_every == 0:
                now = time.perf_counter()
                if writer is not None:
                    writer.add_scalar("train/tokens_per_s", tokens / max(now - tick, 1e-9), step)
                tokens, tick = 0, now
                means = window.means()
                record({"step": step, "kind": "train", "lr": lr, **means})
                bar.set_postfix({k: f"{v:.4g}" for k, v in means.items() if k in ("loss", "accuracy")})
                window = _Window()
            if tc.eval_every and step % tc.eval_every == 0:
                last_eval = run_eval(step)
                bar.set_postfix({f"eval_{k}": f"{v:.4g}" for k, v in last_eval.items() if k != "step"})
            if step == tc.steps and (last_eval is None or last_eval["step"] != step):
                last_eval = run_eval(step)
            if ckpt_due:
                last_ckpt = checkpoint(step, seg_start)
        if last_eval is None or last_eval["step"] != step:
            last_eval = run_eval(step)
    finally:
        bar.close()
        if writer is not None:
            writer.close()

    wall = elapsed + time.perf_counter() - seg_start
    metrics = {k: v for k, v in last_eval.items() if k != "step"}
    results = {"run": str(run_dir), "step": step, "task": cfg.task.name, "model": cfg.model.name,
               "metrics": metrics, "n_params": n_params, "state_size": state_size_of(model, task),
               "wall_time_s": round(wall, 3), "checkpoint": str(last_ckpt) if last_ckpt else None}
    if world_size > 1:
        results["processes"] = world_size
    if shared is not None:
        results["shared_state"] = shared.summary()
    if main:
        atomic_write_text(run_dir / RESULTS_FILE, json.dumps(results, indent=2) + "\n")
    log(f"done: step {step}, " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        + f", {wall:.1f} s; results in {run_dir / RESULTS_FILE}")
    return results


def model_mixers(cfg: RunConfig) -> list[str]:
    return [cfg.model.name] * cfg.model.n_layers


def _check_carried_mixers(mixers: list[str]) -> None:
    """Data parallel lifelong runs gather and split the carried states of OBS layers only: refused
    before the first step rather than at the first checkpoint."""
    other = sorted({m for m in mixers if m != "obs"})
    if other:
        raise ConfigError(f"train.carry_state with several processes carries the states of OBS layers only; this "
                          f"model's mixers are {other}: use train.carry_state=false or one process")


def _sharded_state(cfg: RunConfig, world_size: int) -> bool:
    """Whether the model's OBS state is split over the group's processes (``state_backend:
    sharded``); refuses what that mode does not support."""
    mixer = cfg.model.mixer if isinstance(cfg.model.mixer, dict) else {}
    if mixer.get("state_backend") != "sharded":
        return False
    if world_size == 1:
        raise ConfigError("model.mixer.state_backend=sharded splits the state over processes: train with "
                          "--nproc P (torchrun), P >= 2")
    if cfg.train.carry_state or cfg.train.shared_state:
        raise ConfigError("model.mixer.state_backend=sharded trains episodically for now (train.carry_state=false): "
                          "checkpoints of carried sharded states are not written yet")
    return True


def _batch_metrics(task: Task, out: torch.Tensor, y: torch.Tensor, n_ranks: int,
                   device: torch.device | str = "cpu") -> dict[str, float]:
    """The task's training metrics of the batch; in a process group, of the global batch (the
    ranks' sums and counts added up)."""
    if n_ranks == 1:
        return task.metrics(out, y)
    counts = task.metric_counts(out, y)
    keys = list(counts)
    totals = dp.sum_over_ranks([v for k in keys for v in counts[k]], device)
    return {k: totals[2 * i] / totals[2 * i + 1] for i, k in enumerate(keys) if totals[2 * i + 1] > 0}


def _shared_state_sync(tc, model: SeqModel, states, local_batch_size: int):
    """With ``train.shared_state``, the object that sums the ranks' writes into every copy of the
    carried states (starting them from fresh states when there are none yet); else None."""
    if not tc.shared_state:
        return None
    from onebigstate.distributed.shared_state import SharedStates
    return SharedStates.start(model, states, local_batch_size, exchange=tc.state_exchange)


def _last_good(path: Path | None) -> str:
    if path is None:
        return "no checkpoint had been written yet"
    return f"the last good checkpoint {path} is intact (resume from it, e.g. with a lower train.lr)"
