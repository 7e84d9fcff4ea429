"""Which MQAR keys a trained OBS cell can never recall, and why: the write gates at the key.

    python benchmarks/dead_keys.py \
        runs/bench/extrapolation_cpu/train_T_128_P_32_d_64__obs_balanced_rownorm_n4096__lr0.01__s0 \
        runs/bench/extrapolation_cpu/train_T_128_P_32_d_64__obs_balanced_rownorm_n16384__lr0.01__s0

Each RUN is a trained OBS cell of ``obs bench extrapolation`` (or a checkpoint folder). ``--n``
held-out sequences at the training setting are read (first OBS layer). A key token is *dead*
when every one of its queries (at least two) is answered wrong. For the keys' presentations in
the context (positions 0, 2, 4, ... of MQAR's key-value block) the script reports, for dead and
for live keys, the mean write gates (g_in: the circuit's own connections, g_as: from the active
nodes to the circuit) and the share of the key's circuit (its first k_t nodes) that is among the
active nodes right after it. A key whose g_in is negative inhibits its own circuit, which then
never becomes active, so the value is wired to unrelated rows and no gradient reaches the gate
again (the top-m choice has none): the key stays dead.

Prints one markdown table row per run (``--out`` writes the table to a file).
"""
from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import torch

from onebigstate.model.layer import obs_layers
from onebigstate.tasks.common import IGNORE
from onebigstate.training.checkpoint import read_checkpoint
from onebigstate.training.trainer import model_from_checkpoint

HEADER = ("| run | N | step | accuracy | dead keys | g_in dead / live | g_as dead / live | "
          "circuit active after key: dead / live |\n|---|---:|---:|---:|---:|---:|---:|---:|")


def dead_and_live(query_tokens: list[int], right: list[bool]) -> tuple[set[int], set[int], int]:
    """Keys asked at least twice: (those always answered wrong, those always right, how many)."""
    answers = defaultdict(list)
    for tok, r in zip(query_tokens, right):
        answers[tok].append(r)
    asked = {t: v for t, v in answers.items() if len(v) >= 2}
    return {t for t, v in asked.items() if not any(v)}, {t for t, v in asked.items() if all(v)}, len(asked)


def run_label(run: Path) -> str:
    return f"{run.parent.parent.name} ({run.name})" if run.parent.name == "checkpoints" else run.name


@torch.no_grad()
def dead_key_stats(run: Path, n_seq: int) -> dict:
    ckpt = read_checkpoint(run)
    task, model = model_from_checkpoint(ckpt)
    if task.cfg.name != "mqar":
        raise SystemExit(f"{run}: trained on {task.cfg.name}, not MQAR")
    layers = obs_layers(model)
    if not layers:
        raise SystemExit(f"{run}: not an OBS model")
    model.eval()
    x, y = task.test_set()
    x, y = x[:n_seq], y[:n_seq]
    h, _ = model.hidden(x, None)
    st = layers[0].last_stats
    mask = y != IGNORE
    right = model.head(h[mask]).argmax(-1) == y[mask]
    b_idx, t_idx = mask.nonzero(as_tuple=True)
    dead, live, n_asked = dead_and_live(x[b_idx, t_idx].tolist(), right.tolist())

    P = int(task.params.num_kv_pairs)
    keys = x[:, 0:2 * P:2]                                          # [B, P] the keys' presentations
    gates = st.gates[:, 0:2 * P:2]                                  # [B, P, G]
    k = st.k_hard[:, 0:2 * P:2]
    circuit = st.circuit_idx[:, 0:2 * P:2]                          # [B, P, K]
    active = st.active_idx[:, 0:2 * P:2]                            # [B, P, M]
    in_active = (circuit.unsqueeze(-1) == active.unsqueeze(-2)).any(-1)            # [B, P, K]
    used = torch.arange(circuit.shape[-1]) < k.unsqueeze(-1)
    share = (in_active & used).sum(-1) / k                          # [B, P]

    groups = [torch.isin(keys, torch.tensor(sorted(tokens), dtype=keys.dtype)) for tokens in (dead, live)]
    means = lambda values: tuple(float(values[sel].float().mean()) if sel.any() else float("nan") for sel in groups)
    return {"run": run_label(run), "N": layers[0].cfg.n_nodes,
            "step": ckpt.step, "accuracy": float(right.float().mean()), "dead": len(dead), "asked": n_asked,
            "g_in": means(gates[..., 0]), "g_as": means(gates[..., 1]), "active": means(share)}


def row(s: dict) -> str:
    num = lambda v: "-" if math.isnan(v) else f"{v:.2f}"          # "-": no such key
    pair = lambda v: f"{num(v[0])} / {num(v[1])}"
    return (f"| {s['run']} | {s['N']} | {s['step']} | {s['accuracy']:.3f} | {s['dead']} of {s['asked']} "
            f"({s['dead'] / max(1, s['asked']):.1%}) | {pair(s['g_in'])} | {pair(s['g_as'])} | {pair(s['active'])} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="trained OBS MQAR run (or checkpoint) folders")
    p.add_argument("--n", type=int, default=128, help="held-out sequences read at the training setting")
    p.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")
    torch.set_num_threads(1)
    lines = [HEADER]
    print(HEADER, flush=True)
    for run in args.runs:
        lines.append(row(dead_key_stats(run, args.n)))
        print(lines[-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/dead_keys.py " + " ".join(str(r) for r in args.runs) + \
            ("" if args.n == 128 else f" --n {args.n}") + f" --out {args.out}"
        head = ["# Dead keys: MQAR keys a trained OBS cell never recalls", "",
                f"Produced by `{command}` (CPU), {args.n} held-out sequences at the training setting. "
                "Gates and the share of the key's circuit among the active nodes are at the keys' "
                "presentations; see the script's docstring.", ""]
        args.out.write_text("\n".join(head + lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
