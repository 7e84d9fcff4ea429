"""Many processes, one model: what data parallel training, the shared state and the sharded state cost.

    # tokens/s of a DDP training step with 1, 2 and 4 processes, side by side in one run
    python benchmarks/distributed.py speed --procs 1,2,4 --out docs/results/distributed/speed_cpu.json
    # bytes one sync of the shared state moves, sparse pairs against a dense all-reduce, N = 1024 .. 65536
    python benchmarks/distributed.py bytes --nodes 1024,4096,16384,65536 --out docs/results/distributed/bytes.json
    # a trained cell's lifelong retention streams read by 4 processes writing into one shared state
    python benchmarks/distributed.py retention RUN --procs 4 --out docs/results/distributed/retention.json
    # bytes per step of row and column sharding (formulas of onebigstate/distributed/sharded.py)
    python benchmarks/distributed.py sharding --out docs/results/distributed/sharding.json
    # print every table of the page from the JSON files
    python benchmarks/distributed.py report docs/results/distributed/*.json

Every process runs with one intra-op thread; P processes on this machine share its cores, so
tokens/s for P processes larger than the core count measures contention, not scaling. Results
page: docs/results/distributed.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from onebigstate.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "distributed_mqar.yaml"


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def _machine() -> dict:
    return {"cpu_cores": os.cpu_count(), "torch": torch.__version__}


# ---- speed ---------------------------------------------------------------------------------------
def speed_worker(rank: int, world: int, config: str, overrides: list[str], steps: int, warmup: int) -> dict:
    """Seconds per DDP training step (forward, backward with the gradient all-reduce, optimizer)."""
    from onebigstate.config import load_config
    from onebigstate.distributed import data_parallel as dp
    from onebigstate.training.config import RunConfig
    from onebigstate.training.optim import build_optimizer
    from onebigstate.training.trainer import build_run
    cfg = load_config(RunConfig, config, overrides)
    torch.manual_seed(cfg.train.seed)
    task, model = build_run(cfg)
    step_module = dp.wrap(task, model, world)
    opt = build_optimizer(model, cfg.train, log=lambda m: None)
    times = []
    for i in range(warmup + steps):
        x, y = dp.local_batch(*task.train_batch(i, cfg.train.batch_size), rank, world)
        if world > 1:
            torch.distributed.barrier()            # every rank starts the step together
        t0 = time.perf_counter()
        loss = step_module(x, y, None)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"step_s": times, "tokens_per_step": x.shape[0] * x.shape[1] * world}


def cmd_speed(args) -> None:
    from onebigstate.distributed.launch import run_local
    rows = []
    for p in [int(v) for v in args.procs.split(",")]:
        for batch in [int(v) for v in args.batch.split(",")]:
            overrides = [f"train.batch_size={batch}", "train.carry_state=false", *args.set]
            res = run_local(speed_worker, p, str(args.config), overrides, args.steps, args.warmup)
            # a step ends when the slowest rank's does
            step_s = [max(r["step_s"][i] for r in res) for i in range(args.steps)]
            med = statistics.median(step_s)
            rows.append({"procs": p, "global_batch": batch, "median_step_s": med,
                         "tokens_per_s": res[0]["tokens_per_step"] / med})
            print(f"P={p} batch {batch}: {med * 1e3:.1f} ms/step, {rows[-1]['tokens_per_s']:.0f} tokens/s", flush=True)
    _write(args.out, {"kind": "speed", "config": str(args.config), "overrides": args.set, "steps": args.steps,
                      "machine": _machine(), "rows": rows})


# ---- bytes per sync --------------------------------------------------------------------------------
def bytes_worker(rank: int, world: int, config: str, n_nodes: int, streams: int, window: int, time_dense: bool
                 ) -> dict:
    """Each rank streams one window of its own data through a fresh (sparse-store) OBS layer, then
    the changes are exchanged both ways (dense only where ``time_dense``), timed."""
    from onebigstate.config import load_config
    from onebigstate.distributed.shared_state import changes_since, sync_store
    from onebigstate.model.state import DenseState
    from onebigstate.training.config import RunConfig
    from onebigstate.training.trainer import build_run
    cfg = load_config(RunConfig, config, [f"model.mixer.n_nodes={n_nodes}", "model.mixer.state_backend=sparse",
                                          f"task.params.seq_len={window}"])
    torch.manual_seed(0)
    task, model = build_run(cfg)
    layer = model.mixers[0]
    x, _ = task.train_batch(1000 + rank, streams)          # every rank its own data
    before = layer.init_state(streams)
    with torch.no_grad():
        _, states = model.hidden(x, [before.clone()], in_place=True)
    after = states[0]
    out = {"pairs": int(changes_since(after, before)[0].numel())}
    new, rec = sync_store(after, before, "sparse")
    out.update(sparse_s=rec.seconds, bytes_sparse=rec.bytes_sparse, bytes_dense=rec.bytes_dense,
               counts=rec.pairs)
    if time_dense:                                      # both ways on the dense store, same changes
        dense_after = DenseState(after.as_dense())
        dense_before = DenseState(before.as_dense())
        out["dense_store_sparse_s"] = sync_store(dense_after, dense_before, "sparse")[1].seconds
        out["dense_s"] = sync_store(dense_after, dense_before, "dense")[1].seconds
    return out


def cmd_bytes(args) -> None:
    from onebigstate.distributed.launch import run_local
    rows = []
    for n in [int(v) for v in args.nodes.split(",")]:
        time_dense = n <= args.dense_max
        res = run_local(bytes_worker, args.procs, str(args.config), n, args.streams, args.window, time_dense)
        row = {"n_nodes": n, "procs": args.procs, "streams": args.streams, "window": args.window,
               "pairs_per_rank": res[0]["counts"], "bytes_sparse": res[0]["bytes_sparse"],
               "bytes_dense": res[0]["bytes_dense"], "sparse_s": max(r["sparse_s"] for r in res),
               "dense_store_sparse_s": max(r["dense_store_sparse_s"] for r in res) if time_dense else None,
               "dense_s": max(r["dense_s"] for r in res) if time_dense else None}
        rows.append(row)
        print(json.dumps(row), flush=True)
    _write(args.out, {"kind": "bytes", "config": str(args.config), "machine": _machine(), "rows": rows})


# ---- retention on a shared state ------------------------------------------------------------------------
def disjoint_traffic(data, group: int, n_pairs: int, vocab_size: int, seed: int = 0):
    """The lifelong set with no stream's distractor traffic on a key another stream of its group
    (streams ``g*group .. (g+1)*group - 1``, the ones that share a state) wrote: such a distractor
    key is redrawn among the keys no stream of the group wrote. Queries and writes are unchanged."""
    from onebigstate.tasks.common import Grouped
    from onebigstate.tasks.retention import PAD
    x = data.inputs.clone()
    half = vocab_size // 2
    gen = torch.Generator().manual_seed(seed)
    head = 2 * n_pairs
    for g0 in range(0, x.shape[0], group):
        written = torch.zeros(half, dtype=torch.bool)
        written[x[g0:g0 + group, 0:head:2].reshape(-1)] = True
        free = (~written).nonzero().squeeze(1)
        free = free[free > 0]
        keys, nxt = x[g0:g0 + group, head::2], x[g0:g0 + group, head + 1::2]
        n = min(keys.shape[1], nxt.shape[1])
        bad = written[keys[:, :n]] & (nxt[:, :n] != PAD)         # a distractor on a written key
        keys[:, :n][bad] = free[torch.randint(0, free.numel(), (int(bad.sum()),), generator=gen)]
        x[g0:g0 + group, head::2] = keys
    return Grouped(x, data.labels, data.groups, data.names)


def retention_worker(rank: int, world: int, run: str, window: int, shared: bool, exchange: str,
                     disjoint_group: int) -> dict:
    """This rank's share of the lifelong streams (streams r, r + P, ...); with ``shared``, stream j of
    every rank writes into one state, synced after every window. ``disjoint_group`` > 0 first
    applies :func:`disjoint_traffic` to groups of that many streams (the ones sharing a state)."""
    from onebigstate.bench.evaluate import grouped_accuracy
    from onebigstate.distributed.shared_state import SharedStates
    from onebigstate.tasks.common import Grouped
    from onebigstate.training.checkpoint import read_checkpoint
    from onebigstate.training.trainer import model_from_checkpoint
    task, model = model_from_checkpoint(read_checkpoint(run), device="cpu")
    data = task.lifelong_set()
    if disjoint_group:
        p = task.params
        data = disjoint_traffic(data, disjoint_group, p.n_pairs, p.vocab_size)
    mine = slice(rank, None, world)
    part = Grouped(data.inputs[mine], data.labels[mine], data.groups[mine], data.names)
    b = part.inputs.shape[0]
    sync = SharedStates.start(model, None, b, exchange) if shared else None

    def on_window(states, tokens):
        if sync is None:
            return None
        sync.states = states
        return sync.sync()

    t0 = time.perf_counter()
    acc = grouped_accuracy(model, part, batch_size=b, window=window, on_window=on_window,
                           start_states=sync.states if sync is not None else None)
    return {"accuracy": acc, "seconds": time.perf_counter() - t0, "streams": b,
            "sync": sync.summary() if sync is not None else None}


def cmd_retention(args) -> None:
    from onebigstate.distributed.launch import run_local
    out = {"kind": "retention", "run": str(args.run), "window": args.window, "machine": _machine(), "rows": []}
    P = args.procs
    cases = [("1 process, every stream its own state", 1, False, 0),
             (f"{P} processes sharing one state (traffic as generated)", P, True, 0),
             ("1 process, every stream its own state (disjoint traffic)", 1, False, P),
             (f"{P} processes sharing one state (disjoint traffic)", P, True, P)]
    for label, procs, shared, disjoint in cases:
        # streams r, r + P, ... go to rank r: the P streams sharing a state are the consecutive P of one group
        res = run_local(retention_worker, procs, str(args.run), args.window, shared, args.exchange, disjoint)
        acc = _merge_accuracy(res)
        row = {"label": label, "procs": procs, "shared": shared, "disjoint_traffic": bool(disjoint), "accuracy": acc,
               "seconds": max(r["seconds"] for r in res), "sync": res[0]["sync"]}
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
    _write(args.out, out)


def _merge_accuracy(res: list[dict]) -> dict:
    """Accuracy per distance over every rank's streams (each rank holds equally many queries per
    distance, so the mean of the ranks' accuracies is the accuracy of all queries)."""
    keys = res[0]["accuracy"].keys()
    return {k: sum(r["accuracy"][k] for r in res) / len(res) for k in keys}


# ---- bytes of row and column sharding, on paper ---------------------------------------------------------------
def cmd_sharding(args) -> None:
    from onebigstate.distributed.sharded import sharding_bytes_per_step
    rows = []
    for n in [int(v) for v in args.nodes.split(",")]:
        for p in [int(v) for v in args.procs.split(",")]:
            b = sharding_bytes_per_step(n, 12, 16, 12 * 12 + 16 * 12, args.batch, p, 4, row_norm=True)
            rows.append({"n_nodes": n, "procs": p, "batch": args.batch, **b})
    _write(args.out, {"kind": "sharding", "k_max": 12, "m_active": 16, "writes": 12 * 12 + 16 * 12,
                      "row_norm": True, "rows": rows})
    print(json.dumps(rows, indent=1))


# ---- report --------------------------------------------------------------------------------------
def _mb(b) -> str:
    if b >= 1e9:
        return f"{b / 1e6:,.0f} MB"
    return f"{b / 1e6:.3g} MB" if b >= 1e5 else f"{b / 1e3:.3g} KB"


def report(paths: list[Path]) -> None:
    for path in paths:
        d = json.loads(path.read_text())
        print(f"\n### {path}")
        if d["kind"] == "speed":
            base = {r["global_batch"]: r["tokens_per_s"] for r in d["rows"] if r["procs"] == 1}
            print("| processes | global batch | ms / step | tokens/s | vs 1 process |\n|---|---|---|---|---|")
            for r in d["rows"]:
                rel = r["tokens_per_s"] / base[r["global_batch"]] if r["global_batch"] in base else float("nan")
                print(f"| {r['procs']} | {r['global_batch']} | {r['median_step_s'] * 1e3:.0f} | "
                      f"{r['tokens_per_s']:,.0f} | {rel:.2f}x |")
        elif d["kind"] == "bytes":
            print(f"{d['rows'][0]['procs']} processes, {d['rows'][0]['streams']} streams each, one window of "
                  f"{d['rows'][0]['window']} tokens between syncs")
            print("| N | changed entries per rank | sparse pairs (per rank) | dense all-reduce (per rank) | rule picks | "
                  "sparse store, pairs s | dense store, pairs s | dense store, all-reduce s |\n|---|---|---|---|---|---|---|---|")
            fmt = lambda v: f"{v:.3f}" if v is not None else "(not run)"
            for r in d["rows"]:
                pick = "sparse" if r["bytes_sparse"] <= r["bytes_dense"] else "dense"
                print(f"| {r['n_nodes']:,} | {max(r['pairs_per_rank']):,} | {_mb(r['bytes_sparse'])} | "
                      f"{_mb(r['bytes_dense'])} | {pick} | {r['sparse_s']:.3f} | "
                      f"{fmt(r.get('dense_store_sparse_s'))} | {fmt(r['dense_s'])} |")
        elif d["kind"] == "retention":
            keys = [k for k in d["rows"][0]["accuracy"] if k != "all"] + ["all"]
            print("| streams read by | " + " | ".join(keys) + " | s |\n|---" * 1 + "|---" * (len(keys) + 1) + "|")
            for r in d["rows"]:
                print(f"| {r['label']} | " + " | ".join(f"{r['accuracy'][k]:.3f}" for k in keys)
                      + f" | {r['seconds']:.0f} |")
        elif d["kind"] == "sharding":
            print("| N | P | rows fetched | row partial sums | column, gathered (built) | column, local top-m |"
                  "\n|---|---|---|---|---|---|")
            for r in d["rows"]:
                print(f"| {r['n_nodes']:,} | {r['procs']} | {_mb(r['row_fetch'])} | {_mb(r['row_partial'])} | "
                      f"{_mb(r['column_gather'])} | {_mb(r['column_topm'])} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    s.add_argument("--procs", default="1,2,4")
    s.add_argument("--batch", default="8,16")
    s.add_argument("--steps", type=int, default=10)
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    s.add_argument("--out", type=Path, required=True)
    b = sub.add_parser("bytes")
    b.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    b.add_argument("--nodes", default="1024,4096,16384,65536")
    b.add_argument("--procs", type=int, default=2)
    b.add_argument("--streams", type=int, default=4)
    b.add_argument("--window", type=int, default=128)
    b.add_argument("--dense-max", type=int, default=4096, help="largest N whose dense all-reduce is run")
    b.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("retention")
    r.add_argument("run", type=Path)
    r.add_argument("--procs", type=int, default=4)
    r.add_argument("--window", type=int, default=1024)
    r.add_argument("--exchange", default="auto")
    r.add_argument("--out", type=Path, required=True)
    h = sub.add_parser("sharding")
    h.add_argument("--nodes", default="1024,4096,16384,65536")
    h.add_argument("--procs", default="2,4,8")
    h.add_argument("--batch", type=int, default=8)
    h.add_argument("--out", type=Path, required=True)
    rep = sub.add_parser("report")
    rep.add_argument("paths", type=Path, nargs="+")
    args = ap.parse_args(argv)
    if args.cmd == "report":
        report(args.paths)
    else:
        {"speed": cmd_speed, "bytes": cmd_bytes, "retention": cmd_retention, "sharding": cmd_sharding}[args.cmd](args)


if __name__ == "__main__":
    main()
