"""Wall time of one OBS training step (forward + backward + AdamW) against the number of nodes N.

    OMP_NUM_THREADS=1 python benchmarks/step_time.py --nodes 1024 2048 4096

The model is the bench's OBS at width 64 (1 layer, k 4..12, m 16, balance_cost 0.1, row_norm)
on random tokens of a vocabulary of 8192, batch 32, 128 tokens: the extrapolation --cpu recipe.
Prints the median of the steps after two warm-up steps, and the peak resident memory.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from onebigstate.nets.stack import ModelConfig, build_model


def step_times(n_nodes: int, batch: int, seq_len: int, steps: int, vocab: int = 8192) -> list[float]:
    torch.manual_seed(0)
    cfg = ModelConfig(name="obs", d_model=64, n_layers=1,
                      mixer={"n_nodes": n_nodes, "k_min": 4, "k_max": 12, "m_active": 16,
                             "balance_cost": 0.1, "row_norm": True})
    model = build_model(cfg, n_out=vocab, vocab_size=vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, vocab, (batch, seq_len))
    y = torch.randint(0, vocab, (batch, seq_len))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        logits, _ = model(x)
        torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1)).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6, help="steps timed per setting (the first two are warm-up)")
    args = ap.parse_args()
    if args.steps < 3:
        ap.error("--steps must be at least 3 (two warm-up steps are dropped)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch}, "
          f"{args.seq_len} tokens")
    print("| N | median s/step | steps (s) |")
    print("|---:|---:|---|")
    for n in args.nodes:
        ts = step_times(n, args.batch, args.seq_len, args.steps)
        print(f"| {n} | {statistics.median(ts[2:]):.2f} | {', '.join(f'{t:.2f}' for t in ts)} |", flush=True)
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB")


if __name__ == "__main__":
    main()
