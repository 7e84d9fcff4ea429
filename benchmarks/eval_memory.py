"""Peak resident memory of OBS at dense N: one forward pass, or what the trainer runs.

    OMP_NUM_THREADS=1 python benchmarks/eval_memory.py --nodes 2048 --seq-lens 256 1024 --batch 64
    OMP_NUM_THREADS=1 python benchmarks/eval_memory.py --trainer --nodes 4096 --batch 32 --eval-batch 64

OBS at the bench's sizes, width 64 (1 layer, k 4..12, m 16), with row_norm only (the config the
numbers in docs/bench.md and onebigstate/kernels/README.md were measured with; the bench's `obs` adds
balance_cost and circuit_direct), from random weights, vocabulary 8192.
Default: one forward pass under no_grad on random tokens, per sequence length. ``--trainer``:
what a bench cell runs, ``trainer.train`` for ``--steps`` steps of batch ``--batch`` (MQAR at 128
tokens / 32 pairs) and ``trainer.evaluate`` over ``--eval-batches`` batches of ``--eval-batch``
held-out sequences, so memory one batch keeps into the next shows. Each measurement runs in a
fresh process (peak RSS only grows within one); run it under the allocator the bench runs under
(e.g. jemalloc through ``LD_PRELOAD``), which decides what freed memory counts. Prints the peak,
the dense states of the batch (B N^2 floats) for scale, and the seconds taken.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time


def _mixer(n_nodes: int) -> dict:
    from onebigstate.model.config import PLAIN_LAYER   # the plain layer with row_norm, as measured
    return {"n_nodes": n_nodes, "k_min": 4, "k_max": 12, "m_active": 16, **PLAIN_LAYER, "row_norm": True}


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def measure(n_nodes: int, seq_len: int, batch: int) -> tuple[float, float]:
    """(peak RSS in GB, seconds) of one forward pass under no_grad, in this process."""
    import torch

    from onebigstate.nets import ModelConfig, build_model
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="obs", d_model=64, n_layers=1, mixer=_mixer(n_nodes)),
                        n_out=8192, vocab_size=8192)
    x = torch.randint(0, 8192, (batch, seq_len))
    t0 = time.perf_counter()
    with torch.no_grad():
        model.hidden(x)
    return _peak_gb(), time.perf_counter() - t0


def _run_config(n_nodes: int, steps: int, batch: int, test_size: int):
    from onebigstate.training.config import RunConfig
    return RunConfig.model_validate({
        "task": {"name": "mqar", "test_size": test_size,
                 "params": {"seq_len": 128, "num_kv_pairs": 32, "vocab_size": 8192}},
        "model": {"name": "obs", "d_model": 64, "n_layers": 1, "mixer": _mixer(n_nodes)},
        "train": {"device": "cpu", "steps": steps, "batch_size": batch, "eval_batch_size": 8,
                  "progress": False, "threads": 1, "ckpt_every": 10**6, "log_every": 1}})


def measure_trainer(what: str, n_nodes: int, batch: int, count: int) -> tuple[float, float, float]:
    """(peak RSS GB, RSS GB before, seconds) of ``count`` training steps (``what="train"``, with
    the trainer's final evaluation of 8 sequences) or evaluation batches (``"evaluate"``), in this process."""
    import torch

    from onebigstate.training.trainer import build_run, evaluate, train
    torch.manual_seed(0)
    if what == "train":
        before, t0 = _peak_gb(), time.perf_counter()
        with tempfile.TemporaryDirectory() as run_dir:
            train(_run_config(n_nodes, count, batch, 8), run_dir, log=lambda m: None)
    elif what == "evaluate":
        task, model = build_run(_run_config(n_nodes, 1, batch, batch * count))
        test = task.test_set()
        before, t0 = _peak_gb(), time.perf_counter()
        evaluate(model, task, batch, test)
    else:
        raise ValueError(f"what must be 'train' or 'evaluate', got {what!r}")
    return _peak_gb(), before, time.perf_counter() - t0


def _child(*args) -> list[str]:
    return subprocess.run([sys.executable, __file__, *map(str, args)], capture_output=True, text=True,
                          check=True).stdout.split()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[2048])
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[256, 1024], help="forward pass only")
    ap.add_argument("--batch", type=int, default=None, help="batch of the forward pass (default 64) "
                    "or, with --trainer, of the training steps (default 32)")
    ap.add_argument("--trainer", action="store_true", help="training steps and the trainer's evaluation")
    ap.add_argument("--steps", type=int, default=3, help="--trainer: training steps")
    ap.add_argument("--eval-batch", type=int, default=64, help="--trainer: evaluation batch")
    ap.add_argument("--eval-batches", type=int, default=3, help="--trainer: evaluation batches")
    ap.add_argument("--one", nargs=3, type=int, help=argparse.SUPPRESS)           # N T B, in a child
    ap.add_argument("--one-trainer", nargs=4, help=argparse.SUPPRESS)             # what N B count
    args = ap.parse_args()
    if args.one:
        peak, seconds = measure(*args.one)
        print(f"{peak:.2f} {seconds:.1f}")
        return 0
    if args.one_trainer:
        peak, before, seconds = measure_trainer(args.one_trainer[0], *map(int, args.one_trainer[1:]))
        print(f"{peak:.2f} {before:.2f} {seconds:.1f}")
        return 0
    if not args.trainer:
        batch = args.batch or 64
        print("| N | T | batch | peak RSS GB | dense state GB | s |\n|---:|---:|---:|---:|---:|---:|")
        for n in args.nodes:
            for t in args.seq_lens:
                peak, seconds = _child("--one", n, t, batch)
                print(f"| {n} | {t} | {batch} | {peak} | {batch * n * n * 4 / 1e9:.2f} | {seconds} |")
        return 0
    print("| N | run | batch | peak RSS GB | RSS before GB | dense states of the batch | s |\n"
          "|---:|---|---:|---:|---:|---:|---:|")
    for n in args.nodes:
        for what, batch, count in (("train", args.batch or 32, args.steps),
                                   ("evaluate", args.eval_batch, args.eval_batches)):
            peak, before, seconds = (float(v) for v in _child("--one-trainer", what, n, batch, count))
            # training: the whole process; evaluation: above the model and test set already built
            states = (peak if what == "train" else peak - before) / (batch * n * n * 4 / 1e9)
            label = f"{count} training steps" if what == "train" else f"evaluate, {count} batches"
            print(f"| {n} | {label} | {batch} | {peak:.2f} | {before:.2f} | {states:.2f} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
