"""``obs inspect CHECKPOINT``: pictures of a trained state.

Runs a batch of the checkpoint's held-out set through the model (each sequence from a fresh
state, as ``obs eval`` does) and draws, for the first OBS layer:

- ``circuits.png``: the circuits that fired most often in one stream (the circuit tracker's
  ids, node sets matched at Jaccard overlap >= 0.5) and the connections between them, as a
  graph: edge width and colour are the mean written change of ``S`` from the circuit's nodes
  to the other circuit's nodes (``S - S_0`` over the block), arrows the strongest ones;
- ``strengths.png``: the distribution of connection strengths over the entries written in the
  batch, against the Gaussian target of the config's regulariser and the initial state's
  Gaussian;
- ``firing.png``: firing order over the stream: which circuit fired at each step (top) and
  which nodes were in the active set (bottom);
- ``codes.png`` (when the model has a discretiser): code usage over the batch, with its
  perplexity and dead codes.

Also writes ``inspect.json`` (the numbers behind the pictures) and prints every path written.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from onebigstate.config import ConfigError
from onebigstate.training.checkpoint import read_checkpoint
from onebigstate.training.trainer import _to_device, model_from_checkpoint

HELP = """Draw a trained state: the strongest circuits and their connections, the distribution of
connection strengths against the Gaussian target, firing order over a stream, and the
discretiser's code usage. CHECKPOINT is a checkpoint folder or a run folder. A batch of the
held-out set is run through the model to get the state. PNGs go to --out (default RUN/inspect)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="pictures of a trained state", description=HELP)
    p.add_argument("checkpoint", help="checkpoint folder or run folder")
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN/inspect)")
    p.add_argument("--batch", type=int, default=8, help="held-out sequences run through the model (default 8)")
    p.add_argument("--stream", type=int, default=0, help="which of them the circuit and firing pictures show")
    p.add_argument("--top", type=int, default=12, help="circuits drawn in the graph (default 12)")
    p.add_argument("--device", help="device (default: the run's train.device)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import matplotlib
    matplotlib.use("Agg")
    from onebigstate.tracker import CircuitTracker

    ckpt = read_checkpoint(args.checkpoint)
    task, model = model_from_checkpoint(ckpt, device=args.device)
    from onebigstate.model.layer import obs_layers
    layers = obs_layers(model)
    if not layers:
        raise ConfigError(f"{ckpt.path} holds a '{ckpt.config.model.name}' model: obs inspect draws the big state "
                          f"of OBS layers, and this model has none")
    if args.batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {args.batch}")
    if not 0 <= args.stream < args.batch:
        raise ConfigError(f"--stream must be in [0, {args.batch}) (one of the --batch sequences), got {args.stream}")
    out = Path(args.out) if args.out else (ckpt.run_dir or ckpt.path) / "inspect"
    out.mkdir(parents=True, exist_ok=True)

    inputs, labels = task.test_set()
    n = min(args.batch, inputs.shape[0])
    if args.stream >= n:
        raise ConfigError(f"--stream {args.stream} but the held-out set has only {n} sequences")
    device, dtype = model.head.weight.device, model.head.weight.dtype
    model.eval()
    if model.discretiser is not None:
        model.discretiser.reset_usage()
    with torch.no_grad():
        _, _, states = task.forward(model, _to_device(inputs[:n], device, dtype), labels[:n].to(device))
    layer_i = next(i for i, m in enumerate(model.mixers) if m is layers[0])
    layer, state = layers[0], states[layer_i]
    stats = layer.last_stats
    b = args.stream

    tracker = CircuitTracker(order=1, min_overlap=0.5)
    ids = tracker.observe_stats(stats, b)
    S = state.as_dense()[b].detach().double().cpu()
    S0 = layer.initial_matrix().detach().double().cpu()
    summary: dict = {"checkpoint": str(ckpt.path), "step": ckpt.step, "stream": b, "steps": len(ids),
                     "circuits": tracker.n_circuits}
    written: list[Path] = []

    written.append(_circuit_graph(out / "circuits.png", tracker, S - S0, args.top, summary))
    written.append(_strengths(out / "strengths.png", state, layer.cfg, summary))
    written.append(_firing(out / "firing.png", ids, stats.active_idx[b].cpu(), layer.cfg.n_nodes))
    if model.discretiser is not None:
        written.append(_codes(out / "codes.png", model.discretiser, b, summary))
    js = out / "inspect.json"
    js.write_text(json.dumps(summary, indent=2) + "\n")
    written.append(js)
    for p in written:
        print(f"wrote {p}")
    return 0


def _circuit_graph(path: Path, tracker, delta: torch.Tensor, top: int, summary: dict) -> Path:
    import matplotlib.pyplot as plt
    chosen = [c for c, _ in tracker.fire_counts.most_common(top)]
    k = len(chosen)
    W = np.zeros((k, k))
    for i, a in enumerate(chosen):
        ra = tracker.nodes(a)
        for j, c in enumerate(chosen):
            W[i, j] = float(delta[ra][:, tracker.nodes(c)].mean())
    summary["graph"] = {"circuits": chosen, "fired": [tracker.fire_counts[c] for c in chosen],
                        "mean_written_change": W.round(6).tolist()}
    angle = np.linspace(0, 2 * np.pi, k, endpoint=False)
    xy = np.stack([np.cos(angle), np.sin(angle)], 1)
    fig, ax = plt.subplots(figsize=(7, 7))
    off = W.copy()
    np.fill_diagonal(off, 0.0)
    scale = np.abs(off).max() or 1.0
    order = np.argsort(-np.abs(off), axis=None)[: max(3 * k, 1)]
    cmap = plt.get_cmap("coolwarm")
    for flat in order:
        i, j = divmod(int(flat), k)
        if i == j or off[i, j] == 0:
            continue
        w = off[i, j] / scale
        ax.annotate("", xy=xy[j] * 0.9, xytext=xy[i] * 0.9,
                    arrowprops=dict(arrowstyle="-|>", lw=0.5 + 3 * abs(w), color=cmap(0.5 + 0.5 * w), alpha=0.8,
                                    connectionstyle="arc3,rad=0.15"))
    fired = np.array([tracker.fire_counts[c] for c in chosen], dtype=float)
    diag = np.diag(W)
    sc = ax.scatter(xy[:, 0], xy[:, 1], s=200 + 800 * fired / max(fired.max(), 1), c=diag, cmap="viridis", zorder=3,
                    edgecolors="k")
    for (x, y), c, f in zip(xy, chosen, fired):
        ax.text(x * 1.15, y * 1.15, f"c{c}\n{int(f)}x", ha="center", va="center", fontsize=8)
    fig.colorbar(sc, ax=ax, shrink=0.6, label="mean written change inside the circuit")
    ax.set_title(f"{k} most frequent circuits of stream {summary['stream']} and their connections\n"
                 f"(arrows: mean change of S[from, to], red +, blue -; max |change| {scale:.3g})", fontsize=9)
    ax.set_xlim(-1.4, 1.4)
    ax.set_ylim(-1.4, 1.4)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _strengths(path: Path, state, cfg, summary: dict) -> Path:
    import matplotlib.pyplot as plt
    S = state.as_dense().detach().double().cpu()
    touched = getattr(state, "touched", None)
    if touched is not None and bool(touched.any()):
        vals = S[touched.cpu()].numpy()
        what = "written entries"
    else:
        vals = S.reshape(-1).numpy()
        what = "all entries (the state records no written-entry map)"
    reg = cfg.gaussian_reg
    summary["strengths"] = {"what": what, "n": int(vals.size), "mean": float(vals.mean()), "std": float(vals.std()),
                            "target_mean": reg.mean, "target_std": reg.std, "regulariser_weight": reg.weight,
                            "init_std": cfg.init_std}
    # Strengths can have long tails: draw the central 99% and say how many lie outside.
    lo, hi = np.percentile(vals, [0.5, 99.5])
    lo, hi = min(lo, reg.mean - 4 * reg.std), max(hi, reg.mean + 4 * reg.std)
    inside = (vals >= lo) & (vals <= hi)
    summary["strengths"].update(min=float(vals.min()), max=float(vals.max()), drawn_range=[float(lo), float(hi)])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(vals[inside], bins=80, range=(lo, hi), density=True, alpha=0.6,
            label=f"{what}: n={vals.size:,}, mean {vals.mean():.3g}, std {vals.std():.3g}; "
                  f"{int((~inside).sum()):,} outside the range drawn (min {vals.min():.3g}, max {vals.max():.3g})")
    xs = np.linspace(lo, hi, 400)
    pdf = np.exp(-0.5 * ((xs - reg.mean) / reg.std) ** 2) / (reg.std * math.sqrt(2 * math.pi))
    ax.plot(xs, pdf * inside.mean(), "r-",
            label=f"Gaussian target N({reg.mean:g}, {reg.std:g}^2), regulariser weight {reg.weight:g}")
    ax.axvspan(-2 * cfg.init_std, 2 * cfg.init_std, color="grey", alpha=0.2,
               label=f"initial state: +-2 std ({cfg.init_std:g})")
    ax.set_yscale("log")
    dens, _ = np.histogram(vals[inside], bins=80, range=(lo, hi), density=True)
    if (dens > 0).any():
        ax.set_ylim(bottom=0.3 * dens[dens > 0].min(), top=3 * max(dens.max(), pdf.max() * inside.mean()))
    ax.set_xlabel("connection strength S[i, j]")
    ax.set_ylabel("density")
    ax.set_title("Connection strengths after the batch", fontsize=10)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _firing(path: Path, ids: list[int], active_idx: torch.Tensor, n_nodes: int) -> Path:
    import matplotlib.pyplot as plt
    T = len(ids)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a1.step(range(T), ids, where="mid", lw=0.8, color="grey")
    a1.scatter(range(T), ids, s=12, c=ids, cmap="tab20", zorder=3)
    a1.set_ylabel("circuit id (by first firing)")
    a1.set_title("Firing order over the stream: the circuit of each step, and the active set", fontsize=10)
    steps = np.repeat(np.arange(T), active_idx.shape[-1])
    a2.scatter(steps, active_idx.reshape(-1).numpy(), s=3, marker="s", color="k")
    a2.set_ylim(-1, n_nodes)
    a2.set_ylabel("active node")
    a2.set_xlabel("step")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _codes(path: Path, disc, stream: int, summary: dict) -> Path:
    import matplotlib.pyplot as plt
    u = disc.usage()
    counts = u["counts"].numpy()
    summary["codes"] = {k: v for k, v in u.items() if k != "counts"}
    summary["codes"]["most_used"] = [int(i) for i in np.argsort(-counts)[:10]]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6))
    a1.bar(np.arange(counts.size), counts, width=1.0)
    a1.set_xlabel("code")
    a1.set_ylabel("uses in the batch")
    a1.set_title(f"Discretiser ({disc.cfg.kind}, {u['n_codes']} codes): perplexity {u['perplexity']:.1f}, "
                 f"{u['used_codes']} used, {u['dead_codes']} dead", fontsize=10)
    codes = disc.codes
    if codes is not None and codes.dim() >= 1:
        row = codes[stream] if codes.dim() == 2 else codes
        a2.scatter(np.arange(row.numel()), row.cpu().numpy(), s=8)
        a2.set_xlabel("position scored (the head's inputs)")
        a2.set_ylabel("code")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
