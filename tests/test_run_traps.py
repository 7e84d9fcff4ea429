"""Traps users fell into with run folders and configs: a resume into another run's folder, a
kill while a run's files were rewritten, a lifelong resume at another batch size, a run killed
before its first checkpoint, checkpoints readable by their owner alone, and config values that
YAML or the validators got wrong."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
import yaml

from onebigstate.cli.main import main
from onebigstate.config import ConfigError, build_config, load_config, parse_value
from onebigstate.files import atomic_write_text
from onebigstate.training import checkpoint as ck
from onebigstate.training import trainer
from onebigstate.training.checkpoint import CheckpointError, read_checkpoint
from onebigstate.training.config import RunConfig
from onebigstate.training.trainer import check_run_folder, train
from training_helpers import read_metrics, tiny_tree, write_config


pytestmark = pytest.mark.usefixtures("one_thread")

# 4 steps, a checkpoint every 2 (both kept), no evaluation but the final one: well under a second.
SHORT = dict(steps=4, ckpt_every=2, keep_checkpoints=2, eval_every=0, log_every=2)


def _cfg(*overrides: str, **train_kw) -> RunConfig:
    return build_config(RunConfig, tiny_tree(**{**SHORT, **train_kw}), list(overrides))


def _quiet(msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished runs: ``small`` (d_model 16, N 32), ``wide`` (d_model 24, N 64), ``lifelong`` (carry_state)."""
    d = tmp_path_factory.mktemp("traps")
    train(_cfg(), d / "small", log=_quiet)
    train(_cfg("model.d_model=24", "model.mixer.n_nodes=64"), d / "wide", log=_quiet)
    train(_cfg(carry_state=True), d / "lifelong", log=_quiet)
    return d


def _copy(runs: Path, name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(runs / name, dst, symlinks=True)
    return dst


def _files(run: Path) -> dict[str, bytes]:
    """The run folder's own files (not its checkpoints), to show that nothing was rewritten."""
    return {f: (run / f).read_bytes() for f in ("config.yaml", "metrics.jsonl", "results.json")
            if (run / f).exists()}


class _Killed(BaseException):
    """Stands in for a SIGKILL: nothing after it runs, no ``except Exception`` catches it."""


def _kill_writes(monkeypatch) -> None:
    """Every text file opened for writing through ``io.open`` (pathlib, ``os.fdopen``) dies half-way
    through its first write, as a process killed while rewriting a file."""
    real_open = io.open

    class Dying:
        def __init__(self, f):
            self.f = f

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            raise _Killed

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

    def dying_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return Dying(f) if ("w" in mode or "a" in mode) and "b" not in mode else f

    monkeypatch.setattr(io, "open", dying_open)


# ---- 1. a resume checks the checkpoint against the run folder's own config -------------------------
def test_resume_refuses_a_checkpoints_folder_of_another_model(runs, tmp_path, capsys):
    run = _copy(runs, "small", tmp_path)
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(runs / "wide" / "checkpoints", run / "checkpoints", symlinks=True)
    before = _files(run)
    assert main(["train", "--resume", str(run), "train.steps=6"]) == 2
    err = capsys.readouterr().err
    assert "holds another run" in err and "Traceback" not in err
    assert "model.d_model: run folder 16 vs checkpoint 24" in err
    assert "model.mixer.n_nodes: run folder 32 vs checkpoint 64" in err
    assert _files(run) == before


def test_resume_into_an_out_folder_of_another_run_is_refused(runs, tmp_path, capsys):
    run = _copy(runs, "small", tmp_path)
    before = _files(run)
    assert main(["train", "--resume", str(runs / "wide"), "--out", str(run), "train.steps=6"]) == 2
    err = capsys.readouterr().err
    assert "model.d_model: run folder 16 vs checkpoint 24" in err
    assert _files(run) == before and read_checkpoint(runs / "wide").step == 4


def test_train_keys_may_still_differ_from_the_run_folders_config(runs):
    check_run_folder(runs / "small", _cfg("train.lr=1e-4", steps=10, batch_size=8))
    with pytest.raises(ConfigError, match=r"task.params.num_kv_pairs: run folder 2 vs config 4"):
        check_run_folder(runs / "small", _cfg("task.params.num_kv_pairs=4"))


# ---- 2. every rewrite of a run's files is atomic ---------------------------------------------------
def test_a_kill_while_metrics_are_trimmed_keeps_every_record(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    text = "".join(f'{{"step": {s}, "kind": "train", "loss": 1.0}}\n' for s in range(2, 14, 2))
    path.write_text(text)
    _kill_writes(monkeypatch)
    with pytest.raises(_Killed):
        trainer._keep_metrics_until(path, 8)
    monkeypatch.undo()
    assert path.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary file left over
    trainer._keep_metrics_until(path, 8)
    assert [r["step"] for r in read_metrics(tmp_path)] == [2, 4, 6, 8]


def test_a_kill_while_a_resume_rewrites_the_run_folder_leaves_it_intact(runs, tmp_path, monkeypatch):
    run = _copy(runs, "small", tmp_path)
    before = _files(run)
    ckpt = read_checkpoint(run / "checkpoints" / "step_00000002")
    _kill_writes(monkeypatch)
    with pytest.raises(_Killed):
        train(_cfg(), run, resume=ckpt, log=_quiet)
    monkeypatch.undo()
    assert _files(run) == before


def test_atomic_write_text_leaves_the_old_or_the_new_file(tmp_path, monkeypatch):
    f = tmp_path / "results.json"
    f.write_text("old\n")
    _kill_writes(monkeypatch)
    with pytest.raises(_Killed):
        atomic_write_text(f, "new\n" * 100)
    monkeypatch.undo()
    assert f.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["results.json"]
    atomic_write_text(f, "new\n")
    assert f.read_text() == "new\n"


# ---- 3. a resume is validated before anything is written ----------------------------------------
def test_lifelong_resume_at_another_batch_size_is_refused_before_writing(runs, tmp_path, capsys):
    run = _copy(runs, "lifelong", tmp_path)
    before = _files(run)
    assert main(["train", "--resume", str(run), "train.steps=6", "train.batch_size=2"]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size=2" in err and "carries the states of 4 streams" in err and "Traceback" not in err
    assert _files(run) == before
    # the API refuses it too, before writing
    with pytest.raises(ConfigError, match=r"train.batch_size=2, but checkpoint .* 4 streams"):
        train(_cfg(carry_state=True, steps=6, batch_size=2), run, resume=read_checkpoint(run), log=_quiet)
    assert _files(run) == before


# ---- 4. a run with no checkpoint yet, and a `last` pointing nowhere -------------------------------
def _killed_before_first_checkpoint(run: Path, monkeypatch) -> None:
    """A run that died while writing its first checkpoint: config.yaml, metrics, tb/, a temp folder."""
    def crash(*a, **k):
        raise OSError("killed")

    monkeypatch.setattr(ck.torch, "save", crash)
    with pytest.raises(OSError, match="killed"):
        train(_cfg(), run, log=_quiet)
    monkeypatch.undo()
    assert read_metrics(run) and not ck.step_folders(run / "checkpoints")


def test_run_killed_before_its_first_checkpoint_is_started_again(runs, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _killed_before_first_checkpoint(run, monkeypatch)
    cfg_file = run / "config.yaml"

    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "has no checkpoint yet" in err and f"`obs train {cfg_file} --out {run}`" in err

    other = write_config(tmp_path / "other.yaml", **SHORT)
    before = _files(run)
    assert main(["train", str(other), "model.d_model=24", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "holds another run" in err and "model.d_model: run folder 16 vs config 24" in err
    assert _files(run) == before

    assert main(["train", str(cfg_file), "--out", str(run)]) == 0
    assert "starting it again from step 0" in capsys.readouterr().out
    assert read_checkpoint(run).step == 4
    assert read_metrics(run) == read_metrics(runs / "small")  # nothing of the killed run is left


def test_last_pointing_at_a_deleted_folder_names_it_and_the_checkpoints_left(runs, tmp_path, capsys):
    run = _copy(runs, "small", tmp_path)
    shutil.rmtree(run / "checkpoints" / "step_00000004")
    left = (run / "checkpoints" / "step_00000002").resolve()
    with pytest.raises(CheckpointError, match=r"last points at a missing folder \(step_00000004\); complete "
                                              r"checkpoints that remain: step_00000002") as err:
        read_checkpoint(run)
    assert f"`obs train --resume {left}`" in str(err.value)
    assert main(["train", "--resume", str(left)]) == 0  # the command it gives works
    capsys.readouterr()
    assert read_checkpoint(run).step == 4


def test_last_pointing_nowhere_with_no_checkpoint_left_says_how_to_start_again(runs, tmp_path):
    run = _copy(runs, "small", tmp_path)
    for step in ("step_00000002", "step_00000004"):
        shutil.rmtree(run / "checkpoints" / step)
    with pytest.raises(CheckpointError, match=r"last points at a missing folder .*; start it again with "
                                              r"`obs train .*config.yaml --out .*`"):
        read_checkpoint(run)


# ---- 5. files get the mode a plain open() gives ----------------------------------------------------
def test_checkpoint_and_run_files_get_the_mode_of_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        train(_cfg(steps=2), tmp_path / "run", log=_quiet)
        atomic_write_text(tmp_path / "plain.txt", "x")
        os.umask(0o027)
        atomic_write_text(tmp_path / "group.txt", "x")
    finally:
        os.umask(old)
    run = tmp_path / "run"
    files = [*(run / "checkpoints" / "last").iterdir(), *(run / f for f in ("config.yaml", "metrics.jsonl",
                                                                           "results.json")), tmp_path / "plain.txt"]
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: oct(0o644) for f in files}
    assert (tmp_path / "group.txt").stat().st_mode & 0o777 == 0o640


# ---- 6. config traps -------------------------------------------------------------------------------
@pytest.mark.parametrize("betas, where", [("[1.5, 0.9]", "0"), ("[0.9, 1.0]", "1"), ("[-0.1, 0.9]", "0")])
def test_each_beta_must_lie_in_0_1(betas, where):
    with pytest.raises(ConfigError, match=rf"train.betas.{where}: Input should be (less than 1|greater than or equal to 0)"):
        build_config(RunConfig, tiny_tree(), [f"train.betas={betas}"])


@pytest.mark.parametrize("override", ["train.lr=inf", "train.lr=.inf", "train.lr=nan", "train.weight_decay=.inf",
                                      "train.grad_clip=.inf", "train.min_lr_ratio=.nan", "train.betas=[.nan, 0.9]"])
def test_train_floats_must_be_finite(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}(\.0)?: Input should be a finite number"):
        build_config(RunConfig, tiny_tree(), [override])


def test_a_duplicated_key_in_a_config_file_is_an_error_naming_it_and_its_lines(tmp_path, capsys):
    text = yaml.safe_dump(tiny_tree(), sort_keys=False).replace("  lr: 0.003\n", "  lr: 0.003\n  lr: 0.1\n")
    lines = text.splitlines()
    first = lines.index("  lr: 0.003") + 1
    f = tmp_path / "dup.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=rf"dup.yaml: key 'lr' appears twice in one section: at line {first} "
                                          rf"and again at line {first + 1}"):
        load_config(RunConfig, f)
    assert main(["train", str(f), "--out", str(tmp_path / "r")]) == 2
    assert "key 'lr' appears twice" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_exponent_numbers_are_numbers_and_whole_floats_fill_int_fields(tmp_path):
    cfg = build_config(RunConfig, tiny_tree(), ["train.steps=1e3", "train.lr=1E-3", "train.warmup=1000.0",
                                                "train.weight_decay=2.5e-2"])
    assert (cfg.train.steps, cfg.train.lr, cfg.train.warmup, cfg.train.weight_decay) == (1000, 1e-3, 1000, 0.025)
    assert isinstance(cfg.train.steps, int) and isinstance(cfg.train.warmup, int)
    f = tmp_path / "run.yaml"
    f.write_text(yaml.safe_dump(tiny_tree(), sort_keys=False).replace("steps: 12", "steps: 2.5e4"))
    assert load_config(RunConfig, f).train.steps == 25000
    with pytest.raises(ConfigError, match=r"train.steps: Input should be a valid integer.*\(got '1e3.5'\)"):
        build_config(RunConfig, tiny_tree(), ["train.steps=1e3.5"])
    with pytest.raises(ConfigError, match=r"train.steps: Input should be a valid integer, got a number with a "
                                          r"fractional part"):
        build_config(RunConfig, tiny_tree(), ["train.steps=1.5e0"])
    # other strings stay strings
    assert [parse_value(t) for t in ("1e3x", "e5", "v1e3", "cuda:1", "1e")] == ["1e3x", "e5", "v1e3", "cuda:1", "1e"]
    assert build_config(RunConfig, tiny_tree(), ["run_name=1e3-run"]).run_name == "1e3-run"
