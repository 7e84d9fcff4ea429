"""Run configs: strict keys and types, open sections checked by their owners, and errors that
reach the user of `obs train` as one clear message."""
from __future__ import annotations

import pytest
import yaml

from onebigstate.cli.main import main
from onebigstate.config import ConfigError, build_config, load_config
from onebigstate.training.config import RunConfig
from training_helpers import tiny_tree, write_config


def _build(*overrides: str) -> RunConfig:
    return build_config(RunConfig, tiny_tree(), list(overrides))


def test_overrides_reach_nested_and_open_sections():
    cfg = _build("train.lr=1e-2", "model.mixer.n_nodes=64", "task.params.seq_len=20", "model.mixer.gaussian_reg.weight=0.1")
    assert cfg.train.lr == 1e-2 and cfg.model.mixer["n_nodes"] == 64 and cfg.task.params["seq_len"] == 20
    assert cfg.resolved().model.mixer["gaussian_reg"]["weight"] == 0.1


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", r"unknown config key 'train.lrr': no 'lrr' under train"),
    ("trian.lr=1", r"unknown config key 'trian.lr': no 'trian' under <top level>"),
    ("model.mixer.n_nodez=3", r"model: invalid config for model 'obs': n_nodez: Extra inputs are not permitted"),
    ("task.params.pairs=3", r"task: invalid params for task 'mqar': pairs: Extra inputs are not permitted"),
], ids=["train-key", "section", "mixer-key", "task-param"])
def test_unknown_config_key_is_an_error_naming_it(override, message):
    with pytest.raises(ConfigError, match=message):
        _build(override)


@pytest.mark.parametrize("override, message", [
    ("train.lr=fast", r"train.lr: Input should be a valid number.*\(got 'fast'\)"),
    ("train.steps=1.5", r"train.steps: Input should be a valid integer"),
    ("train.dtype=float8", r"train.dtype: Input should be 'float32' or 'float64'"),
    ("model.mixer.n_nodes=many", r"model: invalid config for model 'obs': n_nodes: Input should be a valid integer"),
    ("task.params.seq_len=15", r"task: invalid params for task 'mqar': seq_len must be even, got 15"),
], ids=["float", "int", "literal", "mixer-int", "task-check"])
def test_ill_typed_value_is_an_error_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        _build(override)


def test_k_min_above_k_max_message_reaches_the_user_of_obs_train(tmp_path, capsys):
    cfg = write_config(tmp_path / "run.yaml")
    rc = main(["train", str(cfg), "model.mixer.k_min=9", "model.mixer.k_max=4", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "obs train: error: invalid config" in err and "k_min (9) must be <= k_max (4)" in err
    assert "Traceback" not in err and not (tmp_path / "r").exists()


def test_unknown_key_in_config_file_reaches_the_user_of_obs_train(tmp_path, capsys):
    tree = tiny_tree()
    tree["train"]["learning_rate"] = 0.1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(tree))
    assert main(["train", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "train.learning_rate: Extra inputs are not permitted" in err and str(tmp_path / "bad.yaml") in err


def test_missing_or_malformed_config_file_is_reported(tmp_path, capsys):
    assert main(["train", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(RunConfig, tmp_path / "list.yaml")
    assert main(["train", str(write_config(tmp_path / "ok.yaml")), "train.lr"]) == 2
    assert "is not of the form key=value" in capsys.readouterr().err


def test_resolved_config_round_trips_through_yaml():
    cfg = _build("model.mixer.n_nodes=64")
    again = build_config(RunConfig, yaml.safe_load(cfg.resolved().to_yaml()))
    assert again.identity() == cfg.identity() and again.train == cfg.train
    assert again.model.mixer["k_max"] == 4 and again.model.mixer["d_key"] == 16
