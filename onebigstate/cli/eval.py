"""``obs eval CHECKPOINT``: held-out metrics of a checkpoint, as a table and as eval.json."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onebigstate.config import ConfigError, build_config
from onebigstate.nets.stack import count_params
from onebigstate.tasks.registry import build_task
from onebigstate.training.checkpoint import read_checkpoint
from onebigstate.training.config import RunConfig
from onebigstate.training.trainer import model_from_checkpoint, state_size_of

HELP = """Evaluate a checkpoint on its task's held-out set (the test seed range) and print the
metrics. CHECKPOINT is a checkpoint folder or a run folder (its checkpoints/last). The metrics go
to eval.json in the run folder (or --out).

task.* overrides evaluate the trained model zero-shot at another setting of its task, e.g.
`obs eval RUN task.params.seq_len=2048 task.params.num_kv_pairs=512 task.test_size=64` (MQAR
at 512 pairs); token sequences longer than training are read in windows of the training length
with the state carried, and report accuracy only. The metrics then go to
RUN/eval_<overrides>.json."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on the held-out set", description=HELP)
    p.add_argument("checkpoint", help="checkpoint folder or run folder")
    p.add_argument("--out", metavar="FILE", help="where to write the metrics (default: RUN/eval.json)")
    p.add_argument("--device", help="device to evaluate on (default: the run's train.device)")
    p.add_argument("--batch-size", type=int, help="sequences per evaluation batch")
    p.add_argument("overrides", nargs="*", metavar="task.key=value",
                   help="evaluate at another task setting (task.params.*, task.test_size, task.seed)")
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


def _split(overrides: list[str]) -> list[tuple[str, str]]:
    """``key=value`` strings -> (key, value) pairs (a string without ``=`` is a config error)."""
    if any("=" not in o for o in overrides):
        raise ConfigError(f"overrides must be key=value; got {[o for o in overrides if '=' not in o]}")
    return [(k.strip(), v.strip()) for k, v in (o.split("=", 1) for o in overrides)]


def _task_overrides(ckpt, overrides: list[str]):
    """The checkpoint's task config with ``task.*`` overrides applied (others refused)."""
    bad = [f"{k}={v}" for k, v in _split(overrides)
           if not (k.startswith("task.params.") or k in ("task.test_size", "task.seed"))]
    if bad:
        raise ConfigError(f"obs eval takes only task.params.*, task.test_size and task.seed overrides "
                          f"(the model and its task are the checkpoint's); got {bad}")
    return build_config(RunConfig, ckpt.config.model_dump(mode="json"), overrides,
                        source=f"{ckpt.path}/config.yaml").task


def _default_out(ckpt, overrides: list[str]) -> Path:
    folder = ckpt.run_dir or ckpt.path
    if not overrides:
        return folder / "eval.json"
    slug = "_".join(k.split(".")[-1] + v for k, v in _split(overrides))
    return folder / f"eval_{slug.replace('/', '-')}.json"


def run(args: argparse.Namespace) -> int:
    from onebigstate.bench.evaluate import heldout_metrics
    from onebigstate.bench.runner import cell_identity
    from onebigstate.cli.bench import git_commit
    ckpt = read_checkpoint(args.checkpoint)
    overrides = list(args.overrides or [])
    task_cfg = _task_overrides(ckpt, overrides)
    task, model = model_from_checkpoint(ckpt, device=args.device)
    cfg = ckpt.config
    if overrides:
        task = build_task(task_cfg)
    train_len = int(cfg.task.params.get("seq_len", 0)) if overrides else 0
    metrics = heldout_metrics(model, task, args.batch_size or cfg.train.eval_batch_size, train_len,
                              progress=bool(overrides))
    flags = [f"--{k.replace('_', '-')} {v}" for k, v in (("device", args.device), ("batch_size", args.batch_size))
             if v is not None]
    out = {"command": " ".join(["obs eval", args.checkpoint, *flags, *overrides]), "commit": git_commit(),
           "checkpoint": str(ckpt.path), "step": ckpt.step, "task": task_cfg.name, "model": cfg.model.name,
           "d_model": cfg.model.d_model,
           "overrides": overrides, "task_params": task_cfg.params, "test_size": task_cfg.test_size,
           "metrics": metrics, "n_params": count_params(model), "state_size": state_size_of(model, task)}
    cell = cell_identity(ckpt.run_dir) if ckpt.run_dir else None
    if cell is not None:   # a cell of `obs bench`: say which
        out["bench"] = cell
    rows = [(f"test {k}", format_value(v)) for k, v in metrics.items()]
    rows += _split(overrides)
    rows += [("step", format_value(ckpt.step)), ("test sequences", format_value(task_cfg.test_size)),
             ("parameters", format_value(out["n_params"]))]
    rows += [(f"state size: {k}", format_value(v)) for k, v in out["state_size"].items()]
    Console().print(results_table(f"{cfg.model.name} on {cfg.task.name}, held-out set", rows, caption=str(ckpt.path)))
    path = Path(args.out) if args.out else _default_out(ckpt, overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0
