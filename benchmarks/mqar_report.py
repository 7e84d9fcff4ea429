"""The OBS MQAR results page from finished run folders: accuracy, time, sizes, k_t histogram.

    python benchmarks/mqar_report.py runs/mqar_64_8 runs/mqar_256_32   # writes docs/results/mqar_obs.md

Every number comes from the runs' results.json and from re-running their last checkpoints
on the held-out set; nothing is typed in.
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path


from onebigstate.bench.evaluate import written_entries
from onebigstate.analysis.k_stats import collect_k, k_histogram_table, mqar_roles, plot_k_histogram
from onebigstate.training.checkpoint import read_checkpoint
from onebigstate.training.trainer import model_from_checkpoint


def report_run(run: Path, out_dir: Path) -> tuple[list[str], dict]:
    res = json.loads((run / "results.json").read_text())
    if not (run / "checkpoints" / "last").exists():
        # a run whose checkpoint stayed on another machine (the GPU): results.json only
        import yaml
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        p, mix, tr = cfg["task"]["params"], cfg["model"]["mixer"], cfg["train"]
        return [], {"run": run.name, "seq_len": p["seq_len"], "pairs": p["num_kv_pairs"], "vocab": p["vocab_size"],
                    "acc": res["metrics"]["accuracy"], "n_test": cfg["task"]["test_size"], "steps": res["step"],
                    "batch": tr["batch_size"], "wall_s": res["wall_time_s"], "params": res["n_params"],
                    "n_nodes": mix["n_nodes"], "dense": res["state_size"].get("dense_floats"), "written": None,
                    "init_from": tr.get("init_from"), "k": None}
    ckpt = read_checkpoint(run)
    task, model = model_from_checkpoint(ckpt)
    cfg = ckpt.config
    p = task.params
    inputs, labels = task.test_set()
    k = collect_k(model, inputs)
    mix = cfg.model.mixer
    table = k_histogram_table(k, mqar_roles(inputs, labels, p.num_kv_pairs), mix["k_min"], mix["k_max"])
    png = plot_k_histogram(table, mix["k_min"], mix["k_max"], out_dir / f"mqar_k_hist_{run.name}.png",
                           title=f"k_t on MQAR ({p.seq_len} tokens, {p.num_kv_pairs} pairs), held-out")
    written = written_entries(model, task, n=64)["mean"]
    row = {"run": run.name, "seq_len": p.seq_len, "pairs": p.num_kv_pairs, "vocab": p.vocab_size,
           "acc": res["metrics"]["accuracy"], "n_test": cfg.task.test_size, "steps": res["step"],
           "batch": cfg.train.batch_size, "wall_s": res["wall_time_s"], "params": res["n_params"],
           "n_nodes": mix["n_nodes"], "dense": res["state_size"].get("dense_floats"), "written": written,
           "init_from": cfg.train.init_from, "k_min": mix["k_min"], "k_max": mix["k_max"], "threads": cfg.train.threads, "k": table, "png": png.name}
    return [], row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", default="docs/results/mqar_obs.md", type=Path)
    args = ap.parse_args()
    rows = [report_run(r, args.out.parent)[1] for r in args.runs]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cmd = "python benchmarks/mqar_report.py " + " ".join(str(r) for r in args.runs)
    lines = ["# OBS on MQAR (Zoology's definition)", "",
             f"Page made by `{cmd}` at commit `{commit}` from the run folders. The runs were made by:", "",
             "```bash",
             "obs train configs/mqar_64_8.yaml train.threads=1                 # 600 steps, then",
             "obs train --resume runs/mqar_64_8 train.steps=800 train.threads=1",
             "obs train configs/mqar_256_32.yaml train.threads=1               # starts from mqar_64_8's weights",
             "obs train --resume runs/mqar_256_32 train.steps=450 train.threads=1",
             "obs train configs/mqar_512_64.yaml                               # on one H100, from mqar_256_32's weights",
             "```", "",
             "(The resumed runs extend the cosine schedule to the new step count.) CPU runs: 2 cores shared with "
             "other jobs, one thread per run, so wall times are longer than on an idle machine. The held-out set is "
             "1000 sequences from the test seed range; accuracy is over every query of every sequence.", "",
             "| run | seq len | pairs | vocab | held-out accuracy | test seqs | steps x batch | wall time | params | N | "
             "state: dense N^2 | state: entries written per sequence (mean of 64 held-out) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        steps = f"{r['steps']} x {r['batch']}" + (f" (from {Path(r['init_from']).name})" if r["init_from"] else "")
        lines.append(f"| {r['run']} | {r['seq_len']} | {r['pairs']} | {r['vocab']} | {r['acc']:.4f} | {r['n_test']} | "
                     f"{steps} | {r['wall_s'] / 60:.1f} min | {r['params']:,} | {r['n_nodes']} | {r['dense']:,} | "
                     + (f"{r['written']:,.0f} |" if r["written"] is not None else "(checkpoint on the GPU machine) |"))
    lines += ["", "## k_t varies with the input", "",
              "The write module chooses how many nodes each step's circuit gets (k_t in [k_min, k_max]). "
              "Held-out histograms by kind of step (keys and values of the context, queries, random fillers):", ""]
    for r in rows:
        if r["k"] is None:
            continue
        lines.append(f"### {r['run']}")
        lines.append("")
        lines.append(f"![k_t histogram]({r['png']})")
        lines.append("")
        ks = range(r["k_min"], r["k_max"] + 1)
        lines.append("| kind | steps | mean k_t | std | " + " | ".join(f"k={k}" for k in ks) + " |")
        lines.append("|---|---|---|---|" + "---|" * len(ks))
        for name, t in r["k"].items():
            counts = " | ".join(f"{c / max(1, t['n']):.3f}" for c in t["counts"])
            lines.append(f"| {name} | {t['n']} | {t['mean']:.2f} | {t['std']:.2f} | {counts} |")
        lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
