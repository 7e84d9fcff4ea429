"""``obs inspect`` on a tiny trained checkpoint."""
from __future__ import annotations

import json

import pytest
from training_helpers import tiny_tree

from onebigstate.cli.main import main
from onebigstate.config import build_config
from onebigstate.training.config import RunConfig
from onebigstate.training.trainer import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tree = tiny_tree(steps=2, eval_every=0, ckpt_every=0, log_every=1)
    tree["model"]["discretiser"] = {"kind": "fsq", "levels": [5, 3, 3]}
    tree["model"]["mixer"]["gaussian_reg"] = {"weight": 0.1, "std": 0.3}
    run_dir = tmp_path_factory.mktemp("run")
    train(build_config(RunConfig, tree), run_dir)
    return run_dir


def test_inspect_writes_the_pictures(tiny_run, tmp_path, capsys):
    assert main(["inspect", str(tiny_run), "--out", str(tmp_path), "--batch", "4", "--stream", "1"]) == 0
    printed = capsys.readouterr().out
    for name in ("circuits.png", "strengths.png", "firing.png", "codes.png", "inspect.json"):
        f = tmp_path / name
        assert f.exists() and f.stat().st_size > 0
        assert f"wrote {f}" in printed
    assert (tmp_path / "circuits.png").read_bytes()[:4] == b"\x89PNG"
    info = json.loads((tmp_path / "inspect.json").read_text())
    assert info["steps"] == 16 and info["circuits"] >= 1
    assert info["strengths"]["target_std"] == 0.3 and info["strengths"]["n"] > 0
    assert info["codes"]["n_codes"] == 45 and info["codes"]["total"] == 4 * 16


def test_inspect_bad_arguments(tiny_run, tmp_path, capsys):
    assert main(["inspect", str(tiny_run), "--out", str(tmp_path), "--batch", "2", "--stream", "5"]) == 2
    assert "--stream must be in [0, 2)" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "nothing")]) == 2


def test_inspect_needs_an_obs_layer(tmp_path, capsys):
    tree = tiny_tree(steps=1, eval_every=0, ckpt_every=0, log_every=1)
    tree["model"] = {"name": "lstm", "d_model": 16, "n_layers": 1, "mixer": {}}
    train(build_config(RunConfig, tree), tmp_path / "lstm")
    assert main(["inspect", str(tmp_path / "lstm")]) == 2
    assert "has none" in capsys.readouterr().err
