"""Peak resident memory of evaluating one OBS layer (no gradients) against sequence length.

    OMP_NUM_THREADS=1 python benchmarks/eval_memory.py --nodes 2048 --seq-lens 256 1024 --batch 64

Each (N, T) runs in a fresh process (peak RSS only grows within a process): the bench's OBS at
width 64 (1 layer, k 4..12, m 16, row_norm) on random tokens of a vocabulary of 8192. Prints the
peak, the dense state of the batch for scale, and the seconds taken.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time


def measure(n_nodes: int, seq_len: int, batch: int) -> tuple[float, float]:
    """(peak RSS in GB, seconds) of one forward pass under no_grad, in this process."""
    import torch

    from onebigstate.nets import ModelConfig, build_model
    torch.manual_seed(0)
    cfg = ModelConfig(name="obs", d_model=64, n_layers=1,
                      mixer={"n_nodes": n_nodes, "k_min": 4, "k_max": 12, "m_active": 16, "row_norm": True})
    model = build_model(cfg, n_out=8192, vocab_size=8192)
    x = torch.randint(0, 8192, (batch, seq_len))
    t0 = time.perf_counter()
    with torch.no_grad():
        model.hidden(x)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[2048])
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--one", nargs=3, type=int, help=argparse.SUPPRESS)   # N T B, in a child process
    args = ap.parse_args()
    if args.one:
        peak, seconds = measure(*args.one)
        print(f"{peak:.2f} {seconds:.1f}")
        return 0
    print("| N | T | batch | peak RSS GB | dense state GB | s |\n|---:|---:|---:|---:|---:|---:|")
    for n in args.nodes:
        for t in args.seq_lens:
            out = subprocess.run([sys.executable, __file__, "--one", str(n), str(t), str(args.batch)],
                                 capture_output=True, text=True, check=True).stdout.split()
            print(f"| {n} | {t} | {args.batch} | {out[0]} | {args.batch * n * n * 4 / 1e9:.2f} | {out[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
