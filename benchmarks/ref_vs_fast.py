"""Reference loop vs reversible training path: max |difference| of outputs and gradients.

    python benchmarks/ref_vs_fast.py          # writes docs/results/ref_vs_fast.md

float64, one OBS layer, random upstream gradients, a mix of continuous and discrete steps,
the Gaussian regulariser and the k cost on, and a state carried in from a first window.
"""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import torch

from onebigstate import OBSConfig, OBSLayer


def run(backend: str, cfg: OBSConfig, B: int, T: int, seed: int = 0):
    torch.manual_seed(seed)
    layer = OBSLayer(cfg.model_copy(update={"backend": backend})).double().train()
    gen = torch.Generator().manual_seed(seed + 1)
    x0 = torch.randn(B, T // 2, cfg.d_model, dtype=torch.float64, generator=gen)
    x = torch.randn(B, T, cfg.d_model, dtype=torch.float64, generator=gen).requires_grad_(True)
    cont = torch.rand(B, T, generator=gen) > 0.5
    gy = torch.randn(B, T, cfg.d_model, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        _, state = layer(x0)
    y, state = layer(x, state, continuous=cont)
    ((y * gy).sum() + layer.last_stats.aux_loss).backward()
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in layer.named_parameters()}
    grads["input x"] = x.grad
    return y.detach(), grads, state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results/ref_vs_fast.md")
    args = ap.parse_args()
    cfg = OBSConfig(d_model=32, n_nodes=64, d_key=16, d_value=16, d_hidden=16, d_write=16, k_min=2, k_max=6,
                    m_active=8, init_std=0.05, k_cost=0.1, gaussian_reg={"weight": 0.1, "n_samples": 256})
    B, T = 4, 48
    y_r, g_r, s_r = run("reference", cfg, B, T)
    y_f, g_f, s_f = run("reversible", cfg, B, T)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"# Reference loop vs reversible training path (float64)", "",
             f"Command: `python benchmarks/ref_vs_fast.py` at commit `{commit}`. One OBS layer "
             f"(N = {cfg.n_nodes}, k in [{cfg.k_min}, {cfg.k_max}], m = {cfg.m_active}, width {cfg.d_model}), "
             f"B = {B} streams, T = {T} steps after a carried-in window of {T // 2}, mixed continuous/discrete "
             "steps, Gaussian regulariser and k cost on, random upstream gradient.", "",
             "| quantity | max abs difference | max abs value |", "|---|---|---|",
             f"| output y | {(y_f - y_r).abs().max():.2e} | {y_r.abs().max():.2e} |",
             f"| final state S | {(s_f.S - s_r.S).abs().max():.2e} | {s_r.S.abs().max():.2e} |",
             f"| written-entry map | {int((s_f.touched != s_r.touched).sum())} entries differ | "
             f"{int(s_r.touched.sum())} written |"]
    for n in g_r:
        lines.append(f"| grad {n} | {(g_f[n] - g_r[n]).abs().max():.2e} | {g_r[n].abs().max():.2e} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
