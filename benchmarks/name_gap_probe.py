"""How much does the silence between seeing an object and hearing its name cost?

    python benchmarks/name_gap_probe.py RUN [RUN ...] --out docs/results/write_cost/name_gap.json

Word -> object recall after one exposure at delay 10, on the novel split as the suite measures it
(``experiments/recall.measure_recall``), with the name heard exactly G silent steps after the
object's last frame, for G in ``--gaps`` (the suite trains and tests on G of 1 or 2). A model that
carries what it saw across the silence recalls as well at G = 8 as at G = 1; one whose active set is
replaced by silence's circuit wires the name to silence instead.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))      # its sibling, also when loaded by path
from k_by_input import novel_config, probe_parser  # noqa: E402
from onebigstate.files import atomic_write_text  # noqa: E402

DELAY = 10


def gap_recall(run, gaps: list[int], n_streams: int, seed: int) -> dict[str, float]:
    from onebigstate.experiments.recall import RecallGrid, measure_recall
    grid = RecallGrid(exposures=(1,), delays=(DELAY,), exposure_delay=DELAY)
    base = novel_config(run.config.task.params)
    out = {}
    for gap in gaps:
        res = measure_recall(run.model, base.model_copy(update={"name_gap": (gap, gap)}), grid, n_streams, seed=seed)
        out[f"gap={gap}"] = res.accuracy("word->object", 1, DELAY)[0]
    return out


def main(argv=None) -> None:
    from onebigstate.training.loading import load_run
    ap = probe_parser(__doc__)
    ap.add_argument("--gaps", default="1,2,4,8", help="silent steps between the last frame and the name")
    args = ap.parse_args(argv)
    gaps = [int(g) for g in args.gaps.split(",")]
    torch.set_num_threads(1)
    rows = []
    for path in args.runs:
        row = {"run": str(path), "recall": gap_recall(load_run(path, device="cpu"), gaps, args.streams, args.seed)}
        rows.append(row)
        print(path.name, json.dumps(row["recall"]), flush=True)
    lines = ["| run | " + " | ".join(f"gap {g}" for g in gaps) + " |", "|---|" + "---:|" * len(gaps)]
    lines += [f"| {Path(r['run']).name} | " + " | ".join(f"{r['recall'][f'gap={g}']:.3f}" for g in gaps) + " |"
              for r in rows]
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"delay": DELAY, "gaps": gaps, "streams": args.streams, "rows": rows},
                                           indent=1) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), table + "\n")


if __name__ == "__main__":
    main()
