"""Keep a bench's finished cell records in the repository, so its page can be rewritten anywhere.

    python benchmarks/keep_cells.py runs/bench/extrapolation_cpu docs/results/n16384/cells/extrapolation_cpu \
        --cells 'obs_balanced_rownorm_n16384__'

A cell's run folder holds checkpoints and logs (megabytes to gigabytes) that are not committed,
so a fresh checkout has none of the cells a page was written from, and ``obs bench ...
--report-only`` there would write a page without them. The records the page reads are small:
``results.json`` (the trainer's held-out metrics, parameter count, state size, wall time),
``bench.json`` (the evaluation columns, written entries, commit, command, device) or
``diverged.json``, and the resolved ``config.yaml``. This copies those of every finished cell
of SRC (a suite's run root) whose folder name matches ``--cells`` into DEST; then

    obs bench SUITE ... --report-only --out DEST_PARENT --docs PAGE_DIR

rewrites the page from DEST (``--out`` names the folder that holds ``SUITE[_MODE]/``).
``--with-log`` also keeps each cell's training log (``metrics.jsonl``, about 20 kB per 1000
steps), which ``benchmarks/training_curves.py`` reads to show when a cell learned.
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

from onebigstate.bench.runner import BENCH_FILE, DIVERGED_FILE
from onebigstate.training.trainer import CONFIG_FILE, METRICS_FILE, RESULTS_FILE

RECORDS = (RESULTS_FILE, BENCH_FILE, DIVERGED_FILE, CONFIG_FILE)


def finished(cell_dir: Path) -> bool:
    """A cell the bench would skip: evaluated (bench.json and results.json) or diverged."""
    return ((cell_dir / BENCH_FILE).exists() and (cell_dir / RESULTS_FILE).exists()) \
        or (cell_dir / DIVERGED_FILE).exists()


def keep(src: Path, dest: Path, pattern: str = "", with_log: bool = False) -> list[str]:
    """Copy the records of ``src``'s finished cells matching ``pattern`` to ``dest`` (and their
    training logs if ``with_log``); their names."""
    if not src.is_dir():
        raise SystemExit(f"keep_cells: {src} is not a folder of bench cells")
    rx = re.compile(pattern)
    kept = []
    for cell_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        if not (rx.search(cell_dir.name) and finished(cell_dir)):
            continue
        out = dest / cell_dir.name
        out.mkdir(parents=True, exist_ok=True)
        for name in RECORDS + ((METRICS_FILE,) if with_log else ()):
            if (cell_dir / name).exists():
                shutil.copy2(cell_dir / name, out / name)
        kept.append(cell_dir.name)
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="a suite's run root, e.g. runs/bench/extrapolation_cpu")
    ap.add_argument("dest", type=Path, help="where the records go, e.g. docs/results/PAGE/cells/extrapolation_cpu")
    ap.add_argument("--cells", default="", help="regular expression on the cell folder names (default: all)")
    ap.add_argument("--with-log", action="store_true", help=f"also keep each cell's training log ({METRICS_FILE})")
    args = ap.parse_args()
    kept = keep(args.src, args.dest, args.cells, args.with_log)
    for name in kept:
        print(name)
    print(f"{len(kept)} finished cells kept in {args.dest}")


if __name__ == "__main__":
    main()
