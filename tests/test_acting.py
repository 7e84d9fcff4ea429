"""The acting experiment's measurements run on a tiny model (the numbers themselves are in
docs/results/acting.md)."""
from __future__ import annotations

import argparse

import pytest
import torch

from onebigstate.experiments import acting
from onebigstate.nets import ModelConfig
from onebigstate.tasks.base import TaskConfig
from onebigstate.tasks.gridworld import GridConfig
from onebigstate.tasks.registry import build_task


def tiny_model():
    torch.manual_seed(0)
    task = build_task(TaskConfig(name="gridworld", params={}))
    cfg = ModelConfig(name="obs", d_model=16, mixer=dict(n_nodes=64, k_min=2, k_max=4, m_active=8, d_key=8,
                                                         d_value=8, d_hidden=8, d_write=8))
    return task.build_model(cfg).eval()


def test_tracker_measurements_run_and_are_rates():
    model, grid = tiny_model(), GridConfig()
    rep = acting.replay_accuracy(model, grid, [3, 6], 2, [("o2", 2, 1.0, "markov"), ("gru", 1, 1.0, "gru")])
    assert set(rep["o2"]) == {3, 6}
    assert all(0 <= v["accuracy"] <= 1 and 0 <= v["whole_route"] <= 1 for v in rep["o2"].values())
    plan = acting.plan_success(model, grid, 2, explore=40, pairs=3)
    assert plan["n_pairs"] == 6
    assert all(0 <= plan[k] <= 1 for k in ("tracker plan", "plan found", "tracker on true places",
                                           "random actions", "greedy, no tracker"))
    cons = acting.consolidation_effect(model, grid, 2, route=8, interfere=8, strengths=[0.1])
    assert set(cons) == {"none", "replay 0.1", "replay, places only 0.1", "shuffled 0.1"}
    assert all(0 <= v <= 1 for v in cons.values())


def test_a_finished_run_is_reused_only_when_its_config_is_the_one_asked(tmp_path, monkeypatch):
    from training_helpers import ROOT
    monkeypatch.chdir(ROOT)                                   # configs/gridworld.yaml
    small = ["task.test_size=8", "train.batch_size=2", "train.eval_every=0", "train.warmup=1", "model.d_model=16",
             "model.mixer.n_nodes=32", "model.mixer.k_min=2", "model.mixer.k_max=4", "model.mixer.m_active=4"]
    first, reused = acting.train_or_reuse("obs", 2, tmp_path, small)
    assert not reused
    results = tmp_path / "obs" / "results.json"
    stamp = results.stat().st_mtime_ns
    assert acting.train_or_reuse("obs", 2, tmp_path, small) == (first, True) and results.stat().st_mtime_ns == stamp
    # another OBS (an --obs-set override) or another budget is trained again, into the same folder
    assert not acting.train_or_reuse("obs", 2, tmp_path, small + ["model.mixer.active_persist=1"])[1]
    assert "active_persist: 1.0" in (tmp_path / "obs" / "config.yaml").read_text()
    assert results.stat().st_mtime_ns != stamp


def test_interference_lengths_are_checked():
    assert acting._counts("48,480") == [48, 480]
    for bad in ("", "4x", "48,0"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive numbers of actions"):
            acting._counts(bad)
