"""The see-and-hear demo end to end on a tiny config (seconds): it trains OBS and a baseline,
prints the results table, writes the plots and tables; a second run loads the checkpoints the
first one trained; recall measured in windows with carried state equals one pass."""
from __future__ import annotations

import io
import json

import pytest
import torch
import yaml
from rich.console import Console

from onebigstate.data.streams import StreamConfig, generate_streams
from onebigstate.experiments.demo import demo_experiment, run_demo
from onebigstate.experiments.recall import stream_predictions
from onebigstate.training.checkpoint import read_checkpoint
from onebigstate.training.trainer import model_from_checkpoint

TINY_OBS = {"n_nodes": 32, "k_min": 2, "k_max": 4, "m_active": 4, "d_key": 16, "d_value": 16,
            "d_hidden": 16, "d_write": 16}
TINY = {
    "task": {"n_pairs": 2, "exposures": [1], "delay_min": 3, "delay_max": 8, "view_frames": 2, "name_gap": [1, 2],
             "spacing": [1, 3], "image_query_frac": 0.5, "extra_words": True, "pretrain_steps": 3,
             "freeze_encoder": True},
    "models": [{"label": "obs", "model": {"name": "obs", "d_model": 16, "mixer": TINY_OBS}},
               {"label": "lstm", "model": {"name": "lstm", "d_model": 16}}],
    "train": {"steps": 2, "batch_size": 2, "log_every": 1, "eval_batch_size": 4, "progress": False},
    "test_size": 2,
    "grid": {"exposures": [1, 2], "delays": [10, 40], "exposure_delay": 10, "n_streams": 2, "window": 16,
             "object_to_word": True},
}
PLOTS = ["obs_state_heatmap.png", "obs_circuits.png", "recall_vs_delay_word_to_object.png",
         "recall_vs_exposures_word_to_object.png", "recall_vs_delay_object_to_word.png"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(tmp_path, run_dir, fresh=False):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = io.StringIO()
    summary = run_demo(demo_experiment(cfg), run_dir, fresh=fresh, console=Console(file=out, width=200))
    return summary, out.getvalue()


def test_demo_trains_prints_the_table_and_writes_the_plots(tmp_path):
    run_dir = tmp_path / "demo"
    summary, text = _run(tmp_path, run_dir)
    assert "obs demo: see and hear" in text and "all trained now" in text
    for label in ("obs (1L)", "lstm (1L)", "w->o d=10", "w->o d=40", "o->w d=10"):
        assert label in text
    for name in PLOTS:
        assert (run_dir / name).stat().st_size > 5_000, name
    saved = json.loads((run_dir / "summary.json").read_text())
    assert [r["label"] for r in saved["rows"]] == ["obs", "lstm"]
    assert all(r["params"] > 0 for r in saved["rows"])
    counts = saved["recall"]["word->object"]["obs"]["counts"]
    assert {(e, d) for _, e, d, _, _ in counts} >= {(1, 10), (1, 40), (2, 10)}
    assert "| obs |" in (run_dir / "results.md").read_text()

    again, text = _run(tmp_path, run_dir)
    assert "loaded from an earlier obs demo's checkpoints" in text
    assert all(r["source"].startswith("loaded") for r in again["rows"])
    counts = {k: {m: r["counts"] for m, r in v.items()} for k, v in summary["recall"].items()}
    assert counts == {k: {m: r["counts"] for m, r in v.items()} for k, v in again["recall"].items()}, \
        "loading the checkpoints must give the same recall"


@pytest.mark.parametrize("label", ["obs", "lstm"])
def test_windows_with_carried_state_equal_one_pass(tmp_path, label):
    run_dir = tmp_path / "demo"
    _run(tmp_path, run_dir)
    _, model = model_from_checkpoint(read_checkpoint(run_dir / "models" / label), device="cpu")
    model = model.double()
    cfg = StreamConfig(n_pairs=2, exposures=[1], delay_min=30, delay_max=30, split="novel")
    batch = generate_streams(cfg, 2, seed=3, dtype=torch.float64)
    one = stream_predictions(model, batch, window=batch.features.shape[1])
    for window in (7, 16):
        assert torch.equal(stream_predictions(model, batch, window=window), one)


def test_overrides_and_partial_files_keep_the_other_defaults(tmp_path):
    from onebigstate.experiments.seeandhear import SeeHearExperiment, load_experiment
    default = SeeHearExperiment()
    exp = load_experiment(None, ["train.steps=7", "task.image_query_frac=0.0"])
    assert exp.train.steps == 7 and exp.train.batch_size == default.train.batch_size
    assert exp.task.n_pairs == default.task.n_pairs and exp.task.image_query_frac == 0.0
    part = tmp_path / "part.yaml"
    part.write_text("train: {steps: 9}\ngrid: {delays: [10]}\n")
    exp = load_experiment(part)
    assert exp.train.steps == 9 and exp.train.lr == default.train.lr and exp.grid.n_streams == default.grid.n_streams
