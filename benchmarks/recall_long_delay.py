"""Word -> object recall 100,000 steps after one exposure, for finished see-and-hear bench cells.

    python benchmarks/recall_long_delay.py runs/bench_sh2/seeandhear_cpu/seeandhear__*__s* \\
        --delays 100000 --out docs/results/seeandhear_long_delay.json

The ``--cpu`` see-and-hear suite measures delays up to 10,000; its full grid (3,000 steps on a GPU)
also 100,000. This measures the longer delays on cells the CPU suite already trained, with the
suite's own streams and scoring (``bench.evaluate.recall_columns``: novel words, one exposure,
streamed in windows of 512 steps with each model's state carried, lifelong). A model whose state
grows with the stream (the Transformer's KV cache: attention over every past step) is skipped at
delays beyond ``--max-cache-steps``, and the table says so. Prints a markdown table (model, lr,
seed, one column per delay); the JSON keeps every cell's numbers and seconds.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from onebigstate.files import atomic_write_text

GROWING_STATE = ("transformer", "hopfield")      # registered mixers whose state is every past step


def long_delay_recall(cell: Path, delays: list[int], n_streams: int, batch_size: int, max_cache: int) -> dict:
    """One finished cell's word->object recall at ``delays`` (None where its state would grow too large)."""
    from onebigstate.bench.evaluate import recall_columns
    from onebigstate.training.loading import load_run
    run = load_run(cell, device="cpu")
    bench = json.loads((cell / "bench.json").read_text())
    growing = run.config.model.name in GROWING_STATE
    kept = [d for d in delays if not (growing and d > max_cache)]
    t0 = time.perf_counter()
    cols = recall_columns(run.model, run.config, {"delays": kept, "exposures": [], "exposure_delay": 100,
                                                  "n_streams": n_streams, "window": 512,
                                                  "batch_size": batch_size}) if kept else {}
    return {"cell": cell.name, "model": bench["model"], "lr": bench["lr"], "seed": bench["seed"],
            "recall": {f"d={d}": cols.get(f"d={d}") for d in delays}, "seconds": time.perf_counter() - t0,
            "skipped": [d for d in delays if d not in kept]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cells", type=Path, nargs="+", help="finished see-and-hear bench cells (with bench.json)")
    ap.add_argument("--delays", default="100000", help="comma-separated delays (default: 100000)")
    ap.add_argument("--streams", type=int, default=64, help="held-out streams per delay (default: 64)")
    ap.add_argument("--batch-size", type=int, default=8, help="streams read at once (default: 8)")
    ap.add_argument("--max-cache-steps", type=int, default=10_000,
                    help="longest delay measured for a model whose state is every past step (default: 10000)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    delays = [int(d) for d in args.delays.split(",")]
    torch.set_num_threads(1)
    rows = []
    for cell in args.cells:
        if not (cell / "bench.json").exists():
            raise SystemExit(f"{cell}: not a finished bench cell (no bench.json)")
        row = long_delay_recall(cell, delays, args.streams, args.batch_size, args.max_cache_steps)
        rows.append(row)
        print(f"{row['cell']}: " + ", ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in row["recall"].items())
              + f" ({row['seconds']:.0f} s)", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)      # after every cell: a killed run keeps its rows
        atomic_write_text(args.out, json.dumps({"delays": delays, "streams": args.streams, "rows": rows},
                                               indent=1) + "\n")
    lines = ["| model | lr | seed | " + " | ".join(f"d={d}" for d in delays) + " | s |",
             "|---|---:|---:|" + "---:|" * len(delays) + "---:|"]
    for r in rows:
        vals = ["not run (state: every past step)" if v is None else f"{v:.3f}" for v in r["recall"].values()]
        lines.append(f"| {r['model']} | {r['lr']:g} | {r['seed']} | " + " | ".join(vals) + f" | {r['seconds']:.0f} |")
    table = "\n".join(lines)
    print(table)
    atomic_write_text(args.out.with_suffix(".md"), table + "\n")


if __name__ == "__main__":
    main()
