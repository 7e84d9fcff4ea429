"""Sequential against chunked OBS: accuracy of trained cells in every mode, and tokens/s.

    # a bench cell's evaluations (and the share of steps whose active set differs from
    # sequential, the chunk lengths and sweeps taken) in each mode, without retraining
    python benchmarks/chunked_modes.py eval runs/chunked/extrapolation_cpu/<cell> --suite extrapolation \
        --out docs/results/chunked/<name>.json
    # see-and-hear: recall against delay and exposures of a demo run's OBS models in each mode
    python benchmarks/chunked_modes.py seeandhear runs/chunked/seeandhear --out docs/results/chunked/seeandhear.json
    # the rule gate's chunk lengths stream by stream (batch 1) on runs' held-out data
    python benchmarks/chunked_modes.py gate mqar=RUN retention=RUN --out docs/results/chunked/gate.json
    # training loss curves of runs on one plot
    python benchmarks/chunked_modes.py curves sequential=RUN chunked=RUN --out docs/results/chunked/x.png
    # tokens/s of the OBS layer, forward and forward+backward, batch 1 and 8
    python benchmarks/chunked_modes.py speed --out docs/results/chunked/speed_cpu.json

Modes: ``sequential`` (backend auto: the compiled scan on CPU), ``sequential_python`` (the
reversible Python loop, the path the chunked one is written in), ``C4``/``C16``/``C64`` (chunks of
that many steps, 2 sweeps), ``C16x1`` (1 sweep), ``exact`` (chunks of 16, sweeps until the carries
settle), ``gated`` (the rule gate, chunks of at most 64, 2 sweeps). Results page:
docs/results/chunked.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from onebigstate import OBSConfig, OBSLayer
from onebigstate.files import atomic_write_text
from onebigstate.kernels.chunked import ChunkSpec
from onebigstate.model.layer import obs_layers

MODES = {"sequential": None, "C4": ChunkSpec(4, 2), "C16": ChunkSpec(16, 2), "C64": ChunkSpec(64, 2),
         "C16x1": ChunkSpec(16, 1), "exact": ChunkSpec(16, 0), "gated": ChunkSpec(64, 2, "rule")}
SETTINGS = {"C4": dict(max_chunk=4), "C16": dict(max_chunk=16), "C64": dict(max_chunk=64),
            "C16x1": dict(max_chunk=16, chunk_sweeps=1), "exact": dict(max_chunk=16, chunk_sweeps=0),
            "gated": dict(max_chunk=64, chunk_gate="rule")}


def set_mode(model, spec: ChunkSpec | None) -> None:
    """Run every OBS layer of ``model`` in sequential mode (None) or chunked by ``spec``."""
    for layer in obs_layers(model):
        layer.chunk_spec = spec


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=1))


@torch.no_grad()
def step_stats(task, model, inputs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Active sets [B, T, M] (sorted: compared as sets), chunk lengths and sweeps of one pass
    (through the task, which passes the inputs' continuous flags)."""
    model.eval()
    task.forward(model, inputs, labels)
    st = obs_layers(model)[0].last_stats
    return {"active": st.active_idx.sort(-1).values, "lengths": st.chunk_lengths, "sweeps": st.chunk_sweeps}


def eval_cell(args) -> None:
    from onebigstate.bench.cells import Options
    from onebigstate.bench.evaluate import run_eval
    from onebigstate.bench.suites import build_suite
    from onebigstate.training.checkpoint import read_checkpoint
    from onebigstate.training.trainer import model_from_checkpoint

    from onebigstate.training.trainer import evaluate

    cell_dir = Path(args.cell)
    ckpt = read_checkpoint(cell_dir)
    task, model = model_from_checkpoint(ckpt, device="cpu")
    if args.suite:          # a bench cell: its suite's evaluations
        who = json.loads((cell_dir / "cell.json").read_text())
        suite = build_suite(args.suite, Options(mode=args.mode, models=[who["model"]], seeds=[who["seed"]],
                                                lrs=[who["lr"]]))
        cell = next(c for c in suite.cells if c.name == who["cell"])
        run_evals = lambda: {k: v for ev in cell.evals for k, v in run_eval(ev, model, task, cell.config).items()}
    else:                   # any run: the task's own held-out metrics
        run_evals = lambda: evaluate(model, task, ckpt.config.train.eval_batch_size, task.test_set())
    torch.set_num_threads(args.threads)
    out_path = Path(args.out)
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    out.update(run=str(cell_dir), trained_mode=obs_layers(model)[0].cfg.scan_mode,
               command="python " + " ".join(sys.argv))
    inputs, labels = task.test_set()
    probe = (inputs[:args.probe], labels[:args.probe])
    set_mode(model, None)
    seq_active = step_stats(task, model, *probe)["active"]
    for name in args.modes.split(","):
        if name in out.get("modes", {}):
            continue
        set_mode(model, MODES[name])
        t0 = time.perf_counter()
        cols = run_evals()
        print(name, cols, flush=True)
        st = step_stats(task, model, *probe)
        differ = float((st["active"] != seq_active).any(-1).double().mean())
        lengths = st["lengths"] or [1] * probe[0].shape[1]
        sweeps = st["sweeps"] or [1] * len(lengths)
        out.setdefault("modes", {})[name] = {
            "evals": cols, "active_set_differs": differ, "mean_chunk": sum(lengths) / len(lengths),
            "chunk_lengths": lengths, "mean_sweeps": sum(sweeps) / len(sweeps), "sweeps": sweeps,
            "eval_s": round(time.perf_counter() - t0, 1)}
        _write(out_path, out)


def seeandhear(args) -> None:
    from onebigstate.experiments.recall import RecallGrid, measure_recall
    from onebigstate.experiments.seeandhear import _streams, load_experiment
    from onebigstate.training.checkpoint import read_checkpoint
    from onebigstate.training.trainer import model_from_checkpoint

    torch.set_num_threads(args.threads)
    run_dir = Path(args.run)
    exp = load_experiment(run_dir / "experiment.yaml")
    grid = RecallGrid(tuple(exp.grid.exposures), tuple(exp.grid.delays), exp.grid.exposure_delay)
    out_path = Path(args.out)
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    out.update(run=str(run_dir), command="python " + " ".join(sys.argv))
    for spec in exp.models:
        if spec.model.name != "obs":
            continue
        _, model = model_from_checkpoint(read_checkpoint(run_dir / "models" / spec.label), device="cpu")
        model.eval()
        seq_active = None
        for name in args.modes.split(","):
            if name in out.get(spec.label, {}):
                continue
            set_mode(model, MODES[name])
            t0 = time.perf_counter()
            rec = measure_recall(model, _streams(exp, "novel", image_queries=False), grid, exp.grid.n_streams,
                                 exp.eval_seed, window=exp.grid.window).to_json()
            # the last window read (the grid's last condition, the same streams in every mode)
            st = obs_layers(model)[0].last_stats
            active = st.active_idx.sort(-1).values
            if seq_active is None or name == "sequential":
                seq_active = active
            lengths = st.chunk_lengths or [1] * active.shape[1]
            out.setdefault(spec.label, {})[name] = {
                "recall": rec, "active_set_differs_last_window": float((active != seq_active).any(-1).double().mean()),
                "mean_chunk": sum(lengths) / len(lengths), "chunk_lengths": lengths,
                "mean_sweeps": (sum(st.chunk_sweeps) / len(st.chunk_sweeps)) if st.chunk_sweeps else 1.0,
                "eval_s": round(time.perf_counter() - t0, 1)}
            print(spec.label, name, {k: v for k, v in out[spec.label][name].items() if k != "chunk_lengths"},
                  flush=True)
            _write(out_path, out)


def curves(args) -> None:
    """Training loss against step of run folders (LABEL=RUN ...) on one plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for item in args.runs:
        label, run = item.rsplit("=", 1)
        rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r.get("kind") == "train"]
        ax.plot([r["step"] for r in rows], [r["task_loss"] for r in rows], label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (task)")
    ax.set_yscale("log")
    ax.set_title(args.title)
    ax.legend()
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(args.out)


@torch.no_grad()
def gate_per_stream(task, model, inputs: torch.Tensor, labels: torch.Tensor, max_chunk: int = 64) -> dict:
    """The rule gate's chunk lengths stream by stream (batch 1: no union over streams), from the
    circuits and continuous flags the OBS layer sees in one sequential pass through the task."""
    from onebigstate.kernels.chunked import gate_bounds
    from onebigstate.kernels.scan import ScanInputs

    layer = obs_layers(model)[0]
    seen = {}

    def hook(mod, args, kwargs):
        x = args[0]
        cont = args[2] if len(args) > 2 else kwargs.get("continuous")
        seen["cont"] = mod._continuous_flags(cont, x.shape[0], x.shape[1], x)

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    set_mode(model, None)
    try:
        step_stats(task, model, inputs, labels)
    finally:
        handle.remove()
    idx, cont = layer.last_stats.circuit_idx, seen["cont"]
    lengths = []
    for b in range(idx.shape[0]):
        one = ScanInputs(idx[b:b + 1], idx.new_zeros(1, idx.shape[1], idx.shape[2]).float(),
                         cont.new_zeros(1, idx.shape[1], 1), cont[b:b + 1])
        lengths += [t1 - t0 for t0, t1 in gate_bounds(one, layer.step_cfg, max_chunk)]
    hist = {n: lengths.count(n) for n in sorted(set(lengths))}
    return {"streams": idx.shape[0], "steps": idx.shape[1], "max_chunk": max_chunk,
            "mean_chunk": sum(lengths) / len(lengths), "share_of_steps_in_chunks_of_1": hist.get(1, 0) * 1 / sum(lengths),
            "hist": hist}


def gate(args) -> None:
    from onebigstate.training.checkpoint import read_checkpoint
    from onebigstate.training.trainer import model_from_checkpoint

    out = {"command": "python " + " ".join(sys.argv), "runs": {}}
    for item in args.runs:
        label, run = item.rsplit("=", 1)
        task, model = model_from_checkpoint(read_checkpoint(run), device="cpu")
        inputs, labels = task.test_set()
        out["runs"][label] = {"run": run, **gate_per_stream(task, model, inputs[:args.probe], labels[:args.probe])}
        print(label, {k: v for k, v in out["runs"][label].items() if k != "hist"}, flush=True)
    _write(Path(args.out), out)


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def report(args) -> None:
    """Markdown tables of the JSON files written by ``eval``, ``seeandhear`` and ``speed``."""
    from onebigstate.experiments.recall import RecallResult

    for path in args.files:
        d = json.loads(Path(path).read_text())
        print(f"\n`{d['command']}`\n")
        if "runs" in d:                                     # gate
            bins = [(1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 10 ** 9)]
            print("| task | mean chunk | chunks of 1 | 2 | 3-4 | 5-8 | 9-16 | > 16 |")
            print("|---|" + "---:|" * 7)
            for label, g in d["runs"].items():
                hist = {int(n): c for n, c in g["hist"].items()}
                total = sum(hist.values())
                shares = [sum(c for n, c in hist.items() if lo <= n <= hi) / total for lo, hi in bins]
                print(f"| {label} | {g['mean_chunk']:.1f} | " + " | ".join(f"{x:.2f}" for x in shares) + " |")
        elif "rows" in d:                                   # speed
            modes = [k for k in d["rows"][0] if k not in ("batch", "pass")]
            print("| batch | pass | " + " | ".join(modes) + " |")
            print("|---|---|" + "---:|" * len(modes))
            for r in d["rows"]:
                print(f"| {r['batch']} | {r['pass']} | " + " | ".join(f"{r[m]:,}" for m in modes) + " |")
        elif "modes" in d:                                  # eval
            cols = list(next(iter(d["modes"].values()))["evals"])
            print("| mode | " + " | ".join(cols) + " | active set differs | mean chunk | mean sweeps | eval s |")
            print("|---|" + "---:|" * (len(cols) + 4))
            for name, m in d["modes"].items():
                print(f"| {name} | " + " | ".join(_fmt(m["evals"][c]) for c in cols)
                      + f" | {m['active_set_differs']:.3f} | {m['mean_chunk']:.1f} | {m['mean_sweeps']:.2f} | {m['eval_s']} |")
        else:                                               # seeandhear
            for label, modes in d.items():
                if not isinstance(modes, dict) or label in ("run", "command"):
                    continue
                first = RecallResult.from_json(next(iter(modes.values()))["recall"])
                delays = sorted({dl for (_, e, dl) in first.counts if e == 1})
                grid_d = [x for x in (10, 100, 1000, 10_000) if any(x <= dl < x + max(8, x // 10) for dl in delays)]
                exps = sorted({e for (_, e, _) in first.counts})
                print(f"model trained as `{label}`:\n")
                print("| mode | " + " | ".join(f"delay {x}" for x in grid_d) + " | "
                      + " | ".join(f"{e} exp." for e in exps) + " | active set differs (last window) | mean chunk |")
                print("|---|" + "---:|" * (len(grid_d) + len(exps) + 2))
                for name, m in modes.items():
                    r = RecallResult.from_json(m["recall"])
                    kind = next(iter(r.counts))[0]
                    print(f"| {name} | " + " | ".join(f"{r.accuracy(kind, 1, x)[0]:.3f}" for x in grid_d) + " | "
                          + " | ".join(f"{r.accuracy(kind, e, 100)[0]:.3f}" for e in exps)
                          + f" | {m['active_set_differs_last_window']:.3f} | {m['mean_chunk']:.1f} |")
                print()


def speed(args) -> None:
    torch.set_num_threads(args.threads)
    base = dict(d_model=64, n_nodes=args.nodes, balance_cost=0.1, row_norm=True, circuit_direct=1.0)
    modes = {"sequential": {}, "sequential_python": {"backend": "reversible"},
             **{k: {"scan_mode": "chunked", **v} for k, v in SETTINGS.items()}}
    rows = []
    for B in args.batches:
        x = torch.randn(B, args.seq_len, 64, generator=torch.Generator().manual_seed(0))
        for train in (False, True):
            row = {"batch": B, "pass": "fwd+bwd" if train else "fwd"}
            for name, settings in modes.items():
                torch.manual_seed(0)
                layer = OBSLayer(OBSConfig(**base, **settings))
                times = []
                for _ in range(args.repeats + 1):            # the first is a warm-up
                    t = time.perf_counter()
                    if train:
                        y, _ = layer(x)
                        y.square().mean().backward()
                    else:
                        with torch.no_grad():
                            layer(x)
                    times.append(time.perf_counter() - t)
                row[name] = round(B * args.seq_len / min(times[1:]))
            rows.append(row)
            print(row, flush=True)
    _write(Path(args.out), {"command": "python " + " ".join(sys.argv), "threads": args.threads,
                            "nodes": args.nodes, "seq_len": args.seq_len, "rows": rows})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval", help="a trained run's evaluations in each mode")
    e.add_argument("cell", help="a run folder (a bench cell with --suite: its suite's evaluations)")
    e.add_argument("--suite", default=None)
    e.add_argument("--mode", default="cpu", help="the bench mode the cell was trained under")
    e.add_argument("--modes", default=",".join(MODES))
    e.add_argument("--probe", type=int, default=32, help="held-out sequences for the active-set comparison")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--out", required=True)
    h = sub.add_parser("seeandhear", help="a see-and-hear demo run's OBS models in each mode")
    h.add_argument("run")
    h.add_argument("--modes", default="sequential,C4,C16,C64,C16x1,gated")
    h.add_argument("--threads", type=int, default=1)
    h.add_argument("--out", required=True)
    c = sub.add_parser("curves", help="training loss curves of runs on one plot")
    c.add_argument("runs", nargs="+", help="LABEL=RUN_FOLDER")
    c.add_argument("--title", default="")
    c.add_argument("--out", required=True)
    g = sub.add_parser("gate", help="the rule gate's chunk lengths stream by stream on runs' held-out data")
    g.add_argument("runs", nargs="+", help="LABEL=RUN_FOLDER")
    g.add_argument("--probe", type=int, default=64)
    g.add_argument("--out", required=True)
    r = sub.add_parser("report", help="markdown tables of the JSON files")
    r.add_argument("files", nargs="+")
    s = sub.add_parser("speed", help="tokens/s of the layer in each mode")
    s.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    s.add_argument("--seq-len", type=int, default=256)
    s.add_argument("--nodes", type=int, default=1024)
    s.add_argument("--repeats", type=int, default=2)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    {"eval": eval_cell, "seeandhear": seeandhear, "curves": curves, "gate": gate, "report": report, "speed": speed}[args.cmd](args)


if __name__ == "__main__":
    main()
