"""Peak resident memory of the trainer at dense N: a few training steps, and its evaluation.

    OMP_NUM_THREADS=1 python benchmarks/run_memory.py --nodes 4096 --batch 32 --eval-batch 64

Where ``benchmarks/eval_memory.py`` times one forward pass, this runs what a bench cell runs:
``trainer.train`` for ``--steps`` steps (batch ``--batch``, MQAR at 128 tokens / 32 pairs, the
bench's OBS at width 64 from random weights) and ``trainer.evaluate`` over ``--eval-batches``
batches of ``--eval-batch`` held-out sequences, so memory one batch keeps into the next shows.
Each measurement runs in a fresh process (peak RSS only grows within one); run it under the
allocator the bench runs under (e.g. jemalloc through ``LD_PRELOAD``), which decides what freed
memory counts. Prints the peak and how many dense states of the batch (B N^2 floats) it is.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time


def _config(n_nodes: int, steps: int, batch: int, test_size: int):
    from onebigstate.training.config import RunConfig
    return RunConfig.model_validate({
        "task": {"name": "mqar", "test_size": test_size,
                 "params": {"seq_len": 128, "num_kv_pairs": 32, "vocab_size": 8192}},
        "model": {"name": "obs", "d_model": 64, "n_layers": 1,
                  "mixer": {"n_nodes": n_nodes, "k_min": 4, "k_max": 12, "m_active": 16, "row_norm": True}},
        "train": {"device": "cpu", "steps": max(steps, 1), "batch_size": batch, "eval_batch_size": 8,
                  "progress": False, "threads": 1, "ckpt_every": 10**6, "log_every": 1}})


def measure(what: str, n_nodes: int, batch: int, count: int) -> tuple[float, float, float]:
    """(peak RSS GB, RSS GB before, seconds) of ``count`` training steps or eval batches, in this process."""
    import torch

    from onebigstate.training.trainer import build_run, evaluate, train
    torch.manual_seed(0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    t0 = time.perf_counter()
    if what == "train":
        with tempfile.TemporaryDirectory() as run_dir:     # its final evaluation: 8 sequences
            train(_config(n_nodes, count, batch, 8), run_dir, log=lambda m: None)
    else:
        task, model = build_run(_config(n_nodes, 1, batch, batch * count))
        test = task.test_set()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        t0 = time.perf_counter()
        evaluate(model, task, batch, test)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, before, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[2048])
    ap.add_argument("--batch", type=int, default=32, help="training batch")
    ap.add_argument("--steps", type=int, default=3, help="training steps")
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--eval-batches", type=int, default=3)
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)   # what N B count, in a child process
    args = ap.parse_args()
    if args.one:
        peak, before, seconds = measure(args.one[0], *map(int, args.one[1:]))
        print(f"{peak:.2f} {before:.2f} {seconds:.1f}")
        return 0
    print("| N | run | batch | peak RSS GB | RSS before GB | dense states of the batch | s |\n"
          "|---:|---|---:|---:|---:|---:|---:|")
    for n in args.nodes:
        for what, batch, count in (("train", args.batch, args.steps), ("evaluate", args.eval_batch, args.eval_batches)):
            out = subprocess.run([sys.executable, __file__, "--one", what, str(n), str(batch), str(count)],
                                 capture_output=True, text=True, check=True).stdout.split()
            peak, before = float(out[0]), float(out[1])
            state = batch * n * n * 4 / 1e9
            label = f"{count} training steps" if what == "train" else f"evaluate, {count} batches"
            states = (peak if what == "train" else peak - before) / state
            print(f"| {n} | {label} | {batch} | {peak:.2f} | {before:.2f} | {states:.2f} | {out[2]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
