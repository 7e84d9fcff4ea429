"""What ``obs demo`` runs: the see-and-hear comparison with the embedded default settings
(:class:`~onebigstate.experiments.seeandhear.SeeHearExperiment`'s defaults), sized for a CPU.

The run folder is fixed (``runs/demo-seeandhear`` unless ``--out``), so a second ``obs demo``
finds the checkpoints the first one trained and loads them instead of training again (the
table says which; ``--fresh`` trains anew).
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from onebigstate.experiments.recall import RecallResult
from onebigstate.experiments.report import rich_table
from onebigstate.experiments.seeandhear import SeeHearExperiment, load_experiment, run_experiment

DEFAULT_RUN = Path("runs") / "demo-seeandhear"


def demo_experiment(config: str | Path | None = None, overrides: list[str] | None = None) -> SeeHearExperiment:
    """The embedded default experiment (or ``config``), with dotted ``key=value`` overrides."""
    return load_experiment(config, overrides)


def run_demo(exp: SeeHearExperiment, run_dir: str | Path = DEFAULT_RUN, fresh: bool = False,
             console: Console | None = None) -> dict:
    console = console or Console(width=max(Console().width, 150))
    t0, cpu0 = time.perf_counter(), time.process_time()
    steps = exp.train.steps
    names = ", ".join(f"{m.label} ({m.model.n_layers}L)" for m in exp.models)
    console.print(f"[bold]obs demo[/bold]: see and hear. Models: {names}; {steps} training steps of "
                  f"{exp.train.batch_size} streams each, encoders pretrained for "
                  f"{exp.task.pretrain_steps} batches; run folder {run_dir}")
    summary = run_experiment(exp, run_dir, reuse=not fresh, log=lambda msg: console.print(msg, highlight=False))
    recalls = {k: {m: RecallResult.from_json(r) for m, r in v.items()} for k, v in summary["recall"].items()}
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    trained = [r["label"] for r in summary["rows"] if not r["source"].startswith("loaded")]
    how = "all trained now" if len(trained) == len(summary["rows"]) else (
        "loaded from an earlier obs demo's checkpoints" + (f" except {', '.join(trained)}" if trained else ""))
    console.print(rich_table(exp, summary["rows"], recalls,
                             title=f"obs demo: see and hear, recall of new pairings ({how}; "
                                   f"{wall:.0f} s wall, {cpu:.0f} s CPU)"))
    console.print("plots: " + ", ".join(str(Path(run_dir) / f) for f in summary["figures"]), highlight=False)
    console.print(f"tables: {Path(run_dir) / 'results.md'}; numbers: {Path(run_dir) / 'summary.json'}", highlight=False)
    summary["wall_time_s"], summary["cpu_time_s"] = wall, cpu
    return summary
