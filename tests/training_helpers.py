"""Tiny run configs and helpers shared by the training, checkpoint and CLI tests."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

# OBS with N=32 nodes on MQAR with 16 tokens, 2 pairs, vocabulary 32: a step takes milliseconds.
TINY = {
    "task": {"name": "mqar", "seed": 0, "test_size": 32,
             "params": {"vocab_size": 32, "seq_len": 16, "num_kv_pairs": 2}},
    "model": {"name": "obs", "d_model": 16, "n_layers": 1,
              "mixer": {"n_nodes": 32, "k_min": 2, "k_max": 4, "m_active": 4,
                        "d_key": 16, "d_value": 16, "d_hidden": 16, "d_write": 16}},
    "train": {"steps": 12, "batch_size": 4, "lr": 3e-3, "warmup": 2, "log_every": 2, "eval_every": 6,
              "ckpt_every": 4, "progress": False},
}


def tiny_tree(**train) -> dict:
    tree = json.loads(json.dumps(TINY))
    tree["train"].update(train)
    return tree


def train_tiny_mqar(run: Path, vocab_size: int, seq_len: int, num_kv_pairs: int, test_size: int) -> Path:
    """The TINY OBS trained 2 steps on MQAR at this setting, into ``run`` (for analysis scripts)."""
    from onebigstate.config import build_config
    from onebigstate.training.config import RunConfig
    from onebigstate.training.trainer import train
    tree = tiny_tree(steps=2, ckpt_every=2, eval_every=0)
    tree["task"] = {"name": "mqar", "seed": 0, "test_size": test_size,
                    "params": {"vocab_size": vocab_size, "seq_len": seq_len, "num_kv_pairs": num_kv_pairs}}
    train(build_config(RunConfig, tree), run, log=lambda m: None)
    return run


def load_benchmark(name: str):
    """A script of ``benchmarks/`` as a module (they are scripts, not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_config(path: Path, **train) -> Path:
    path.write_text(yaml.safe_dump(tiny_tree(**train), sort_keys=False))
    return path


def obs_cli(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the ``obs`` command in a fresh single-threaded process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "onebigstate.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"obs {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@contextlib.contextmanager
def single_thread():
    """One intra-op thread, as in the `obs` subprocesses, so float results agree bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def out_of_memory_once(cell, cell_dir, commit, command):
    """A bench worker whose first try at a cell fails as a crowded GPU does (out of memory)."""
    from onebigstate.bench.runner import _run_cell_in_worker
    marker = Path(cell_dir) / "tried"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise RuntimeError("CUDA out of memory (a test's stand-in)")
    return _run_cell_in_worker(cell, cell_dir, commit, command)


def killed_once(cell, cell_dir, commit, command):
    """A bench worker killed from outside (as the OOM killer does), once per suite folder."""
    from onebigstate.bench.runner import _run_cell_in_worker
    marker = Path(cell_dir).parent / "killed"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        os._exit(9)
    return _run_cell_in_worker(cell, cell_dir, commit, command)
