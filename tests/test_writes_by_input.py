"""benchmarks/writes_by_input.py: write gates per kind of input and the novel words' shared nodes."""
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
    assert "write mass, write_cost 2" in table and "| every step |" in table
