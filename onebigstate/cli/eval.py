"""``obs eval CHECKPOINT``: held-out metrics of a checkpoint, as a table and as eval.json."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onebigstate.nets.stack import count_params
from onebigstate.training.checkpoint import read_checkpoint
from onebigstate.training.trainer import evaluate, model_from_checkpoint, state_size_of

HELP = """Evaluate a checkpoint on its task's held-out set (the test seed range) and print the
metrics. CHECKPOINT is a checkpoint folder or a run folder (its checkpoints/last). The metrics go
to eval.json in the run folder (or --out)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on the held-out set", description=HELP)
    p.add_argument("checkpoint", help="checkpoint folder or run folder")
    p.add_argument("--out", metavar="FILE", help="where to write the metrics (default: RUN/eval.json)")
    p.add_argument("--device", help="device to evaluate on (default: the run's train.device)")
    p.add_argument("--batch-size", type=int, help="sequences per evaluation batch")
    p.set_defaults(func=run)


def results_table(title: str, rows: list[tuple[str, str]], caption: str | None = None) -> Table:
    table = Table(title=title, caption=caption)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for k, v in rows:
        table.add_row(k, v)
    return table


def format_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def results_rows(res: dict) -> list[tuple[str, str]]:
    """Table rows of a ``results.json`` record (see :func:`onebigstate.training.trainer.train`)."""
    rows = [(f"test {k}", format_value(v)) for k, v in res["metrics"].items()]
    rows += [("training steps", format_value(res["step"])), ("parameters", format_value(res["n_params"]))]
    rows += [(f"state size: {k}", format_value(v)) for k, v in res["state_size"].items()]
    rows += [("wall time (s)", f"{res['wall_time_s']:.1f}"), ("run folder", str(res["run"]))]
    return rows


def run(args: argparse.Namespace) -> int:
    ckpt = read_checkpoint(args.checkpoint)
    task, model = model_from_checkpoint(ckpt, device=args.device)
    cfg = ckpt.config
    metrics = evaluate(model, task, args.batch_size or cfg.train.eval_batch_size)
    out = {"checkpoint": str(ckpt.path), "step": ckpt.step, "task": cfg.task.name, "model": cfg.model.name,
           "test_size": cfg.task.test_size, "metrics": metrics, "n_params": count_params(model),
           "state_size": state_size_of(model, task)}
    rows = [(f"test {k}", format_value(v)) for k, v in metrics.items()]
    rows += [("step", format_value(ckpt.step)), ("test sequences", format_value(cfg.task.test_size)),
             ("parameters", format_value(out["n_params"]))]
    rows += [(f"state size: {k}", format_value(v)) for k, v in out["state_size"].items()]
    Console().print(results_table(f"{cfg.model.name} on {cfg.task.name}, held-out set", rows, caption=str(ckpt.path)))
    path = Path(args.out) if args.out else (ckpt.run_dir or ckpt.path) / "eval.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0
