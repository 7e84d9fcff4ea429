"""Reference loop vs the fast scan backends: max |difference| of outputs, state and gradients.

    python benchmarks/ref_vs_fast.py          # writes docs/results/ref_vs_fast.md

float64, one OBS layer, random upstream gradients, a mix of continuous and discrete steps,
the Gaussian regulariser and the k cost on, and a state carried in from a first window; once with
the plain layer (the defaults before 2026-12-05) and once with every switch of the bench recipe and reverse_assoc on. The
compiled backend runs in both of its modes (dense per-thread rows, and the hash map it uses at
large N, forced here with DIRECT_MAX_BYTES = 0).
"""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import torch

from onebigstate import OBSConfig, OBSLayer
from onebigstate.model.config import PLAIN_LAYER


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


BACKENDS = {"reversible": ("reversible", None), "cpu": ("cpu", None), "cpu (hashed)": ("cpu", 0)}


def compare(cfg: OBSConfig, B: int, T: int) -> list[str]:
    from onebigstate.kernels import cpu
    y_r, g_r, s_r = run("reference", cfg, B, T)
    results = {}
    for label, (backend, direct_max) in BACKENDS.items():
        saved = cpu.DIRECT_MAX_BYTES
        cpu.DIRECT_MAX_BYTES = saved if direct_max is None else direct_max
        try:
            results[label] = run(backend, cfg, B, T)
        finally:
            cpu.DIRECT_MAX_BYTES = saved
    labels = list(results)
    lines = ["| quantity | max abs value | " + " | ".join(f"{b}: max abs difference" for b in labels) + " |",
             "|---|---|" + "---|" * len(labels)]

    def row(name, ref, get):
        lines.append(f"| {name} | {ref.abs().max():.2e} | "
                     + " | ".join(f"{(get(results[b]) - ref).abs().max():.2e}" for b in labels) + " |")

    row("output y", y_r, lambda r: r[0])
    row("final state S", s_r.S, lambda r: r[2].S)
    lines.append(f"| written-entry map | {int(s_r.touched.sum())} written | "
                 + " | ".join(f"{int((results[b][2].touched != s_r.touched).sum())} differ" for b in labels) + " |")
    for n in g_r:
        row(f"grad {n}", g_r[n], lambda r, n=n: r[1][n])
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results/ref_vs_fast.md")
    args = ap.parse_args()
    base = OBSConfig(d_model=32, n_nodes=64, d_key=16, d_value=16, d_hidden=16, d_write=16, k_min=2, k_max=6,
                     m_active=8, init_std=0.05, k_cost=0.1, gaussian_reg={"weight": 0.1, "n_samples": 256},
                     **PLAIN_LAYER)   # the plain layer, as the page measured it
    recipe = base.model_copy(update={"row_norm": True, "circuit_direct": 1.0, "balance_cost": 0.1,
                                     "reverse_assoc": True})
    B, T = 4, 48
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = ["# Reference loop vs the fast scan backends (float64)", "",
             f"Command: `python benchmarks/ref_vs_fast.py` at commit `{commit}`. One OBS layer "
             f"(N = {base.n_nodes}, k in [{base.k_min}, {base.k_max}], m = {base.m_active}, width {base.d_model}), "
             f"B = {B} streams, T = {T} steps after a carried-in window of {T // 2}, mixed continuous/discrete "
             "steps, Gaussian regulariser and k cost on, random upstream gradient. `cpu (hashed)` is the compiled "
             "backend with the window's changes in the hash map it uses at large N (forced here). The tests "
             "(`tests/test_obs_kernels.py`) hold every backend to 1e-12 (values, states) and 1e-10 "
             "(gradients) relative over a table of cases.", ""]
    for title, cfg in (("The plain layer (the layer's defaults before 2026-12-05)", base),
                       ("Every switch: row_norm, circuit_direct 1, balance_cost 0.1, reverse_assoc", recipe)):
        lines += [f"## {title}", ""] + compare(cfg, B, T) + [""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
