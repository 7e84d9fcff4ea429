"""benchmarks/retention_probe.py: reads a trained OBS retention run's lifelong streams twice and
writes its page (tiny sizes here)."""
from __future__ import annotations

from onebigstate.config import build_config
from onebigstate.training.trainer import train
from onebigstate.training.config import RunConfig
from training_helpers import load_benchmark, tiny_tree


def test_probe_reports_accuracy_per_distance_with_and_without_spread(tmp_path, one_thread):
    tree = tiny_tree(steps=2, ckpt_every=2, eval_every=0)
    tree["task"] = {"name": "retention", "seed": 0, "test_size": 8,
                    "params": {"vocab_size": 32, "n_pairs": 2, "seq_len": 12, "test_distances": [4, 40],
                               "lifelong_streams": 3}}
    run = tmp_path / "run"
    train(build_config(RunConfig, tree), run, log=lambda m: None)
    out = tmp_path / "probe.md"
    assert load_benchmark("retention_probe").main([str(run), "--window", "16", "--out", str(out)]) == 0
    page = out.read_text()
    assert "| run | read | d=4 | d=40 |" in page
    assert "| as trained |" in page and "| no spread from active rows |" in page
    assert "| row_norm off at read time |" in page          # trained with the default layer: row_norm on
    assert out.with_suffix(".png").exists()
