"""``obs bench SUITE``: train every selected model on every cell of a suite, then write its page."""
from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

HELP = """Run a benchmark suite: every selected model on every task setting of the suite, under one
budget (steps, batch), a small per-model learning-rate sweep and several seeds, each cell a
training run in OUT/SUITE[_quick|_cpu]/<cell>/. Finished cells are skipped, so a killed bench resumes
where it stopped (a half-trained cell from its last checkpoint). Then writes
DOCS/SUITE[_quick|_cpu].md: a table (task setting x model: accuracy mean ± spread over seeds at the
best lr, parameters, state size in floats, wall time) with its command and commit, and plots.
Suites: mqar, capacity, extrapolation, retention, sequential, state_tracking, continual (files
under onebigstate/bench/suites/). The suite `speed` trains nothing: it measures tokens/s and peak
memory of OBS (each scan backend) and every baseline against sequence length, N and batch
(--quick: seconds; --cpu: DOCS/speed_cpu.md; --full --device cuda: DOCS/speed_gpu.md)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark suite and write its results page", description=HELP)
    p.add_argument("suite", help="suite name (see onebigstate/bench/suites/)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="small settings, one lr, one seed: a CPU run of minutes (the default)")
    size.add_argument("--cpu", dest="mode", action="store_const", const="cpu",
                      help="a real budget at settings one CPU core affords (extrapolation, retention)")
    size.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="the real grid: every setting, the lr sweep, 3 seeds")
    p.set_defaults(mode="quick")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    p.add_argument("--models", help="comma-separated models (default: all of them)")
    p.add_argument("--seeds", help="comma-separated seeds (default: quick 0, full 0,1,2)")
    p.add_argument("--lrs", help="comma-separated learning rates for every model (default: each model's own grid)")
    p.add_argument("--train", metavar="T:P",
                   help="extrapolation only: train at T tokens / P pairs (the mode's ratio of tokens to pairs), "
                        "the batch scaled to the same tokens per step, e.g. 512:128 under --cpu; its cells and page go "
                        "to extrapolation_cpu_train_T512_P128 (its own folder and page)")
    p.add_argument("--widths", metavar="D,D",
                   help="mqar, capacity, extrapolation: comma-separated model widths instead of the mode's own, "
                        "e.g. 128; its cells and page go to SUITE[_MODE]_d128 (its own folder and page)")
    p.add_argument("--steps", type=int, metavar="N",
                   help="every suite: N training steps per cell instead of the mode's budget (warm-up and "
                        "checkpoints scale with it), e.g. 3000 to see whether a model that learned nothing needed "
                        "longer; its cells and page go to SUITE[_MODE]_steps3000 (its own folder and page)")
    p.add_argument("--train-delay", type=int, metavar="D",
                   help="seeandhear only: train with queries up to D steps after their pairing instead of 30, the "
                        "batch scaled to the same steps per batch; its cells and page go to seeandhear_cpu_delayD "
                        "(its own folder and page)")
    p.add_argument("--cells", metavar="REGEX",
                   help="run only the cells whose folder name matches REGEX (re.search), e.g. 'P_(64|256)_' "
                        "or '__s4d__'; the page still covers every finished cell")
    p.add_argument("--jobs", type=int, default=1,
                   help="cells run at once, each in its own process, longest first (default: 1); on a GPU "
                        "small models are launch-bound, so several jobs share it well")
    p.add_argument("--threads", type=int,
                   help="speed only: intra-op threads of every cell (default: all cores); the targets are also "
                        "measured at 1 thread")
    p.add_argument("--timeout", type=float, default=1800,
                   help="speed only: seconds a cell may take before it is recorded as timed out (default: 1800)")
    p.add_argument("--out", default="runs/bench", help="folder of the suite run folders (default: runs/bench)")
    p.add_argument("--docs", default="docs/results", help="folder of the results pages (default: docs/results)")
    p.add_argument("--list", action="store_true", help="print the cells and exit")
    p.add_argument("--report-only", action="store_true", help="write the page from the finished cells, train nothing")
    p.add_argument("--replot", action="store_true",
                   help="draw the page's plots again from its rows (DOCS/SUITE[_MODE].json), nothing else: no "
                        "cells needed, the page and its table untouched")
    p.set_defaults(func=run)


RUN_CODE = ["bench", "tasks", "training", "nets", "model", "kernels", "baselines", "cli/bench.py"]


def git_commit() -> str:
    """The commit of the code a bench runs, ``(with uncommitted changes ...)`` if it is dirty.

    ``OBS_GIT_COMMIT`` overrides git: a copy of the tree shipped to another machine (a GPU
    machine) may carry a stale ``.git`` or none, and the caller knows which commit it sent.
    """
    given = os.environ.get("OBS_GIT_COMMIT")
    if given:
        return f"{given} (as given by OBS_GIT_COMMIT)"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        # the code a bench run depends on; other parts of the package (acting, see-and-hear) do not count
        paths = [f"onebigstate/{p}" for p in RUN_CODE]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", *paths],
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + (" (with uncommitted changes in the bench, task, model or training code)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def command_line(args: argparse.Namespace) -> str:
    parts = ["obs bench", args.suite, f"--{args.mode}"]
    if args.device != "cpu":
        parts.append(f"--device {args.device}")
    if args.models:
        parts.append(f"--models {args.models}")
    if args.seeds:
        parts.append(f"--seeds {args.seeds}")
    if args.lrs:
        parts.append(f"--lrs {args.lrs}")
    if getattr(args, "train", None):
        parts.append(f"--train {args.train}")
    if getattr(args, "widths", None):
        parts.append(f"--widths {args.widths}")
    if getattr(args, "steps", None):
        parts.append(f"--steps {args.steps}")
    if getattr(args, "train_delay", None):
        parts.append(f"--train-delay {args.train_delay}")
    if getattr(args, "cells", None):
        parts.append(f"--cells '{args.cells}'")
    if getattr(args, "jobs", 1) != 1:
        parts.append(f"--jobs {args.jobs}")  # wall times are per cell, with this many running at once
    if args.out != "runs/bench":
        parts.append(f"--out {args.out}")
    if args.docs != "docs/results":
        parts.append(f"--docs {args.docs}")
    return " ".join(parts)


def _train_setting(text: str) -> tuple[int, int]:
    try:
        T, P = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--train: expected T:P (two integers, e.g. 512:128), got '{text}'") from None
    return T, P


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--widths: expected comma-separated integers (e.g. 128 or 64,128), got '{text}'") from None


def select_cells(suite, pattern: str):
    """The suite with only the cells whose folder name matches ``pattern`` (re.search)."""
    import dataclasses
    import re
    try:
        rx = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"--cells: bad regular expression '{pattern}': {err}") from None
    cells = [c for c in suite.cells if rx.search(c.name)]
    if not cells:
        raise ValueError(f"--cells '{pattern}' matches none of the {len(suite.cells)} cells (see --list)")
    return dataclasses.replace(suite, cells=cells)


def run_speed(args: argparse.Namespace) -> int:
    """``obs bench speed``: the cells of bench/speed.py, each in its own process, then the page."""
    import os
    import re

    import torch

    from onebigstate.bench.runner import device_label
    from onebigstate.bench.speed import SpeedCell, grid, read_rows, run_grid, write_rows
    from onebigstate.bench.speed_profile import run_profile
    from onebigstate.bench.speed_report import missed_fast_rows, write_page
    from onebigstate.config import ConfigError

    threads = args.threads or os.cpu_count() or 1
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    try:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: no CUDA device here")
        cells = grid(args.mode, args.device, threads, models)
        if args.cells:
            rx = re.compile(args.cells)
            cells = [c for c in cells if rx.search(c.name)]
            if not cells:
                raise ValueError(f"--cells '{args.cells}' matches no speed cell (see --list)")
    except (ValueError, re.error) as err:
        raise ConfigError(str(err)) from None
    stem = {"quick": "speed_quick", "cpu": "speed_cpu", "full": "speed_gpu"}[args.mode]
    if args.cells:   # a page of some cells never replaces the whole grid's
        stem += "_cells"
    out_json = Path(args.docs) / f"{stem}.json"
    command = command_line(args) + (f" --threads {args.threads}" if args.threads else "")
    if args.list:
        for c in cells:
            print(c.name)
        print(f"{len(cells)} cells")
        return 0
    machine = device_label(args.device).replace("1 intra-op thread per run", f"{threads} intra-op threads")
    if args.report_only:
        if not out_json.exists():
            raise ConfigError(f"--report-only: no rows at {out_json} (run the suite first)")
        meta, rows = read_rows(out_json)
        rewritten = {"command": f"{command} --report-only", "commit": git_commit()}
    else:
        meta = {"command": command, "commit": git_commit(), "machine": f"{machine}, torch {torch.__version__}",
                "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        t0 = time.perf_counter()
        rows = run_grid(cells, args.device, out_json, args.timeout, meta)
        print(f"speed: {len(rows)} cells in {time.perf_counter() - t0:.0f} s")
        rewritten = None
    # where the time goes in every target missed: a profile of its fast path, for the page
    missed = [r for r in missed_fast_rows(rows) if "profile" not in r]
    for row in missed:
        cell = SpeedCell(**{k: row[k] for k in SpeedCell.__dataclass_fields__})
        row["profile"] = run_profile(cell, args.device, args.timeout)
    if missed:
        write_rows(out_json, meta, rows)
    page = write_page(rows, Path(args.docs) / f"{stem}.md", meta, rewritten)
    print(f"wrote {page} and {out_json}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.suite == "speed":
        return run_speed(args)
    from onebigstate.bench.cells import Options
    from onebigstate.bench.report import redraw_plots, write_report
    from onebigstate.bench.runner import check_cell_configs, device_label, load_cell, run_suite
    from onebigstate.bench.suites import build_suite
    from onebigstate.config import ConfigError

    models = [m.strip() for m in args.models.split(",")] if args.models else None
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
        lrs = [float(v) for v in args.lrs.split(",")] if args.lrs else None
        widths = _widths(args.widths) if getattr(args, "widths", None) else None
        opts = Options(mode=args.mode, models=models, seeds=seeds, device=args.device, lrs=lrs,
                       train=_train_setting(args.train) if args.train else None, widths=widths,
                       steps=getattr(args, "steps", None), train_delay=getattr(args, "train_delay", None))
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
        suite = build_suite(args.suite, opts)
        to_run = select_cells(suite, args.cells) if args.cells else suite
    except ValueError as err:
        raise ConfigError(str(err)) from None
    stem = args.suite if args.mode == "full" else f"{args.suite}_{args.mode}"
    if opts.train is not None:   # its own run folder and page: never mixed with the mode's own cells
        stem += f"_train_T{opts.train[0]}_P{opts.train[1]}"
    if opts.widths is not None:  # likewise: a page of other widths never replaces the mode's own
        stem += "_d" + "_".join(str(d) for d in opts.widths)
    if opts.steps is not None:   # and a page of another budget
        stem += f"_steps{opts.steps}"
    if opts.train_delay is not None:   # and of another training delay
        stem += f"_delay{opts.train_delay}"
    root = Path(args.out) / stem
    if args.replot:
        page_json = Path(args.docs) / f"{stem}.json"
        if not page_json.exists():
            raise ConfigError(f"--replot: no page rows at {page_json} (write the page first)")
        for path in redraw_plots(suite, page_json):
            print(f"drew {path}")
        return 0
    if args.list:
        for c in to_run.cells:
            print(c.name)
        print(f"{len(to_run.cells)} cells under {root}")
        return 0
    try:   # a page is never written from cells of another config than the suite builds now
        check_cell_configs(suite, root)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not args.report_only:
        t0 = time.perf_counter()
        counts = run_suite(to_run, root, commit=git_commit(), jobs=args.jobs, command=command_line(args))
        print(f"{suite.name}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
              + f" in {time.perf_counter() - t0:.0f} s")
    results = {c.name: r for c in suite.cells if (r := load_cell(c, root)) is not None}
    out_md = Path(args.docs) / f"{stem}.md"
    if args.report_only:   # the page's own command; where the cells ran is listed per cell
        rows = write_report(suite, results, out_md, command_line(args) + " --report-only", git_commit(), None)
    else:
        rows = write_report(suite, results, out_md, command_line(args), git_commit(), device_label(args.device))
    print(f"{out_md}: {len(rows)} rows from {len(results)} of {len(suite.cells)} cells")
    return 0
