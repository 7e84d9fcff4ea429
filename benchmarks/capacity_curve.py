"""The MQAR capacity curve: accuracy against the number of key-value pairs (sequence length 4x pairs).

    python benchmarks/capacity_curve.py                      # -> docs/results/capacity_curve.md + .png
    python benchmarks/capacity_curve.py --extrapolation docs/results/extrapolation_cpu.json \
        docs/results/n16384/extrapolation_cpu.json          # the N = 16384 page's lr beside the main page's

Two sources, both results pages of ``obs bench`` (their ``.json`` rows), put on one axis:

- ``docs/results/capacity.json`` (``obs bench capacity --full``): each baseline *trained* at each
  number of pairs (vocabulary 32768);
- ``docs/results/extrapolation_cpu.json`` (``obs bench extrapolation --cpu``): OBS trained at
  (128 tokens, 32 pairs) and tested *zero-shot* at (4P tokens, P pairs) for P = 64 .. 1024
  (vocabulary 8192); its test columns ``T=4P`` are exactly the capacity grid's settings. Several
  such pages may be given (a page of its own for one model, e.g. ``docs/results/n16384/``): a
  (model, lr) row of a later page replaces the same row of an earlier one, and a model shown at
  more than one lr has its curves labelled with the lr.

- ``docs/results/capacity_probes/*.json`` (``obs eval RUN task.params.seq_len=T
  task.params.num_kv_pairs=P task.test_size=64 --out ...``): the same OBS cells at settings the
  bench does not test, added to their curves (e.g. P = 512 and P = 2047, T = 8190: MQAR at
  vocabulary 8192 needs T < 8192).

The protocols differ (trained at each size vs zero-shot from 32 pairs; vocabularies 32768 vs
8192), and the page says so next to every row: this is a picture of what has been measured, not
one benchmark.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

DEFAULT_OBS_MODELS = ["obs", "obs_plain", "obs_balanced_rownorm", "obs_balanced_rownorm_n2048",
                      "obs_balanced_rownorm_n4096", "obs_balanced_rownorm_n16384"]
# baselines of the extrapolation pages, drawn zero-shot beside their curves trained at each P
DEFAULT_BASELINES = ["transformer", "lstm", "mamba", "deltanet", "gated_deltanet", "hopfield", "s4d"]


def trained_points(rows: list[dict]) -> list[dict]:
    """Capacity-suite rows -> one curve per (model, width): pairs -> mean accuracy."""
    curves: dict[tuple[str, int], dict] = {}
    for r in rows:
        key = (r["model"], int(r["x"]["width"]))
        c = curves.setdefault(key, {"model": r["model"], "name": r["model"], "width": key[1],
                                    "protocol": "trained at each P", "obs": False,
                                    "n_params": {}, "points": {}, "seeds": {}})
        pairs = int(r["x"]["pairs"])
        c["points"][pairs] = sum(r["accuracy"]) / len(r["accuracy"])
        c["seeds"][pairs], c["n_params"][pairs] = r["n_seeds"], r["n_params"]
    return list(curves.values())


def _train_pairs(setting: str | None) -> str:
    """The pairs a cell was trained at, from its setting ``train T=128 P=32 d=64``."""
    m = re.search(r"\bP=(\d+)", setting or "")
    if m is None:
        raise ValueError(f"no training pairs (P=...) in the cell setting {setting!r}")
    return m.group(1)


def zero_shot_points(rows: list[dict], models: list[str], obs: bool = True) -> list[dict]:
    """Extrapolation rows of ``models`` (OBS models, or baselines with ``obs=False``) -> curves over
    the test columns ``T=4P`` with P >= 64.

    A (model, lr, training setting) seen twice keeps its last row; a model at several lrs is
    labelled with each, and at several training settings with the pairs it was trained at (a
    setting names its width too: the table's width column tells those apart)."""
    last = {(r["model"], r["lr"], r["setting"]): r for r in rows if r["model"] in models}
    lrs_of, settings_of = defaultdict(set), defaultdict(set)
    for model, lr, setting in last:
        lrs_of[model].add(lr)
        settings_of[model].add(setting)
    curves = []
    for r in last.values():
        points = {}
        for label, accs in r["evals"].items():
            T = int(label.split("=")[1])
            if T >= 256:
                points[T // 4] = sum(accs) / len(accs)
        trained_at = _train_pairs(r["setting"])
        label = (r["model"] + (f" (lr {r['lr']:g})" if len(lrs_of[r["model"]]) > 1 else "")
                 + (f" (trained at P={trained_at})" if len(settings_of[r["model"]]) > 1 else ""))
        curves.append({"model": label, "name": r["model"], "lr": r["lr"], "setting": r["setting"], "obs": obs,
                       "width": int(r["x"]["width"]), "protocol": f"zero-shot from P={trained_at}",
                       "n_params": {p: r["n_params"] for p in points}, "points": points,
                       "seeds": {p: r["n_seeds"] for p in points}})
    return curves


def add_probes(curves: list[dict], records: list[dict], models: list[str]) -> list[dict]:
    """Add ``obs eval`` records of bench cells of ``models`` to the zero-shot curves, as (pairs ->
    mean accuracy over the records); returns the records used.

    A record joins the curve of its cell's model, learning rate and training setting
    (``record["bench"]``: a cell trained at more pairs is another curve); a
    setting the bench itself measured keeps the bench's number. A learning rate the page does not
    show (the bench page keeps each model's best, and a cell may not have finished its bench
    evaluation) gets a curve of its own, labelled with it.
    """
    zero = {(c["name"], c["lr"], c["setting"]): c for c in curves if c["obs"]}
    found: dict[tuple[str, float, str, int], list[dict]] = {}
    for r in records:
        cell = r.get("bench") or {}
        if cell.get("model") in models:
            key = (cell["model"], cell.get("lr"), cell.get("setting"), int(r["task_params"]["num_kv_pairs"]))
            found.setdefault(key, []).append(r)
    used = []
    for (model, lr, setting, pairs), recs in sorted(found.items(),
                                                    key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2] or "", kv[0][3])):
        c = zero.get((model, lr, setting))
        if c is None:
            trained_at = _train_pairs(setting)
            c = zero[(model, lr, setting)] = {
                "model": f"{model} (lr {lr:g}, trained at P={trained_at})", "name": model, "lr": lr, "setting": setting,
                "obs": True,
                "width": recs[0].get("d_model", 0), "protocol": f"zero-shot from P={trained_at} (obs eval)",
                "n_params": {}, "points": {}, "seeds": {}}
            curves.append(c)
        if pairs in c["points"]:
            continue
        c["points"][pairs] = sum(r["metrics"]["accuracy"] for r in recs) / len(recs)
        c["seeds"][pairs], c["n_params"][pairs] = len(recs), recs[0]["n_params"]
        used += recs
    return used


def table(curves: list[dict], pairs: list[int]) -> str:
    head = "| model | width | protocol | params | " + " | ".join(f"P={p}" for p in pairs) + " | seeds |"
    lines = [head, "|" + "---|" * 3 + "---:|" * (len(pairs) + 2)]
    for c in curves:
        cells = [f"{c['points'][p]:.3f}" if p in c["points"] else "-" for p in pairs]
        params = sorted(set(c["n_params"].values()))
        seeds = sorted(set(c["seeds"].values()))
        lines.append(f"| {c['model']} | {c['width']} | {c['protocol']} | "
                     + " / ".join(f"{n:,}" for n in params) + " | " + " | ".join(cells) + " | "
                     + "/".join(str(s) for s in seeds) + " |")
    return "\n".join(lines)


_N_COLOURS = {1024: "tab:blue", 2048: "tab:orange", 4096: "tab:green", 16384: "tab:red"}


def obs_style(curve: dict) -> dict:
    """Line style of an OBS curve, from the bench's configuration of its model
    (``onebigstate.bench.cells.model_config``): colour by nodes N, line by ``circuit_direct``
    (0 solid, 1.0 dashed, 4.0 dotted; the plain layer, without row_norm, dash-dot), marker by the
    pairs it was trained at (circle 32, triangle more), filled at lr 3e-3 and open otherwise, and
    thicker at width 128."""
    from onebigstate.bench.cells import model_config
    mixer = model_config(curve["name"], 64, "cpu").mixer
    if "n_nodes" not in mixer:
        raise ValueError(f"'{curve['name']}' is not an OBS model of the bench (onebigstate/bench/cells.py)")
    direct = mixer.get("circuit_direct", 0.0)
    line = ("--" if direct == 1.0 else ":" if direct else "-" if mixer.get("row_norm") else "-.")
    colour = _N_COLOURS.get(mixer["n_nodes"], "tab:purple")
    return {"color": colour, "linestyle": line, "marker": "o" if _train_pairs(curve["setting"]) == "32" else "^",
            "markerfacecolor": colour if curve.get("lr") == 3e-3 else "none",
            "linewidth": 1.5 if curve.get("width", 64) <= 64 else 3.0}


def plot(curves: list[dict], out_png: Path) -> None:
    """Two panels on one y axis: OBS (zero-shot, styled by :func:`obs_style`) and the baselines
    (colour by model; solid: trained at each P, dashed: zero-shot; circle width 64, square 128)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_obs, ax_base) = plt.subplots(1, 2, figsize=(13, 6.5), sharex=True, sharey=True)
    obs = [c for c in curves if c["obs"]]
    base = [c for c in curves if not c["obs"]]
    for c in obs:
        ps = sorted(c["points"])
        label = c["model"] + (f" d={c['width']}" if c["width"] != 64 else "")
        ax_obs.plot(ps, [c["points"][p] for p in ps], label=label, **obs_style(c))
    models = list(dict.fromkeys(c["name"] for c in base))
    colour = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    for c in base:
        ps = sorted(c["points"])
        trained_here = c["protocol"] == "trained at each P"
        ax_base.plot(ps, [c["points"][p] for p in ps], "-" if trained_here else "--",
                     color=colour[c["name"]], marker="o" if c["width"] == 64 else "s",
                     label=f"{c['model']} d={c['width']}" + ("" if trained_here else f", {c['protocol']}"))
    ax_obs.set_title("OBS, tested zero-shot (CPU). Colour: N (blue 1024, orange 2048, green 4096, red 16384);\n"
                     "line: _balanced_rownorm solid, _direct1 and obs dashed, _direct dotted, obs_plain dash-dot; "
                     "filled: lr 3e-3, open: lr 1e-2;\ncircle: trained at 32 pairs, triangle: at 128; "
                     "thick: width 128, thin: 64", fontsize=8)
    ax_base.set_title("baselines: solid trained at each number of pairs (H100),\n"
                      "dashed zero-shot from the pairs trained at (CPU); circle width 64, square 128", fontsize=9)
    for ax in (ax_obs, ax_base):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("key-value pairs (sequence length = 4 x pairs)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    ax_obs.set_ylabel("held-out accuracy")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110, bbox_inches="tight")   # the legends below the axes are wide
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capacity", default="docs/results/capacity.json")
    ap.add_argument("--extrapolation", nargs="+", default=["docs/results/extrapolation_cpu.json"],
                    help="extrapolation pages' .json (later pages' (model, lr) rows replace earlier ones)")
    ap.add_argument("--obs-models", default=",".join(DEFAULT_OBS_MODELS))
    ap.add_argument("--baselines", default=",".join(DEFAULT_BASELINES),
                    help="models of the extrapolation pages drawn zero-shot among the baselines ('' for none)")
    ap.add_argument("--probes", default="docs/results/capacity_probes",
                    help="folder of obs eval records of the OBS cells at other settings (may be absent)")
    ap.add_argument("--out", default="docs/results/capacity_curve.md")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    for path in (args.capacity, *args.extrapolation):
        if not Path(path).exists():
            raise SystemExit(f"{path} not found: write it with obs bench first (see this script's docstring)")
    trained = trained_points(json.loads(Path(args.capacity).read_text()))
    extrap = [r for path in args.extrapolation for r in json.loads(Path(path).read_text())]
    zero = zero_shot_points(extrap, args.obs_models.split(","))
    probe_files = sorted(Path(args.probes).glob("*.json")) if Path(args.probes).is_dir() else []
    probes = add_probes(zero, [json.loads(f.read_text()) for f in probe_files], args.obs_models.split(","))
    settings = sorted({(r["task_params"]["num_kv_pairs"], r["task_params"]["seq_len"]) for r in probes})
    sizes = sorted({r["test_size"] for r in probes})
    baselines = [m for m in args.baselines.split(",") if m]
    curves = zero + zero_shot_points(extrap, baselines, obs=False) + trained
    pairs = sorted({p for c in curves for p in c["points"]})
    out = Path(args.out)
    png = out.with_suffix(".png")
    plot(curves, png)
    command = "python benchmarks/capacity_curve.py" + (" " + " ".join(argv) if argv else "")
    out.write_text("\n".join([
        "# MQAR capacity curve: accuracy against key-value pairs", "",
        f"Produced by `{command}` from `{args.capacity}` and " + ", ".join(f"`{e}`" for e in args.extrapolation)
        + " (each page states "
        "the command, commit and device of its cells).", "",
        "OBS rows: trained at (128 tokens, 32 pairs) unless the protocol says another P (then 4P "
        "tokens, the same tokens per step), vocabulary 8192, tested zero-shot at (4P tokens, P pairs), "
        "on CPU. Baseline rows: trained at each P, vocabulary 32768, 2000 steps, on an H100 "
        "(see the capacity page for the learning rates, the cells that did not finish and the 4 heads of its "
        "width-128 rows), or, where the "
        "protocol says zero-shot, trained and tested as the OBS rows, from the same extrapolation pages. A dash: "
        "not measured. Accuracy is the mean over the seeds given.", "",
        *([f"OBS at " + ", ".join(f"P={p} (T={t})" for p, t in settings) + ": `obs eval` of the same "
           f"trained cells ({len(probes)} records in `{args.probes}/`, each holding its command), "
           f"{'/'.join(map(str, sizes))} held-out sequences each (the bench's columns: 500)."
           + (" MQAR at vocabulary 8192 needs T < 8192, hence P = 2047 at T = 8190 rather than 2048."
              if any(p == 2047 for p, _ in settings) else ""), ""]
          if probes else []),
        table(curves, pairs), "", f"![accuracy against pairs]({png.name})", ""]))
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
