"""Training accuracy against step for several runs: when each one learns, on one plot.

    python benchmarks/training_curves.py docs/results/width128/heads/* \
        --out docs/results/width128/heads.md --title "Heads of the baselines at width 128: when MQAR is learned"

Each RUN is a run folder of ``obs train`` or ``obs bench`` (or a folder kept from one) holding
``config.yaml``, ``metrics.jsonl`` and ``results.json``; ``RUN=LABEL`` names its line. The page
(``--out``) holds the command, one table row per run (model, width, heads, lr, seed, steps, the
first step whose training-batch accuracy reaches 0.1, 0.5 and 0.9, the final held-out accuracy)
and the plot beside it (``--out`` with ``.png``). Each run is repeated by ``obs train
RUN/config.yaml``. A run cut off before its end (no ``results.json``, e.g. a bench killed at a
device's time limit) is drawn up to its last logged step, and its row says where it stopped
instead of a held-out accuracy it never had.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from onebigstate.config import load_config  # noqa: E402
from onebigstate.training.config import RunConfig  # noqa: E402
from onebigstate.training.trainer import CONFIG_FILE, METRICS_FILE, RESULTS_FILE  # noqa: E402

THRESHOLDS = (0.1, 0.5, 0.9)


def read_run(arg: str) -> dict:
    """The curve and settings of one run folder ``RUN`` or ``RUN=LABEL``."""
    path, _, label = arg.partition("=")
    run = Path(path)
    files = {name: run / name for name in (CONFIG_FILE, METRICS_FILE, RESULTS_FILE)}
    missing = [name for name in (CONFIG_FILE, METRICS_FILE) if not files[name].is_file()]
    if missing:
        raise SystemExit(f"{run}: not a run folder (missing {', '.join(missing)})")
    cfg = load_config(RunConfig, files[CONFIG_FILE])
    rows = []
    for i, line in enumerate(files[METRICS_FILE].read_text().splitlines()):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise SystemExit(f"{files[METRICS_FILE]}: line {i + 1} is not JSON ({err})")
    train = [(r["step"], r["accuracy"]) for r in rows if r.get("kind") == "train" and "accuracy" in r]
    if not train:
        raise SystemExit(f"{files[METRICS_FILE]}: no training accuracy logged")
    run_info = {"run": run, "label": label or run.name, "cfg": cfg, "train": train}
    if not files[RESULTS_FILE].is_file():     # cut off: no held-out evaluation, no parameter count
        return {**run_info, "held_out": None, "n_params": None}
    results = json.loads(files[RESULTS_FILE].read_text())
    return {**run_info, "held_out": results["metrics"]["accuracy"], "n_params": results["n_params"]}


def first_step(train: list[tuple[int, float]], threshold: float) -> int | None:
    return next((step for step, acc in train if acc >= threshold), None)


def table(runs: list[dict]) -> str:
    head = ("| run | model | width | heads | lr | seed | steps | params | "
            + " | ".join(f"acc >= {t} at step" for t in THRESHOLDS) + " | held-out accuracy |")
    lines = [head, "|" + "---|" * 8 + "---:|" * (len(THRESHOLDS) + 1)]
    for r in runs:
        cfg = r["cfg"]
        marks = [first_step(r["train"], t) for t in THRESHOLDS]
        lines.append(f"| {r['label']} | {cfg.model.name} | {cfg.model.d_model} | "
                     f"{cfg.model.mixer.get('n_heads', '-')} | {cfg.train.lr:g} | {cfg.train.seed} | "
                     f"{cfg.train.steps} | {'-' if r['n_params'] is None else format(r['n_params'], ',')} | "
                     + " | ".join("-" if m is None else str(m) for m in marks) + f" | {held_out(r)} |")
    return "\n".join(lines)


def held_out(run: dict) -> str:
    if run["held_out"] is None:
        return f"cut off at step {run['train'][-1][0]}"
    return f"{run['held_out']:.3f}"


def plot(runs: list[dict], png: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        steps, acc = zip(*r["train"])
        ax.plot(steps, acc, label=r["label"], linestyle="--" if r["held_out"] is None else "-")
    ax.set_xlabel("training step")
    ax.set_ylabel("training-batch accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="RUN[=LABEL]")
    ap.add_argument("--out", required=True, help="markdown page to write; the plot goes beside it (.png)")
    ap.add_argument("--title", default="Training curves")
    args = ap.parse_args(argv)
    runs = [read_run(a) for a in args.runs]
    out = Path(args.out)
    png = out.with_suffix(".png")
    plot(runs, png)
    command = "python benchmarks/training_curves.py " + shlex.join(argv)
    out.write_text("\n".join([
        f"# {args.title}", "", f"Produced by `{command}`.", "",
        "Accuracy on each training batch against step (logged every few steps), the first step at which it "
        "reaches each threshold, and the final accuracy on the held-out set (runs cut off before their last "
        "step have none and are drawn dashed). Each run is repeated by `obs train RUN/config.yaml`.", "", table(runs), "", f"![training accuracy against step]({png.name})", ""]))
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
