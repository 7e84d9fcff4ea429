"""The see-and-hear probes of benchmarks/: write gates per kind of input and the novel words' shared nodes
(writes_by_input.py), recall at delays beyond the CPU suite's (recall_long_delay.py), which filler fades a
pairing and what a query reads (delay_probe.py), the silence before a name (name_gap_probe.py)."""
from __future__ import annotations

import json

import pytest

from onebigstate.config import build_config
from onebigstate.training.config import RunConfig
from onebigstate.training.trainer import train
from training_helpers import load_benchmark

PARAMS = {"n_pairs": 2, "exposures": [1], "delay_min": 3, "delay_max": 8, "view_frames": 2, "name_gap": [1, 2],
          "spacing": [1, 3], "image_query_frac": 0.5, "pretrain_steps": 2}
OBS = {"n_nodes": 32, "k_min": 2, "k_max": 4, "m_active": 4, "d_key": 16, "d_value": 16, "d_hidden": 16,
       "d_write": 16, "reverse_assoc": True}


@pytest.mark.usefixtures("one_thread")
def test_gates_by_event_and_word_circuits_of_a_trained_run(tmp_path):
    runs = []
    for cost in (0.0, 2.0):
        tree = {"task": {"name": "seeandhear", "test_size": 4, "params": PARAMS},
                "model": {"name": "obs", "d_model": 16, "mixer": {**OBS, "write_cost": cost}},
                "train": {"steps": 2, "batch_size": 2, "eval_every": 0, "ckpt_every": 2, "progress": False}}
        train(build_config(RunConfig, tree), tmp_path / f"wc{cost:g}", log=lambda m: None)
        runs.append(str(tmp_path / f"wc{cost:g}"))
    out = tmp_path / "w.json"
    load_benchmark("writes_by_input").main([*runs, "--streams", "4", "--out", str(out)])
    res = json.loads(out.read_text())["runs"]
    assert [r["write_cost"] for r in res] == [0.0, 2.0]
    for r in res:
        events = r["events"]
        assert {"silence", "pair-view", "pair-word"} <= set(events)
        for row in events.values():
            assert 0.0 <= row["mass"] <= 1.0 and set(row) >= {"steps", "k", "g_in", "g_as", "g_ch", "g_rev"}
        c = r["word_circuits"]
        assert c["words"] > 0 and 0.0 <= c["mean_shared"] <= 1.0 and 0.0 < c["utterance_in_top4"] <= 1.0
    table = out.with_suffix(".md").read_text()
    assert "wc2 (write_cost 2)" in table and "| every step |" in table


@pytest.mark.usefixtures("one_thread")
def test_long_delay_recall_of_finished_cells_skips_a_growing_state_beyond_its_cap(tmp_path):
    cells = []
    for name, mixer in (("obs", OBS), ("transformer", {})):
        cell = tmp_path / f"seeandhear__{name}__lr0.01__s0"
        tree = {"task": {"name": "seeandhear", "test_size": 4, "params": PARAMS},
                "model": {"name": name, "d_model": 16, "mixer": mixer},
                "train": {"steps": 2, "batch_size": 2, "eval_every": 0, "ckpt_every": 2, "progress": False}}
        train(build_config(RunConfig, tree), cell, log=lambda m: None)
        (cell / "bench.json").write_text(json.dumps({"model": name, "lr": 0.01, "seed": 0}))
        cells.append(str(cell))
    out = tmp_path / "long.json"
    load_benchmark("recall_long_delay").main([*cells, "--delays", "20,600", "--streams", "2", "--batch-size", "2",
                                              "--max-cache-steps", "100", "--out", str(out)])
    obs, transformer = json.loads(out.read_text())["rows"]
    assert all(0.0 <= v <= 1.0 for v in obs["recall"].values()) and obs["skipped"] == []
    assert transformer["recall"]["d=600"] is None and transformer["skipped"] == [600]
    assert 0.0 <= transformer["recall"]["d=20"] <= 1.0
    assert "not run (state: every past step)" in out.with_suffix(".md").read_text()


@pytest.fixture(scope="module")
def trained_obs(tmp_path_factory):
    """One OBS run trained 2 steps on the probes' streams (shared by the probes below)."""
    run = tmp_path_factory.mktemp("probes") / "run"
    tree = {"task": {"name": "seeandhear", "test_size": 4, "params": PARAMS},
            "model": {"name": "obs", "d_model": 16, "mixer": OBS},
            "train": {"steps": 2, "batch_size": 2, "eval_every": 0, "ckpt_every": 2, "progress": False}}
    train(build_config(RunConfig, tree), run, log=lambda m: None)
    return run


@pytest.mark.usefixtures("one_thread")
def test_delay_probe_of_a_trained_run(trained_obs, tmp_path):
    out = tmp_path / "probe.json"
    probe = load_benchmark("delay_probe")
    probe.main([str(trained_obs), "--delays", "5,40", "--streams", "3", "--out", str(out)])
    row = json.loads(out.read_text())["rows"][0]
    assert set(row["filler"]) == set(probe.FILLERS)
    assert all(0.0 <= v <= 1.0 for f in row["filler"].values() for v in f.values())
    for reads in row["reads"].values():
        assert reads["queries"] > 0 and 0.0 <= reads["on_object"] <= 1.0 and 0.0 <= reads["on_hubs"] <= 1.0
        assert 0.0 < reads["hub_slots"] <= 1.0
        assert reads["load_max"] >= 1.0 and 0.0 <= reads["unused_nodes"] < 1.0
        assert 0.0 <= reads["hubs_in_silence"] <= 1.0 and 0.0 <= reads["hubs_in_words"] <= 1.0
    assert "| silence only |" in out.with_suffix(".md").read_text()
    assert "nodes in no circuit" in out.with_suffix(".md").read_text()


@pytest.mark.usefixtures("one_thread")
def test_name_gap_probe_of_a_trained_run(trained_obs, tmp_path):
    out = tmp_path / "gap.json"
    load_benchmark("name_gap_probe").main([str(trained_obs), "--gaps", "1,3", "--streams", "3", "--out", str(out)])
    row = json.loads(out.read_text())["rows"][0]
    assert set(row["recall"]) == {"gap=1", "gap=3"} and all(0.0 <= v <= 1.0 for v in row["recall"].values())
    assert "| gap 1 | gap 3 |" in out.with_suffix(".md").read_text()
