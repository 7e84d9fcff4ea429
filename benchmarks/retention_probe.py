"""Where OBS forgets in the retention suite: recall per distance and the size of the big state
along a 100,000-token lifelong stream, with and without the spread from the active rows, and
with the row normalisation (``row_norm``) switched the other way at read time.

    python benchmarks/retention_probe.py runs/bench/retention_cpu/T_128_P_8__obs__lr0.01__s0 \
        runs/bench/retention_cpu/T_128_P_8__obs_balanced__lr0.01__s0

Each RUN is a trained OBS retention cell (a run folder with checkpoints). Its task's lifelong set
(the streams the bench scores) is read in windows of ``--window`` tokens with the state carried,
three times: as trained; with ``spread_from_active`` switched off at read time (the read then
spreads only from the current circuit's rows, not from the previously active nodes' rows); and
with ``row_norm`` flipped at read time (on for a model trained without it, off for one trained
with it), which separates what the normalisation does at read time from what training with it
learned.
Writes ``--out`` (a markdown page: accuracy per distance, largest |S_ij| at the end) and a plot
of the largest entry against tokens read.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from onebigstate.bench.evaluate import grouped_accuracy
from onebigstate.model.layer import obs_layers
from onebigstate.training.checkpoint import read_checkpoint
from onebigstate.training.trainer import model_from_checkpoint


def stream(model, data, window: int) -> tuple[dict[str, float], list[tuple[int, float]]]:
    """Accuracy per distance group and (tokens read, largest |S_ij| over streams) per window."""
    sizes = []

    def watch(states, tokens: int) -> None:
        sizes.append((tokens, max(float(t.abs().max()) for s in states if hasattr(s, "snapshot")
                                  for t in s.snapshot().values() if t.is_floating_point())))

    acc = grouped_accuracy(model, data, batch_size=data.inputs.shape[0], window=window, on_window=watch)
    return {n: acc[n] for n in data.names}, sizes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="trained OBS retention run folders")
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--out", default="docs/results/retention_probe.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows, curves = [], {}
    for run in args.runs:
        task, model = model_from_checkpoint(read_checkpoint(Path(run)))
        model.eval()
        layers = obs_layers(model)
        if not layers:
            raise SystemExit(f"{run}: not an OBS model")
        trained = [layer.step_cfg for layer in layers]
        data = task.lifelong_set()
        name = Path(run).name
        flip = "row_norm off at read time" if trained[0].row_norm else "row_norm on at read time"
        changes = {"as trained": {}, "no spread from active rows": {"spread_from_active": False},
                   flip: {"row_norm": not trained[0].row_norm}}
        for variant, change in changes.items():
            for layer, cfg in zip(layers, trained):
                layer.step_cfg = dataclasses.replace(cfg, **change)
            acc, sizes = stream(model, data, args.window)
            rows.append((name, variant, acc, sizes[-1][1]))
            curves[f"{name} ({variant})"] = sizes
            print(name, variant, acc, f"max|S| {sizes[-1][1]:.0f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(rows[0][2])
    lines = ["# Retention probe: where OBS forgets along a 100,000-token stream", "",
             f"Produced by `python benchmarks/retention_probe.py {' '.join(args.runs)}` (CPU, one thread).", "",
             "Each trained OBS cell of `obs bench retention --cpu` reads its lifelong streams (16 streams, "
             "8 associations written at the start, one query per association at the distance given, "
             "distractor key-value traffic everywhere else) in windows of "
             f"{args.window} tokens: as trained, with the spread from the previously active rows switched "
             "off at read time, and with `row_norm` (each read row divided by 1 + its L2 norm) flipped "
             "at read time. |S| max is the largest connection strength in any stream "
             "at the end.", "",
             "| run | read | " + " | ".join(names) + " | |S| max at the end |",
             "|---|---|" + "---:|" * len(names) + "---:|"]
    for name, variant, acc, size in rows:
        lines.append(f"| {name} | {variant} | " + " | ".join(f"{acc[n]:.3f}" for n in names) + f" | {size:,.0f} |")
    plot = out.with_suffix(".png")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, sizes in curves.items():
        if "as trained" in label:
            ax.plot([t for t, _ in sizes], [s for _, s in sizes], label=label.replace(" (as trained)", ""))
    ax.set_xlabel("tokens read")
    ax.set_ylabel("largest |S_ij|")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plot, dpi=120)
    plt.close(fig)
    lines += ["", f"![largest connection strength against tokens read]({plot.name})", ""]
    out.write_text("\n".join(lines))
    print(f"wrote {out} and {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
