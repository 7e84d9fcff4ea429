"""The `obs` command: help lists the subcommands, `obs eval` on a finished run, demo help, and
the refusal to overwrite an existing run."""
from __future__ import annotations

import json

import pytest
import torch
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


def test_obs_eval_at_a_longer_task_setting_reads_in_windows_and_writes_its_own_file(finished_run, capsys):
    from onebigstate.bench.evaluate import grouped_accuracy
    from onebigstate.tasks.common import IGNORE, Grouped
    from onebigstate.tasks.registry import build_task
    from onebigstate.training.checkpoint import read_checkpoint
    from onebigstate.training.trainer import model_from_checkpoint
    args = ["task.params.seq_len=24", "task.params.num_kv_pairs=4", "task.test_size=8"]
    with single_thread():
        assert main(["eval", str(finished_run)]) == 0           # the plain evaluation's eval.json
        capsys.readouterr()
        assert main(["eval", str(finished_run), *args]) == 0
    out = capsys.readouterr().out
    assert "task.params.num_kv_pairs" in out and "test accuracy" in out
    ev = json.loads((finished_run / "eval_seq_len24_num_kv_pairs4_test_size8.json").read_text())
    assert ev["overrides"] == args and ev["test_size"] == 8
    assert ev["command"] == " ".join(["obs eval", str(finished_run), *args])
    assert ev["task_params"]["seq_len"] == 24 and ev["task_params"]["num_kv_pairs"] == 4
    assert json.loads((finished_run / "eval.json").read_text())["overrides"] == []   # not overwritten
    # The same number as reading each 24-token sequence in one pass (windows of 16 + 8 carry the state).
    ckpt = read_checkpoint(finished_run)
    task = build_task(ckpt.config.task.model_copy(update={
        "test_size": 8, "params": {**ckpt.config.task.params, "seq_len": 24, "num_kv_pairs": 4}}))
    _, model = model_from_checkpoint(ckpt)
    x, y = task.test_set()
    with single_thread():
        one_pass = grouped_accuracy(model, Grouped(x, y, torch.where(y != IGNORE, 0, -1), ["all"]), 4)["all"]
    assert ev["metrics"]["accuracy"] == pytest.approx(one_pass, abs=1e-9)


def test_obs_eval_refuses_overrides_outside_the_task(finished_run, capsys):
    assert main(["eval", str(finished_run), "model.d_model=32"]) == 2
    assert "only task.params.*" in capsys.readouterr().err
    assert main(["eval", str(finished_run), "task.params.no_such_key=3"]) == 2
    assert "no_such_key" in capsys.readouterr().err


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
