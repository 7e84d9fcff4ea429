"""How crowded OBS's nodes get as MQAR sequences grow: is capacity an addressing limit?

    python benchmarks/circuit_load.py \
        runs/bench/extrapolation_cpu/train_T_128_P_32_d_64__obs_balanced_rownorm__lr0.01__s0 \
        runs/bench/extrapolation_cpu/train_T_128_P_32_d_64__obs_balanced_rownorm_n2048__lr0.01__s0

Each RUN is a trained OBS cell of ``obs bench extrapolation`` (a run folder with checkpoints and
``bench.json``). For every test setting (T, P) of the cell's columns, ``--n`` held-out sequences
are read and the circuit of every step (its first k_t address nodes, first OBS layer) recorded.
A token's circuit in a sequence is the union of its nodes over its occurrences. Per sequence:

- tokens: distinct tokens (the 2P keys and values, plus MQAR's random filler tokens);
- load: distinct tokens per node in use, averaged over the nodes in use;
- no own node: share of distinct tokens all of whose nodes serve another token too. Such a
  token's rows are also written by other tokens, so its associations are mixed with theirs.

Writes a markdown table (``--out``) with the cell's accuracy (from ``bench.json``) beside it.

``--by-key-load T:P`` adds a second table for one setting: the runs' own accuracy on the ``--n``
sequences, split by how crowded the queried key's circuit is (the load of its least loaded node,
counted as above, at the key's presentation). Two cells with the same load can differ here: how
much sharing a node the readout tolerates is learned, and MQAR at the training setting (about one
token per node) never asks for it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from onebigstate.bench.cells import Options
from onebigstate.bench.suites import build_suite
from onebigstate.model.layer import obs_layers
from onebigstate.tasks.common import IGNORE
from onebigstate.tasks.registry import build_task
from onebigstate.training.checkpoint import read_checkpoint
from onebigstate.training.trainer import model_from_checkpoint



def default_settings() -> str:
    """The test columns (T:P) of ``obs bench extrapolation --cpu``."""
    cell = build_suite("extrapolation", Options(mode="cpu", models=["obs"])).cells[0]
    return ",".join(f"{ev.params['seq_len']}:{ev.params['num_kv_pairs']}" for ev in cell.evals)


def _distinct_pairs(tokens: torch.Tensor, circuit_idx: torch.Tensor, k_hard: torch.Tensor,
                    n_nodes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sequence -> (distinct (token, node) pairs as token * n_nodes + node, tokens per node,
    the [T, K] mask of circuit slots in use, the first k_hard of each step)."""
    K = circuit_idx.shape[1]
    used = torch.arange(K).unsqueeze(0) < k_hard.unsqueeze(1)                      # [T, K]
    pairs = torch.unique((tokens.unsqueeze(1).expand(-1, K) * n_nodes + circuit_idx)[used])
    return pairs, torch.bincount(pairs % n_nodes, minlength=n_nodes), used


def sequence_load(tokens: torch.Tensor, circuit_idx: torch.Tensor, k_hard: torch.Tensor,
                  n_nodes: int) -> dict[str, float]:
    """One sequence: tokens [T], circuit_idx [T, K], k_hard [T] -> its load statistics."""
    pairs, load, _ = _distinct_pairs(tokens, circuit_idx, k_hard, n_nodes)
    tok, node = pairs // n_nodes, pairs % n_nodes
    tok_ids = torch.unique(tok)
    # a token has a node of its own when the least loaded of its nodes serves it alone
    own = torch.full((int(tok.max()) + 1,), 10 ** 9, dtype=torch.long).scatter_reduce(
        0, tok, load[node], reduce="amin")
    return {"tokens": tok_ids.numel(), "nodes": int((load > 0).sum()), "load": float(load[load > 0].float().mean()),
            "no_own": float((own[tok_ids] > 1).float().mean())}


def key_min_load(tokens: torch.Tensor, circuit_idx: torch.Tensor, k_hard: torch.Tensor, n_nodes: int,
                 key_pos: torch.Tensor) -> torch.Tensor:
    """One sequence: for each position in key_pos, the load of the least loaded node of its circuit."""
    _, load, used = _distinct_pairs(tokens, circuit_idx, k_hard, n_nodes)
    per_node = load[circuit_idx[key_pos]].float().masked_fill(~used[key_pos], float("inf"))
    return per_node.min(1).values


class TrainedRun:
    """A trained OBS MQAR cell, loaded once, read at any (T, P)."""

    def __init__(self, run: Path):
        self.run = run
        self.task, self.model = model_from_checkpoint(read_checkpoint(run))
        self.model.eval()
        layers = obs_layers(self.model)
        if not layers:
            raise SystemExit(f"{run}: not an OBS model")
        self.layer = layers[0]
        self.n_nodes = self.layer.cfg.n_nodes
        self.bench = json.loads((run / "bench.json").read_text()) if (run / "bench.json").exists() else {}

    @torch.no_grad()
    def read(self, T: int, P: int, n_seq: int):
        """The first n_seq held-out sequences at (T, P): inputs, labels, hidden states, first layer's stats."""
        cfg = self.task.cfg.model_copy(update={"params": {**self.task.cfg.params, "seq_len": T, "num_kv_pairs": P}})
        x, y = build_task(cfg).test_set()
        x, y = x[:n_seq], y[:n_seq]
        h, _ = self.model.hidden(x, None)
        return x, y, h, self.layer.last_stats


def run_loads(cell: TrainedRun, n_seq: int, settings: list[tuple[int, int]]) -> list[dict]:
    rows = []
    for T, P in settings:
        x, _, _, st = cell.read(T, P, n_seq)
        per_seq = [sequence_load(x[b], st.circuit_idx[b], st.k_hard[b], cell.n_nodes) for b in range(x.shape[0])]
        mean = {k: sum(s[k] for s in per_seq) / len(per_seq) for k in per_seq[0]}
        rows.append({"run": cell.run.name, "N": cell.n_nodes, "T": T, "P": P, **mean,
                     "k": float(st.k_hard.float().mean()), "accuracy": cell.bench.get("evals", {}).get(f"T={T}")})
        print(rows[-1], flush=True)
    return rows


LOAD_BINS = ((1, 2), (2, 4), (4, 8), (8, 16), (16, None))


@torch.no_grad()
def recall_by_key_load(cell: TrainedRun, n_seq: int, T: int, P: int) -> dict:
    """Accuracy of the run's answers at (T, P), split by the queried key's least loaded node."""
    x, y, h, st = cell.read(T, P, n_seq)
    mask = y != IGNORE
    right = (cell.model.head(h[mask]).argmax(-1) == y[mask]).float()
    b_idx, t_idx = mask.nonzero(as_tuple=True)
    loads = torch.empty(right.shape)
    for b in range(x.shape[0]):
        sel = b_idx == b
        keys = x[b, 0:2 * P:2]                                            # MQAR's key presentations
        key_pos = (keys.unsqueeze(0) == x[b, t_idx[sel]].unsqueeze(1)).float().argmax(1) * 2
        loads[sel] = key_min_load(x[b], st.circuit_idx[b], st.k_hard[b], cell.n_nodes, key_pos)
    bins = {}
    for lo, hi in LOAD_BINS:
        sel = (loads >= lo) & (loads < (hi or float("inf")))
        bins[(lo, hi)] = (float(right[sel].mean()) if sel.any() else None, int(sel.sum()))
    return {"run": cell.run.name, "N": cell.n_nodes, "accuracy": float(right.mean()), "bins": bins}


def key_load_table(rows: list[dict], T: int, P: int, n_seq: int) -> list[str]:
    head = " | ".join(f"{lo}-{hi - 1}" if hi and hi - 1 > lo else (f"{lo}" if hi else f">= {lo}") for lo, hi in LOAD_BINS)
    lines = ["", f"## Accuracy by the queried key's least loaded node (T = {T}, {P} pairs)", "",
             f"The runs' answers on {n_seq} held-out sequences; each cell: accuracy (queries). A key's load "
             "is the number of distinct tokens on the least crowded node of its circuit.", "",
             f"| run | N | all | {head} |", "|---|---:|---:|" + "---:|" * len(LOAD_BINS)]
    for r in rows:
        cells = " | ".join("" if acc is None else f"{acc:.3f} ({n})" for acc, n in r["bins"].values())
        lines.append(f"| {r['run']} | {r['N']} | {r['accuracy']:.3f} | {cells} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="trained OBS extrapolation run folders")
    p.add_argument("--n", type=int, default=8, help="held-out sequences read per setting")
    p.add_argument("--settings", default=default_settings(),
                   help="test settings T:P, comma-separated (default: the extrapolation --cpu columns)")
    p.add_argument("--by-key-load", metavar="T:P", default=None,
                   help="also split the runs' accuracy at this setting by the queried key's least loaded node")
    p.add_argument("--out", default="docs/results/circuit_load.md")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")
    try:
        settings = [tuple(int(v) for v in item.split(":")) for item in args.settings.split(",")]
        assert all(len(s) == 2 and s[0] > 0 and s[1] > 0 for s in settings)
    except (ValueError, AssertionError):
        p.error(f"--settings must be T:P pairs of positive integers, comma-separated; got '{args.settings}'")
    by_key = None
    if args.by_key_load is not None:
        try:
            by_key = tuple(int(v) for v in args.by_key_load.split(":"))
            assert len(by_key) == 2 and by_key[0] > 0 and by_key[1] > 0
        except (ValueError, AssertionError):
            p.error(f"--by-key-load must be one T:P pair of positive integers; got '{args.by_key_load}'")
    torch.set_num_threads(1)
    cells = [TrainedRun(run) for run in args.runs]
    rows = [r for cell in cells for r in run_loads(cell, args.n, settings)]
    lines = ["# Circuit load: how crowded the nodes get as MQAR sequences grow", "",
             f"Produced by `python benchmarks/circuit_load.py {' '.join(str(r) for r in args.runs)}"
             f"{'' if args.n == 8 else f' --n {args.n}'}{'' if args.settings == default_settings() else f' --settings {args.settings}'}"
             f"{'' if by_key is None else f' --by-key-load {args.by_key_load}'}` (CPU, one thread), {args.n} held-out sequences per "
             "setting. Accuracy is the cell's own held-out accuracy at that setting (`bench.json`, 500 "
             "sequences). See the script's docstring for the columns.", "",
             "| run | N | T | pairs | mean k | distinct tokens | nodes in use | tokens per node | "
             "tokens with no own node | accuracy |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        acc = "" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        lines.append(f"| {r['run']} | {r['N']} | {r['T']} | {r['P']} | {r['k']:.1f} | {r['tokens']:.0f} | "
                     f"{r['nodes']:.0f} | {r['load']:.1f} | {r['no_own']:.3f} | {acc} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot = out.with_suffix(".png")
    _plot(rows, plot)
    lines += ["", f"![accuracy against tokens per node]({plot.name})"]
    if by_key is not None:
        lines += key_load_table([recall_by_key_load(cell, args.n, *by_key) for cell in cells], *by_key, args.n)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out} and {plot}")
    return 0


def _plot(rows: list[dict], path: Path) -> None:
    """Accuracy against tokens per node, one line per run (labelled with N)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in dict.fromkeys(r["run"] for r in rows):
        pts = [r for r in rows if r["run"] == run and r["accuracy"] is not None]
        if pts:
            ax.plot([r["load"] for r in pts], [r["accuracy"] for r in pts], "o-", label=f"N={pts[0]['N']}: {run}")
            for r in pts:
                ax.annotate(f"P={r['P']}", (r["load"], r["accuracy"]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("distinct tokens per node in use (log)")
    ax.set_ylabel("held-out accuracy")
    if ax.lines:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
