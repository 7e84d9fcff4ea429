"""Run a suite's cells, resumably: train (or resume) each cell, then evaluate it.

A cell folder ``ROOT/<cell>/`` holds ``cell.json`` (which cell it is, written before training
starts), the trainer's run folder (``results.json`` when training finished) and ``bench.json``
(the cell's evaluations) or ``diverged.json`` (training stopped on a
NaN: the cell scores 0, as a failed run does in Zoology's sweeps). A cell with ``results.json``
is not trained again; one with ``bench.json`` or ``diverged.json`` is skipped entirely; a cell
with checkpoints but no ``results.json`` resumes from its last checkpoint.

Before anything runs, every cell folder that already holds a run is checked against the cell
the suite builds now (task, model and training budget, :func:`check_cell_configs`): a recipe
changed since (another default model, lr, step count) is an error naming the keys, never old
results under a new name.

``jobs > 1`` runs cells in that many worker processes, the most expensive first (steps x batch x
sequence length), so one GPU or several CPU cores stay busy: small models on a GPU are bound by
kernel launches, not by the device. Cells are independent folders, so results do not depend on
``jobs``.
"""
from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

from onebigstate.bench.cells import Cell, Suite
from onebigstate.bench.evaluate import run_eval, written_entries
from onebigstate.config import ConfigError, config_diff, load_config
from onebigstate.training.checkpoint import read_checkpoint
from onebigstate.training.config import RunConfig
from onebigstate.training.trainer import CONFIG_FILE, RESULTS_FILE, TrainingDiverged, model_from_checkpoint, train

BENCH_FILE = "bench.json"
CELL_FILE = "cell.json"
DIVERGED_FILE = "diverged.json"
IDENTITY_KEYS = ("cell", "model", "seed", "lr", "setting", "commit")
# what a cell's training budget must agree on besides its task and model (RunConfig.identity)
BUDGET_KEYS = ("steps", "batch_size", "lr", "weight_decay", "warmup", "seed")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def cell_done(cell_dir: Path) -> bool:
    return (cell_dir / BENCH_FILE).exists() or (cell_dir / DIVERGED_FILE).exists()


def cell_identity(cell_dir: Path) -> dict | None:
    """Which bench cell a run folder is (``IDENTITY_KEYS``), from its ``bench.json`` or, while it
    trains or awaits evaluation, its ``cell.json``; None for a run folder that is not a cell."""
    for name in (BENCH_FILE, CELL_FILE):
        path = cell_dir / name
        if path.exists():
            try:
                record = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not a readable cell record ({err})") from err
            return {k: record.get(k) for k in IDENTITY_KEYS}
    return None


def _measured(cfg: RunConfig) -> dict:
    """What defines a cell's measurement: task, model and training budget, defaults written out."""
    train = cfg.train.model_dump(mode="json")
    return {**cfg.identity(), "train": {k: train[k] for k in BUDGET_KEYS}}


def check_cell_configs(suite: Suite, root: Path) -> None:
    """Raise if a cell folder under ``root`` holds a run of another config than its cell now has.

    Skipping or resuming such a folder would report the old recipe under the cell's name (the
    bench's ``obs`` was the plain layer at lr 1e-2 before it became the measured recipe)."""
    stale = []
    for cell in suite.cells:
        path = root / cell.name / CONFIG_FILE
        if not path.exists():
            continue
        try:
            saved = load_config(RunConfig, path)
        except ConfigError as err:
            raise ValueError(f"{path}: the cell's saved run config is unreadable ({err}); "
                             "move the cell folder away to train it again") from None
        diff = config_diff(_measured(saved), _measured(cell.config), "saved", "now")
        if diff:
            stale.append(f"{cell.name}: " + "; ".join(diff[:6]))
    if stale:
        raise ValueError(f"{len(stale)} cell folder(s) under {root} hold runs of another config than the "
                         "suite builds now (move them away, or pass --out for a fresh folder):\n"
                         + "\n".join(stale[:10]))


def device_label(device: str) -> str:
    """What ran a cell, in words: ``GPU <name>`` or ``CPU (<processor>, 1 intra-op thread per run)``."""
    import platform

    import torch
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(torch.device(device))}"
    return f"CPU ({platform.processor() or platform.machine()}, 1 intra-op thread per run)"


def run_cell(cell: Cell, cell_dir: Path, log: Callable[[str], None], commit: str | None = None,
             command: str | None = None) -> str:
    """Train and evaluate one cell; returns what happened (``skipped``, ``trained``, ``resumed``,
    ``evaluated`` or ``diverged``). ``bench.json`` records the commit, the command and the device."""
    if cell_done(cell_dir):
        return "skipped"
    what = "evaluated"
    who = {"cell": cell.name, "setting": cell.setting, "model": cell.model, "lr": cell.lr, "seed": cell.seed,
           "x": cell.x}
    if not (cell_dir / CELL_FILE).exists():
        cell_dir.mkdir(parents=True, exist_ok=True)
        _write_json(cell_dir / CELL_FILE, {**who, "commit": commit, "command": command})
    if not (cell_dir / RESULTS_FILE).exists():
        resume = None
        if (cell_dir / "checkpoints" / "last").exists():
            resume = read_checkpoint(cell_dir)
        what = "resumed" if resume is not None else "trained"
        try:
            train(cell.config, cell_dir, resume=resume, log=lambda msg: None)
        except TrainingDiverged as err:
            _write_json(cell_dir / DIVERGED_FILE, {"error": str(err)})
            log(f"  {cell.name}: diverged ({err})")
            return "diverged"
    t0 = time.perf_counter()
    ckpt = read_checkpoint(cell_dir)
    task, model = model_from_checkpoint(ckpt, device=cell.config.train.device)
    final = json.loads((cell_dir / RESULTS_FILE).read_text())["metrics"]
    columns: dict[str, float] = {}
    for ev in cell.evals:
        columns.update(run_eval(ev, model, task, cell.config, final))
    bench = {**who, "evals": columns, "written_entries": written_entries(model, task),
             "eval_time_s": round(time.perf_counter() - t0, 3), "commit": commit, "command": command,
             "device": device_label(cell.config.train.device)}
    _write_json(cell_dir / BENCH_FILE, bench)
    return what


def cell_cost(cell: Cell) -> int:
    """Tokens a cell trains on (steps x batch x sequence length): the order of parallel runs."""
    train = cell.config.train
    return train.steps * train.batch_size * int(cell.config.task.params.get("seq_len", 1))


def _run_cell_in_worker(cell: Cell, cell_dir: Path, commit: str | None, command: str | None
                        ) -> tuple[str, float]:
    t0 = time.perf_counter()
    what = run_cell(cell, cell_dir, lambda msg: print(msg, flush=True), commit, command)
    return what, time.perf_counter() - t0


def run_suite(suite: Suite, root: Path, log: Callable[[str], None] = print,
              commit: str | None = None, jobs: int = 1, command: str | None = None,
              worker: Callable[..., tuple[str, float]] | None = None) -> dict[str, int]:
    """Run every cell of ``suite`` under ``root``; returns how many cells ended each way.

    ``commit`` (the code's git commit) and ``command`` are recorded in each evaluated cell's
    ``bench.json``, with the device it ran on.
    ``jobs`` > 1: that many worker processes (see the module docstring). A cell that raises
    does not stop the others; the error is raised once they have finished. A cell that ran out
    of (GPU) memory beside the others, or whose worker process was killed, is run once more on
    its own at the end (from its last checkpoint). ``worker`` is
    what each worker process runs per cell (default :func:`run_cell` with timing; tests swap it).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    check_cell_configs(suite, root)
    root.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    n = len(suite.cells)
    if jobs == 1:
        for i, cell in enumerate(suite.cells):
            t0 = time.perf_counter()
            what = run_cell(cell, root / cell.name, log, commit, command)
            counts[what] = counts.get(what, 0) + 1
            if what != "skipped":
                log(f"[{i + 1}/{n}] {cell.name}: {what} in {time.perf_counter() - t0:.1f} s")
        return counts
    todo = [c for c in suite.cells if not cell_done(root / c.name)]
    counts["skipped"] = n - len(todo)
    failed: list[str] = []
    worker = worker or _run_cell_in_worker
    out_of_memory = _run_in_pool(worker, todo, root, commit, command, jobs, counts, failed, log)
    if out_of_memory:
        # cells sharing one GPU can run it out of memory; each gets a second try on its own
        log(f"{len(out_of_memory)} cells ran out of memory beside others (or lost their worker): "
            "running them again one at a time")
        oom_again = _run_in_pool(worker, out_of_memory, root, commit, command, 1, counts, failed, log)
        failed += [f"{c.name}: out of memory even alone" for c in oom_again]
    if not counts["skipped"]:
        del counts["skipped"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(todo)} cells failed:\n" + "\n".join(failed))
    return counts


def _is_out_of_memory(err: BaseException) -> bool:
    """A device out of memory, or a worker killed from outside (the host's OOM killer does that;
    the pool then fails every cell in flight)."""
    return isinstance(err, BrokenProcessPool) or "out of memory" in str(err).lower()


def _run_in_pool(worker: Callable[..., tuple[str, float]], cells: list[Cell], root: Path, commit: str | None,
                 command: str | None, jobs: int, counts: dict[str, int], failed: list[str],
                 log: Callable[[str], None]) -> list[Cell]:
    """Run ``cells`` in ``jobs`` worker processes, longest first; tally outcomes into ``counts``,
    errors into ``failed``; return the cells that ran out of memory (not counted as failed)."""
    oom: list[Cell] = []
    # spawn: CUDA cannot be used in forked children
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(worker, c, root / c.name, commit, command): c
                   for c in sorted(cells, key=cell_cost, reverse=True)}
        for done, fut in enumerate(as_completed(futures), 1):
            cell = futures[fut]
            try:
                what, seconds = fut.result()
            except Exception as err:  # reported after the other cells have run
                log(f"[{done}/{len(cells)}] {cell.name}: failed ({type(err).__name__}: {str(err)[:300]})")
                if _is_out_of_memory(err):
                    oom.append(cell)
                else:
                    failed.append(f"{cell.name}: {type(err).__name__}: {err}")
                continue
            counts[what] = counts.get(what, 0) + 1
            log(f"[{done}/{len(cells)}] {cell.name}: {what} in {seconds:.1f} s")
    return oom


def load_cell(cell: Cell, root: Path) -> dict | None:
    """The recorded outcome of a finished cell: the trainer's results and the bench evaluations."""
    d = root / cell.name
    if (d / DIVERGED_FILE).exists():
        return {"diverged": True, "metrics": {"accuracy": 0.0}, "evals": {}, "n_params": None,
                "state_size": {}, "wall_time_s": None, "written_entries": None}
    if not ((d / RESULTS_FILE).exists() and (d / BENCH_FILE).exists()):
        return None
    res = json.loads((d / RESULTS_FILE).read_text())
    bench = json.loads((d / BENCH_FILE).read_text())
    return {**res, "diverged": False, "evals": bench["evals"], "written_entries": bench["written_entries"],
            "eval_time_s": bench["eval_time_s"], "commit": bench.get("commit"),
            "command": bench.get("command"), "device": bench.get("device")}
