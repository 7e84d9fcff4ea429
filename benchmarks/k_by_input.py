"""Does k_t follow the input? Node counts of trained see-and-hear OBS models per kind of input.

    # three models that differ only in the cost of a node (k_cost), 300 steps each
    for c in 0 0.05 0.2; do obs train configs/seeandhear.yaml model.mixer.k_cost=$c train.steps=300 \
        train.progress=false --out runs/k_by_input/kcost$c; done
    python benchmarks/k_by_input.py runs/k_by_input/kcost0 runs/k_by_input/kcost0.05 runs/k_by_input/kcost0.2 \
        --out docs/results/k_by_input/k_by_input.json

Kinds of input (``data.streams.EVENT_NAMES``): a scan of an object (pair and distractor views and
image queries), a spoken word (names, distractor words, word queries), an image of noise, audio
noise, and silence (an empty step). One histogram per model (PNG next to the JSON), and a table of
mean k_t per kind and model.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from onebigstate.files import atomic_write_text

KINDS = {"scan": ("pair-view", "distractor-view", "query-view"), "spoken word": ("pair-word", "distractor-word", "query-word"),
         "noise image": ("noise-image",), "noise audio": ("noise-audio",), "silence": ("silence",)}


def novel_config(task_params: dict):
    """The novel split (words never heard in training) of a see-and-hear run's own stream settings."""
    from onebigstate.data.streams import StreamConfig
    keep = set(StreamConfig.model_fields) - {"split", "seq_len", "extra_words"}
    return StreamConfig(**{k: v for k, v in task_params.items() if k in keep}, split="novel", extra_words=False)


def read_novel_streams(run: Path, n_streams: int, seed: int):
    """The trained see-and-hear model of ``run`` read over ``n_streams`` novel-split streams of its own
    task settings -> (its first OBS layer, whose ``last_stats`` hold the read, the streams)."""
    from onebigstate.data.streams import generate_streams
    from onebigstate.model.layer import obs_layers
    from onebigstate.training.checkpoint import read_checkpoint
    from onebigstate.training.trainer import model_from_checkpoint
    ckpt = read_checkpoint(run)
    _, model = model_from_checkpoint(ckpt, device="cpu")
    layer = obs_layers(model)[0]
    batch = generate_streams(novel_config(ckpt.config.task.params), n_streams, seed)
    model.eval()
    with torch.no_grad():
        model(batch.packed())
    return layer, batch


def probe_parser(doc: str) -> argparse.ArgumentParser:
    """The command line of a probe that reads trained see-and-hear runs over novel-split streams."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    return ap


def k_by_kind(run: Path, n_streams: int, seed: int) -> tuple[dict, dict]:
    from onebigstate.analysis.k_stats import k_histogram_table
    from onebigstate.data.streams import EVENT_NAMES
    layer, batch = read_novel_streams(run, n_streams, seed)
    k = layer.last_stats.k_hard.cpu()
    groups = {name: torch.isin(batch.event, torch.tensor([EVENT_NAMES.index(e) for e in events]))
              for name, events in KINDS.items()}
    c = layer.cfg
    return k_histogram_table(k, groups, c.k_min, c.k_max), {"k_min": c.k_min, "k_max": c.k_max,
                                                            "k_cost": c.k_cost}


def main(argv=None) -> None:
    from onebigstate.analysis.k_stats import plot_k_histogram
    args = probe_parser(__doc__).parse_args(argv)
    rows = []
    for run in args.runs:
        table, cfg = k_by_kind(run, args.streams, args.seed)
        png = args.out.with_name(f"{args.out.stem}_{run.name}.png")
        plot_k_histogram(table, cfg["k_min"], cfg["k_max"], png, f"k_t by input, {run.name} (k_cost {cfg['k_cost']})")
        rows.append({"run": str(run), **cfg, "table": table, "plot": png.name})
        print(f"{run.name} (k_cost {cfg['k_cost']}): " + ", ".join(
            f"{name} {row['mean']:.2f} ± {row['std']:.2f}" for name, row in table.items()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"streams": args.streams, "seed": args.seed, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
