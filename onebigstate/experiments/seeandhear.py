"""The see-and-hear experiment: OBS and baselines trained on the same streams with the same
budget, then cross-modal recall measured against exposures and against delay.

    python -m onebigstate.experiments.seeandhear                                  # the demo's settings
    python -m onebigstate.experiments.seeandhear configs/seeandhear_experiment.yaml --out runs/seeandhear

Every model is one ``obs train`` run of the ``seeandhear`` task (its run folder under
``RUN/models/<label>/``), so the trainer's checkpoints, metrics and resumption apply. A model
whose run folder already holds a finished run of the same task and model config is loaded
from its checkpoint instead of trained again (stated in the log and the table).

Recall (``recall.py``): word->object on ``novel`` streams (words never heard in training,
test voices, test scans: the pairing can only be in the state); object->word on ``test``
streams (digit words, test voices and scans, a fresh pairing per stream), since a classifier
cannot name a word it never heard in training. Long delays stream in windows with the state
carried.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import Field

from onebigstate.config import ConfigError, StrictModel, build_config, load_yaml
from onebigstate.data.streams import StreamConfig, generate_streams
from onebigstate.experiments import plots
from onebigstate.experiments.obs_state import inspect_pairing
from onebigstate.experiments.recall import RecallGrid, RecallResult, measure_recall
from onebigstate.experiments.report import markdown_tables, rich_table
from onebigstate.nets.stack import ModelConfig, count_params
from onebigstate.tasks.base import TaskConfig
from onebigstate.tasks.seeandhear_task import TASK_KEYS, SeeHearParams
from onebigstate.training.checkpoint import CheckpointError, read_checkpoint
from onebigstate.training.config import RunConfig, TrainConfig
from onebigstate.training.trainer import RESULTS_FILE, model_from_checkpoint, train

WORD_TO_OBJECT, OBJECT_TO_WORD = "word->object", "object->word"


class ModelSpec(StrictModel):
    label: str = Field(description="name in the tables and the run folder")
    model: ModelConfig
    steps: int | None = Field(None, ge=1, description="training steps (None: the experiment's train.steps)")


def _default_models() -> list[ModelSpec]:
    # The see-and-hear recipe (docs/results/write_cost.md) over the layer's defaults: reverse_assoc (the
    # word heard after an object is wired back to it, so the word recalls the object), write_cost 1
    # (writes where the loss needs them, not on silence) and active_persist 1 (what was active stays
    # active across the silence before a name). At this budget it recalled more than the plain layer
    # (PLAIN_LAYER, the demo's OBS until 2026-12-05) in 2 seeds of 2 (docs/results/seeandhear.md).
    obs = {"n_nodes": 256, "k_min": 4, "k_max": 8, "m_active": 16, "reverse_assoc": True, "write_cost": 1.0,
           "active_persist": 1.0}
    return [ModelSpec(label="obs", model=ModelConfig(name="obs", n_layers=1, mixer=obs)),
            ModelSpec(label="transformer", model=ModelConfig(name="transformer", n_layers=2)),
            ModelSpec(label="lstm", model=ModelConfig(name="lstm", n_layers=1)),
            ModelSpec(label="mamba", model=ModelConfig(name="mamba", n_layers=2)),
            ModelSpec(label="deltanet", model=ModelConfig(name="deltanet", n_layers=2))]


def _default_task() -> SeeHearParams:
    return SeeHearParams(n_pairs=3, exposures=[1, 2], delay_min=3, delay_max=30, view_frames=2, name_gap=(1, 2),
                         spacing=(1, 4), image_query_frac=0.0, extra_words=True, pretrain_steps=150,
                         freeze_encoder=True)


def _default_train() -> TrainConfig:
    return TrainConfig(steps=300, batch_size=16, lr=3e-3, warmup=10, eval_batch_size=64, log_every=10,
                       progress=False)


class GridConfig(StrictModel):
    exposures: list[int] = Field(default_factory=lambda: [1, 2, 3, 5])
    delays: list[int] = Field(default_factory=lambda: [10, 100, 1000])
    exposure_delay: int = Field(100, ge=1, description="delay of the recall-vs-exposures points")
    n_streams: int = Field(32, ge=1, description="held-out streams per condition")
    window: int = Field(512, ge=1, description="steps per window when streaming with carried state")
    object_to_word: bool = Field(False, description="also measure object->word (on test-split streams; train "
                                                    "with task.image_query_frac > 0 for it)")


class SeeHearExperiment(StrictModel):
    """One comparison: the task's streams, the models, the shared training budget, the recall grid."""

    seed: int = 0
    task: SeeHearParams = Field(default_factory=_default_task, description="the seeandhear task's params")
    models: list[ModelSpec] = Field(default_factory=_default_models)
    train: TrainConfig = Field(default_factory=_default_train, description="training settings shared by every model")
    test_size: int = Field(64, ge=1, description="held-out streams of the trainer's own final evaluation")
    grid: GridConfig = GridConfig()
    eval_seed: int = Field(5_000_000, description="seed of the recall streams (apart from training and test seeds)")

    def run_config(self, spec: ModelSpec) -> RunConfig:
        train = self.train if spec.steps is None else self.train.model_copy(update={"steps": spec.steps})
        task = TaskConfig(name="seeandhear", seed=self.seed, test_size=self.test_size,
                          params=self.task.model_dump(mode="json"))
        return RunConfig(task=task, model=spec.model, train=train, run_name=spec.label)


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) and k != "mixer" else v
    return out


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None) -> SeeHearExperiment:
    """The default experiment, updated by a YAML file (its keys only: a file that sets
    ``train.steps`` keeps every other default) and by dotted ``key=value`` overrides."""
    tree = SeeHearExperiment().model_dump(mode="json")
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"experiment config {path} does not exist")
        tree = _merge(tree, load_yaml(path.read_text(), str(path)) or {})
        source = str(path)
    return build_config(SeeHearExperiment, tree, overrides, source=source)


def _matching_run(run_dir: Path, cfg: RunConfig) -> Path | None:
    """The checkpoint of a finished earlier run of the same task, model and steps in ``run_dir``."""
    if not (run_dir / RESULTS_FILE).exists():
        return None
    try:
        ckpt = read_checkpoint(run_dir)
    except CheckpointError:
        return None
    same = ckpt.config.identity() == cfg.identity() and ckpt.step == cfg.train.steps
    return ckpt.path if same else None


def run_experiment(exp: SeeHearExperiment, run_dir: str | Path, reuse: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or load) every model, measure recall, write plots, tables and ``summary.json``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "experiment.yaml").write_text(exp.to_yaml())
    grid = RecallGrid(tuple(exp.grid.exposures), tuple(exp.grid.delays), exp.grid.exposure_delay)
    rows, recalls, models = [], {WORD_TO_OBJECT: {}, OBJECT_TO_WORD: {}}, {}
    for spec in exp.models:
        cfg = exp.run_config(spec)
        mdir = run_dir / "models" / spec.label
        ckpt_path = _matching_run(mdir, cfg) if reuse else None
        if ckpt_path is not None:
            res = json.loads((mdir / RESULTS_FILE).read_text())
            source = f"loaded {ckpt_path} (trained earlier)"
        else:
            if mdir.exists() and any(mdir.iterdir()):
                stale = mdir.with_name(f"{spec.label}.old-{int(time.time())}")
                mdir.rename(stale)
                log(f"{spec.label}: {mdir} held another run; moved to {stale}")
            res = train(cfg, mdir, log=log)
            source = "trained now"
        log(f"{spec.label}: {source}")
        _, model = model_from_checkpoint(read_checkpoint(mdir), device="cpu")
        models[spec.label] = model
        t0 = time.perf_counter()
        recalls[WORD_TO_OBJECT][spec.label] = measure_recall(
            model, _streams(exp, "novel", image_queries=False), grid, exp.grid.n_streams, exp.eval_seed,
            window=exp.grid.window)
        if exp.grid.object_to_word:
            recalls[OBJECT_TO_WORD][spec.label] = measure_recall(
                model, _streams(exp, "test", image_queries=True), grid, exp.grid.n_streams, exp.eval_seed + 1,
                window=exp.grid.window)
        eval_s = time.perf_counter() - t0
        rows.append({"label": spec.label, "model": cfg.model.name, "layers": cfg.model.n_layers,
                     "params": count_params(model), "steps": res["step"], "train_s": res["wall_time_s"],
                     "eval_s": round(eval_s, 1), "heldout_accuracy": res["metrics"].get("accuracy"),
                     "source": source})
        log(f"{spec.label}: recall measured in {eval_s:.0f} s")

    figures = _plots(exp, run_dir, recalls, models, grid)
    summary = {"rows": rows, "grid": exp.grid.model_dump(),
               "recall": {k: {m: r.to_json() for m, r in v.items()} for k, v in recalls.items()},
               "figures": [str(f.relative_to(run_dir)) for f in figures]}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (run_dir / "results.md").write_text(markdown_tables(exp, rows, recalls))
    return summary


def _streams(exp: SeeHearExperiment, split: str, image_queries: bool) -> StreamConfig:
    d = exp.task.model_dump(exclude=TASK_KEYS)
    d.update(split=split, image_query_frac=1.0 if image_queries else 0.0, seq_len=None)
    if split == "novel":
        d["extra_words"] = False
    return StreamConfig(**d)


def _plots(exp: SeeHearExperiment, run_dir: Path, recalls: dict, models: dict, grid: RecallGrid) -> list[Path]:
    out = []
    for kind, res in recalls.items():
        if not res:
            continue
        slug = "word_to_object" if kind == WORD_TO_OBJECT else "object_to_word"
        chance = 0.1 if kind == WORD_TO_OBJECT else None
        out.append(plots.plot_recall_vs_delay(res, kind, 1, list(grid.delays), run_dir / f"recall_vs_delay_{slug}.png",
                                              chance=chance))
        out.append(plots.plot_recall_vs_exposures(res, kind, grid.exposure_delay, list(grid.exposures),
                                                  run_dir / f"recall_vs_exposures_{slug}.png", chance=chance))
    obs = next((m for m in models.values() if m.cfg.name == "obs"), None)
    if obs is not None:
        stream_cfg = _streams(exp, "novel", image_queries=False)
        batch = generate_streams(stream_cfg.model_copy(update={"exposures": [1]}), 1, exp.eval_seed + 17)
        view = inspect_pairing(obs, batch)
        out.append(plots.plot_state_heatmap(view, run_dir / "obs_state_heatmap.png"))
        out.append(plots.plot_circuits(view, run_dir / "obs_circuits.png"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m onebigstate.experiments.seeandhear", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="YAML experiment config (default: the demo's settings)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--out", default="runs/seeandhear", help="run folder")
    p.add_argument("--fresh", action="store_true", help="train every model again even if a matching run exists")
    args = p.parse_args(argv)
    if args.config and "=" in args.config and not Path(args.config).exists():
        args.overrides.insert(0, args.config)
        args.config = None
    exp = load_experiment(args.config, args.overrides)
    t0 = time.perf_counter()
    summary = run_experiment(exp, args.out, reuse=not args.fresh)
    from rich.console import Console
    Console().print(rich_table(exp, summary["rows"], {k: {m: RecallResult.from_json(r) for m, r in v.items()}
                                                     for k, v in summary["recall"].items()},
                               title=f"see and hear: {time.perf_counter() - t0:.0f} s"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
