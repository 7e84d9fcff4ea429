"""Wall time of one OBS training step (forward + backward + AdamW) against the number of nodes N.

    OMP_NUM_THREADS=1 python benchmarks/step_time.py --nodes 1024 2048 4096
    OMP_NUM_THREADS=1 python benchmarks/step_time.py --nodes 4096 16384 --backends dense sparse

The model is the bench's obs_balanced_rownorm at width 64 (1 layer, k 4..12, m 16, balance_cost 0.1,
row_norm; the bench's `obs` adds circuit_direct 1.0),
trained as the trainer does on MQAR batches of vocabulary 8192, batch 32, 128 tokens with
--seq-len / 4 pairs (the extrapolation --cpu recipe; the output head runs at the answers only).
Each (backend, N) runs in its own process; prints the median wall and CPU seconds of the steps
after two warm-up steps (CPU time is the fairer number on a shared machine: with one thread it
equals wall time on an idle one), that process's peak resident memory, and the state entries
stored per stream at the end.
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time

import torch

from onebigstate.nets.stack import ModelConfig
from onebigstate.tasks.base import TaskConfig
from onebigstate.tasks.registry import build_task


def step_times(n_nodes: int, batch: int, seq_len: int, steps: int, backend: str = "dense",
               vocab: int = 8192, dense_gradient_ratio: float | None = None
               ) -> tuple[list[float], list[float], list[float], float, int]:
    """(wall seconds per step, CPU seconds per step, CPU seconds of each backward pass, peak
    resident GB of this process, mean state entries stored per stream)."""
    if dense_gradient_ratio is not None:
        from onebigstate.model.state import DenseState
        DenseState.DENSE_GRADIENT_RATIO = dense_gradient_ratio
    torch.manual_seed(0)
    cfg = ModelConfig(name="obs", d_model=64, n_layers=1,
                      mixer={"n_nodes": n_nodes, "k_min": 4, "k_max": 12, "m_active": 16,
                             "balance_cost": 0.1, "row_norm": True, "circuit_direct": 0.0,
                             "state_backend": backend})
    task = build_task(TaskConfig(name="mqar", params={"vocab_size": vocab, "seq_len": seq_len,
                                                      "num_kv_pairs": seq_len // 4}))
    model = task.build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    times, cpu, backward = [], [], []
    for i in range(steps):
        x, y = task.train_batch(i, batch)
        t0, c0 = time.perf_counter(), time.process_time()
        outputs, labels, states = task.forward(model, x, y)
        b0 = time.process_time()
        task.loss(outputs, labels).backward()
        backward.append(time.process_time() - b0)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    entries = int(states[0].entries_written().float().mean()) if backend == "sparse" else n_nodes * n_nodes
    return times, cpu, backward, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6, help="steps timed per setting (the first two are warm-up)")
    ap.add_argument("--backends", nargs="+", default=["dense"], choices=["dense", "sparse"],
                    help="state backends to time (OBSConfig.state_backend)")
    ap.add_argument("--dense-gradient-ratio", type=float, default=None,
                    help="override DenseState.DENSE_GRADIENT_RATIO (1e12: dL/dS always a dense tensor; "
                         "0: always at the write set)")
    args = ap.parse_args()
    if args.steps < 3:
        ap.error("--steps must be at least 3 (two warm-up steps are dropped)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch}, "
          f"{args.seq_len} tokens")
    print("| backend | N | median wall s/step | median CPU s/step | of it backward | wall per step (s) | "
          "peak resident GB | state entries per stream |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    ctx = multiprocessing.get_context("spawn")
    for backend in args.backends:
        for n in args.nodes:
            with ctx.Pool(1) as pool:
                try:
                    ts, cpu, bwd, peak, entries = pool.apply(step_times, (n, args.batch, args.seq_len, args.steps,
                                                                          backend, 8192, args.dense_gradient_ratio))
                except RuntimeError as err:      # a dense state too large for this machine
                    print(f"| {backend} | {n} | failed: {str(err).splitlines()[0][:120]} | | | | | |", flush=True)
                    continue
            print(f"| {backend} | {n} | {statistics.median(ts[2:]):.2f} | {statistics.median(cpu[2:]):.2f} | "
                  f"{statistics.median(bwd[2:]):.2f} | "
                  f"{', '.join(f'{t:.2f}' for t in ts)} | "
                  f"{peak:.1f} | {entries:,} |", flush=True)


if __name__ == "__main__":
    main()
