"""A lifelong state along streams of up to 10^7 tokens: recall, the largest |S_ij|, non-finite
values, and whether the fast backends still match the reference on the state that lived that long.

    python benchmarks/bounded_state.py runs/bench_bound/retention_cpu/T_128_P_8__obs__lr0.003__s0 \
        runs/bench_bound/retention_cpu/T_128_P_8__obs_bound4__lr0.003__s0 \
        --distances 100,1000000,10000000 --streams 8 --out docs/results/bounded_state.md

Each RUN is a trained OBS retention cell (a run folder with checkpoints). ``--streams`` streams
write the task's ``n_pairs`` associations, then carry distractor traffic, and query key i
``distances[i % len]`` tokens after the writes (``tasks.retention.retention_stream``: the
lifelong set's layout, made window by window). They are read in windows of ``--window`` tokens
with the state carried (advanced in place). After every window the largest |S_ij| over the
streams is recorded. At the end, on two streams' final state in float64, one more window is run
with gradients through the ``reference`` scan and each fast backend (values and gradients of
every parameter compared), and through the fast backends in float32 against that float64
reference: does adding and then subtracting logged changes to such a state still rebuild it?
Writes the numbers to ``--out`` with the suffix ``.json`` (the page beside it is written by hand
from them) and a plot of the largest entry against tokens read (``.png``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from onebigstate.model.layer import obs_layers
from onebigstate.tasks.base import heldout_seed
from onebigstate.tasks.common import IGNORE
from onebigstate.tasks.retention import retention_stream
from onebigstate.training.checkpoint import read_checkpoint
from onebigstate.training.trainer import model_from_checkpoint


def largest_entry(states) -> float:
    """max |S_ij| over the OBS layers' states (NaN if any entry is NaN)."""
    out = 0.0
    for s in states:
        if s is None or not hasattr(s, "as_dense"):
            continue
        S = s.as_dense()
        if not torch.isfinite(S).all():
            return float("nan")
        out = max(out, float(S.abs().amax()))
    return out


@torch.no_grad()
def stream(model, task, distances: list[int], n_streams: int, window: int, every: int):
    """(accuracy per distance, [(tokens, largest |S|)], final states, tokens/s)."""
    params = task.params
    rng = np.random.default_rng([heldout_seed(task.cfg.seed), 7])
    n_total = 2 * params.n_pairs + 2 * (max(distances) // 2 + params.n_pairs)
    right = np.zeros(len(distances))
    count = np.zeros(len(distances))
    sizes, states, read = [], None, 0
    t0 = time.perf_counter()
    bar = tqdm(total=n_total, unit="tok", unit_scale=True, desc="stream", dynamic_ncols=True, mininterval=5)
    for i, (x, y, g) in enumerate(retention_stream(params, n_streams, distances, window, rng)):
        h, states = model.hidden(torch.from_numpy(x), states, in_place=True)
        read += x.shape[1]
        bar.update(x.shape[1])
        mask = torch.from_numpy(y != IGNORE)
        if mask.any():
            pred = model.head(h[mask]).argmax(-1).numpy()
            np.add.at(right, g[y != IGNORE], pred == y[y != IGNORE])
            np.add.at(count, g[y != IGNORE], 1)
        if i % every == 0:
            sizes.append((read, largest_entry(states)))
    bar.close()
    sizes.append((read, largest_entry(states)))
    rate = n_streams * read / (time.perf_counter() - t0)
    acc = {f"d={d}": float(right[j] / count[j]) for j, d in enumerate(distances)}
    return acc, sizes, states, rate


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-300))


def backend_parity(model, states, task, T: int = 32) -> list[dict]:
    """One window of ``T`` tokens from two streams' ``states``, with gradients, through every
    backend: rows (backend, dtype, output error, worst parameter-gradient error, state error),
    errors relative to the float64 reference."""
    layers = obs_layers(model)
    x = torch.randint(1, task.params.vocab_size, (2, T), generator=torch.Generator().manual_seed(3))
    gy = None
    results = {}
    for backend, dtype in [("reference", torch.float64), ("reversible", torch.float64), ("cpu", torch.float64),
                           ("reversible", torch.float32), ("cpu", torch.float32)]:
        m = model.to(dtype)
        for layer in layers:
            layer.cfg.backend = backend
        st = [type(s).from_tensors({k: (v[:2].to(dtype) if v.is_floating_point() else v[:2])
                                    for k, v in s.to_tensors().items()}) for s in states]
        m.zero_grad(set_to_none=True)
        out, new = m(x, st)
        if gy is None:
            gy = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
        (out * gy.to(dtype)).sum().backward()
        grads = {n: p.grad.detach().double().clone() for n, p in m.named_parameters() if p.grad is not None}
        active = obs_layers(m)[0].last_stats.active_idx.detach().cpu()
        results[(backend, dtype)] = (out.detach().double(), grads, new[0].as_dense().double(), active)
    model.float()
    for layer in layers:
        layer.cfg.backend = "auto"
    ref_out, ref_grads, ref_state, ref_active = results[("reference", torch.float64)]
    rows = []
    for (backend, dtype), (out, grads, state, active) in results.items():
        if backend == "reference":
            continue
        g_err = max(_rel(grads[n], ref_grads[n]) for n in ref_grads if ref_grads[n].abs().max() > 0)
        # the first step whose active set (as a set) differs from the reference's, if any
        differ = [t for t in range(active.shape[1])
                  if not torch.equal(active[:, t].sort(-1).values, ref_active[:, t].sort(-1).values)]
        rows.append({"backend": backend, "dtype": str(dtype).replace("torch.", ""), "output": _rel(out, ref_out),
                     "grads": g_err, "state": _rel(state, ref_state),
                     "first_step_active_set_differs": differ[0] if differ else None})
    return rows


def saturated_share(states, bound: float) -> float | None:
    """Share of the entries of the first OBS state within 1e-6 of +-c (None without a bound)."""
    if bound <= 0:
        return None
    S = states[0].as_dense()
    return float((S.abs() >= bound * (1 - 1e-6)).double().mean())


def plot(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, sizes in curves.items():
        ax.plot([t for t, _ in sizes], [s for _, s in sizes], label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens read per stream")
    ax.set_ylabel("largest |S_ij| over the streams")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="trained OBS retention run folders")
    p.add_argument("--distances", default="100,1000000,10000000")
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--window", type=int, default=4096)
    p.add_argument("--every", type=int, default=8, help="record the largest |S| every this many windows")
    p.add_argument("--out", default="docs/results/bounded_state.md")
    args = p.parse_args(argv)
    distances = [int(d) for d in args.distances.split(",")]
    command = "python benchmarks/bounded_state.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    for run in args.runs:
        task, model = model_from_checkpoint(read_checkpoint(Path(run)))
        model.eval()
        bound = obs_layers(model)[0].cfg.state_bound
        name = Path(run).name
        acc, sizes, states, rate = stream(model, task, distances, args.streams, args.window, args.every)
        sat = saturated_share(states, bound)
        par = backend_parity(model, states, task)
        finite = not any(np.isnan(s) for _, s in sizes)
        rows.append({"run": name, "state_bound": bound, "acc": acc, "largest": sizes[-1][1],
                     "finite": finite, "saturated_share": sat, "tokens_per_s": rate, "parity": par})
        curves[f"{name} (c={bound:g})"] = sizes
        print(json.dumps(rows[-1]), flush=True)
        # after every run, so a run cut short keeps the finished ones
        out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows, "curves": curves},
                                                       indent=1))
        plot(curves, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
