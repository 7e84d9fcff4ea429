"""Entries of OBS's big state written by trained bench cells on held-out MQAR sequences of one setting.

    python benchmarks/written_entries.py 512:128 runs/bench/extrapolation_cpu/CELL runs/bench/extrapolation_cpu_train_T512_P128/CELL

A bench page gives each cell's written entries at its own training setting; cells trained at
different settings (``obs bench extrapolation --train``) are compared here on the same sequences:
the task of each run's config with ``seq_len`` T and ``num_kv_pairs`` P, its held-out set, the mean
over ``--n`` sequences (``onebigstate.bench.evaluate.written_entries``). Prints one line per run.
"""
from __future__ import annotations

import argparse
import sys

from onebigstate.bench.evaluate import written_entries
from onebigstate.tasks.registry import build_task
from onebigstate.training.checkpoint import read_checkpoint
from onebigstate.training.trainer import model_from_checkpoint


def entries_at(run: str, seq_len: int, pairs: int, n: int = 32) -> dict[str, float] | None:
    ckpt = read_checkpoint(run)
    _, model = model_from_checkpoint(ckpt, device="cpu")
    params = {**ckpt.config.task.params, "seq_len": seq_len, "num_kv_pairs": pairs}
    return written_entries(model, build_task(ckpt.config.task.model_copy(update={"params": params})), n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("setting", metavar="T:P", help="sequence length and key-value pairs, e.g. 512:128")
    ap.add_argument("runs", nargs="+", help="trained run folders (or checkpoints)")
    ap.add_argument("--n", type=int, default=32, help="held-out sequences (default: 32, as the bench)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        T, P = (int(v) for v in args.setting.split(":"))
    except ValueError:
        ap.error(f"setting: expected T:P (two integers), got '{args.setting}'")
    for run in args.runs:
        got = entries_at(run, T, P, args.n)
        print(f"{run} T={T} P={P}: " + ("not an OBS model" if got is None
                                         else f"{got['mean']:,.0f} entries written (max {got['max']:,.0f})"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
