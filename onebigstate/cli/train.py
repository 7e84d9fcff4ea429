"""``obs train CONFIG [key=value ...] [--resume RUN_OR_CHECKPOINT] [--out DIR]``."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from onebigstate.cli.eval import results_rows, results_table
from onebigstate.config import ConfigError, build_config, load_config
from onebigstate.distributed.data_parallel import check_batch
from onebigstate.distributed.launch import finish, is_main
from onebigstate.training.checkpoint import read_checkpoint, step_folders
from onebigstate.training.config import RunConfig
from onebigstate.training.trainer import CKPT_DIR, CONFIG_FILE, METRICS_FILE, check_resume, check_run_folder, train

HELP = """Train a model on a task. CONFIG is a YAML run config (see configs/); key=value
overrides use dotted keys, e.g. `obs train configs/mqar_64_8.yaml train.steps=500
model.mixer.n_nodes=1024`. The run folder (--out, else out_dir/run_name) receives config.yaml,
metrics.jsonl, TensorBoard logs (tb/), checkpoints/ and, at the end, results.json; a run
folder that holds no checkpoint yet (a run stopped early) is started again, if its config.yaml
names the same task and model.
--resume RUN continues a stopped run from its last checkpoint, with the same metrics an
uninterrupted run would have written; there CONFIG may be left out (the checkpoint's config is
used) and overrides may only change train.* keys, e.g. train.steps to extend the run. The
checkpoint must be of the run folder's own task and model (its config.yaml)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a task (resumable)", description=HELP)
    p.add_argument("config", nargs="?", help="YAML run config (optional with --resume)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.add_argument("--resume", metavar="RUN_OR_CHECKPOINT",
                   help="run folder or checkpoint folder to continue from")
    p.add_argument("--out", metavar="DIR", help="run folder (default: out_dir/run_name from the config)")
    p.add_argument("--nproc", type=int, default=1, metavar="P",
                   help="train data parallel in P processes on this machine (launches torchrun; "
                        "train.batch_size is the global batch and must divide by P)")
    p.set_defaults(func=run)


def _split(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    # With --resume, `obs train --resume RUN train.steps=2000` has no CONFIG: the first
    # positional is then an override.
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():
        overrides.insert(0, config)
        config = None
    return config, overrides


def run(args: argparse.Namespace) -> int:
    if args.nproc != 1:
        return _launch(args)
    config, overrides = _split(args)
    try:
        if args.resume is None:
            return _start(config, overrides, args.out)
        return _resume(args.resume, config, overrides, args.out)
    finally:
        finish()


def _start(config: str | None, overrides: list[str], out: str | None) -> int:
    """A new run, or a run stopped before its first checkpoint started again."""
    if config is None:
        raise ConfigError("obs train needs a CONFIG file (or --resume RUN)")
    cfg = load_config(RunConfig, config, overrides)
    run_dir = Path(out) if out else _default_run_dir(cfg, config)
    if step_folders(run_dir / CKPT_DIR):
        raise ConfigError(f"run folder {run_dir} already holds a run; continue it with "
                          f"`obs train --resume {run_dir}` or choose another --out")
    check_run_folder(run_dir, cfg)
    if (run_dir / CONFIG_FILE).exists() or (run_dir / METRICS_FILE).exists():
        _note(f"note: {run_dir} holds a run stopped before its first checkpoint; starting it again from step 0")
    _print_results(train(cfg, run_dir), cfg)
    return 0


def _default_run_dir(cfg: RunConfig, config: str) -> Path:
    return Path(cfg.out_dir) / (cfg.run_name or f"{Path(config).stem}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}")


def _resume(source: str, config: str | None, overrides: list[str], out: str | None) -> int:
    """Continue a run from a checkpoint (of its run folder, or of another run into ``out``)."""
    ckpt = read_checkpoint(source)
    if config is not None:
        cfg = load_config(RunConfig, config, overrides)
    else:
        cfg = build_config(RunConfig, ckpt.config.model_dump(mode="json"), overrides,
                           source=f"{ckpt.path}/config.yaml")
    check_resume(ckpt, cfg)
    run_dir = Path(out) if out else ckpt.run_dir
    if run_dir is None:
        raise ConfigError(f"checkpoint {ckpt.path} is not inside a run folder (RUN/checkpoints/...); "
                          f"say where the continued run goes with --out DIR")
    check_run_folder(run_dir, cfg, ckpt)
    changed = [k for k, v in cfg.train.model_dump().items() if ckpt.config.train.model_dump()[k] != v]
    if changed:
        _note(f"note: continuing with changed train settings: {', '.join(changed)}")
    _print_results(train(cfg, run_dir, resume=ckpt), cfg)
    return 0


def _launch(args: argparse.Namespace) -> int:
    """``obs train --nproc P ...``: the same command in P processes under torchrun, which stops
    every process (and exits non-zero) when one of them fails."""
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {args.nproc}")
    out = args.out
    config, overrides = _split(args)
    if args.resume is None:
        if config is None:
            raise ConfigError("obs train needs a CONFIG file (or --resume RUN)")
        cfg = load_config(RunConfig, config, overrides)
        # refused here, before P processes each print it
        check_batch(cfg.train.batch_size, args.nproc)
        # one run folder for every process (each would stamp its own time otherwise)
        out = out or str(_default_run_dir(cfg, config))
    argv = ["train"] + ([args.config] if args.config else []) + list(args.overrides)
    argv += (["--resume", args.resume] if args.resume else []) + (["--out", out] if out else [])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
           "-m", "onebigstate.cli.main", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = subprocess.call(cmd, env=env)
    if code != 0:
        print(f"error: the {args.nproc}-process run stopped (torchrun exit code {code}); the run folder keeps its "
              f"last checkpoint, if it wrote one: continue with `obs train --resume {out or args.resume} "
              f"--nproc {args.nproc}`", file=sys.stderr)
    return code


def _note(msg: str) -> None:
    if is_main():
        print(msg)


def _print_results(res: dict, cfg: RunConfig) -> None:
    if not is_main():
        return
    title = f"{cfg.model.name} on {cfg.task.name}: held-out results"
    Console().print(results_table(title, results_rows(res)))
