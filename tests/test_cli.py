"""The `obs` command: help lists the subcommands, `obs eval` on a finished run, demo help, and
the refusal to overwrite an existing run."""
from __future__ import annotations

import json

import pytest
import yaml

from onebigstate.cli.main import SUBCOMMANDS, main
from training_helpers import single_thread, write_config


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    cfg = write_config(d / "run.yaml", steps=6, ckpt_every=3, eval_every=3)
    with single_thread():
        assert main(["train", str(cfg), "--out", str(d / "run")]) == 0
    return d / "run"


def test_obs_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for name in ("demo", "train", "eval"):
        assert name in SUBCOMMANDS and name in out


def test_demo_help_says_what_it_runs(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "see-and-hear" in out and "Transformer, LSTM, Mamba, DeltaNet" in out


def test_obs_eval_on_finished_run_prints_table_and_writes_eval_json(finished_run, capsys):
    with single_thread():
        assert main(["eval", str(finished_run)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "parameters" in out and "dense_floats" in out
    ev = json.loads((finished_run / "eval.json").read_text())
    res = json.loads((finished_run / "results.json").read_text())
    assert ev["step"] == res["step"] == 6
    assert ev["metrics"] == pytest.approx(res["metrics"], rel=1e-6)
    assert ev["n_params"] == res["n_params"] and ev["state_size"] == res["state_size"]


def test_obs_eval_on_truncated_checkpoint_exits_with_message(finished_run, tmp_path, capsys):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    f = run / "checkpoints" / "last" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert "obs eval: error:" in err and "model.safetensors is truncated" in err


def test_train_refuses_to_overwrite_an_existing_run(finished_run, tmp_path, capsys):
    cfg = write_config(tmp_path / "run.yaml")
    assert main(["train", str(cfg), "--out", str(finished_run)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_resume_of_finished_run_extends_it_with_more_steps(finished_run, tmp_path, capsys):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    with single_thread():
        assert main(["train", "--resume", str(run), "train.steps=8"]) == 0
    assert "changed train settings: steps" in capsys.readouterr().out
    assert json.loads((run / "results.json").read_text())["step"] == 8


def test_obs_demo_runs_its_config_and_prints_the_result_table(tmp_path, capsys):
    from test_seeandhear_demo import TINY
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["demo", "--config", str(cfg), "--out", str(tmp_path / "demo"), "train.steps=1"]) == 0
    out = capsys.readouterr().out
    assert "obs demo: see and hear" in out and "w->o d=10" in out
    assert json.loads((tmp_path / "demo" / "models" / "obs" / "results.json").read_text())["step"] == 1
