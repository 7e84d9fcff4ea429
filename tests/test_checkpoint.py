"""Checkpoints: what a folder holds, atomic replacement, and clear errors for truncated,
missing, altered and foreign files."""
from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import pytest
import torch

from onebigstate.config import build_config
from onebigstate.model.state import DenseState
from onebigstate.kernels.step import Carry
from onebigstate.training import checkpoint as ck
from onebigstate.training.checkpoint import CheckpointError, read_checkpoint
from onebigstate.training.config import RunConfig
from onebigstate.training.optim import build_optimizer, build_scheduler
from onebigstate.training.trainer import build_run, train
from training_helpers import tiny_tree, write_config


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ckpt") / "run"
    train(build_config(RunConfig, tiny_tree(steps=8, ckpt_every=4, keep_checkpoints=2)), run, log=lambda m: None)
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst, symlinks=True)
    return dst


def _parts(run):
    cfg = build_config(RunConfig, tiny_tree())
    torch.manual_seed(0)
    _, model = build_run(cfg)
    opt = build_optimizer(model, cfg.train, log=None)
    return cfg, model, opt, build_scheduler(opt, cfg.train)


def test_checkpoint_folder_holds_weights_trainer_state_config_and_checksums(finished_run):
    ckpts = finished_run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last", "step_00000004", "step_00000008"]
    assert os.readlink(ckpts / "last") == "step_00000008"
    files = sorted(p.name for p in (ckpts / "last").iterdir())
    assert files == ["config.yaml", "meta.json", "model.safetensors", "trainer.pt"]
    ckpt = read_checkpoint(finished_run)
    assert ckpt.step == 8 and not ckpt.has_states and ckpt.run_dir == finished_run.resolve()
    state = ckpt.trainer_state()
    assert state["step"] == 8 and {"python", "numpy", "torch"} <= set(state["rng"])
    assert state["optimizer"]["state"] and state["scheduler"]["last_epoch"] == 8
    meta = json.loads((ckpts / "last" / "meta.json").read_text())
    assert meta["files"]["model.safetensors"]["bytes"] == (ckpts / "last" / "model.safetensors").stat().st_size


def test_truncated_weights_file_is_reported_with_its_name_and_sizes(run_copy):
    f = run_copy / "checkpoints" / "last" / "model.safetensors"
    size = f.stat().st_size
    f.write_bytes(f.read_bytes()[: size // 2])
    with pytest.raises(CheckpointError, match=rf"model.safetensors is truncated: {size // 2} bytes, the checkpoint recorded {size}"):
        read_checkpoint(run_copy)


def test_truncated_safetensors_is_caught_by_the_parser_too(run_copy):
    f = run_copy / "checkpoints" / "last" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"model.safetensors is truncated or corrupt"):
        ck._load_safetensors(f)


def test_truncated_trainer_state_is_reported_by_name(run_copy):
    f = run_copy / "checkpoints" / "last" / "trainer.pt"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"trainer.pt is truncated"):
        read_checkpoint(run_copy)


def test_missing_file_makes_an_incomplete_checkpoint_error(run_copy):
    (run_copy / "checkpoints" / "last" / "trainer.pt").unlink()
    with pytest.raises(CheckpointError, match=r"is incomplete: trainer.pt is missing"):
        read_checkpoint(run_copy)


def test_replaced_weights_file_fails_the_checksum(run_copy):
    last = run_copy / "checkpoints" / "last"
    other = run_copy / "checkpoints" / "step_00000004"
    shutil.copy(other / "model.safetensors", last / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors is corrupt: its sha256 differs"):
        read_checkpoint(run_copy)


def test_folder_that_is_not_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not really")
    with pytest.raises(CheckpointError, match=r"is not an onebigstate checkpoint: meta.json is missing"):
        read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"checkpoint not found"):
        read_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"not a checkpoint .* nor a run folder"):
        read_checkpoint(tmp_path / "empty")


def test_foreign_weights_error_names_keys_and_shapes(finished_run):
    ckpt = read_checkpoint(finished_run)
    cfg = build_config(RunConfig, tiny_tree(), ["model.d_model=24", "model.n_layers=2"])
    _, other = build_run(cfg)
    with pytest.raises(CheckpointError, match=r"model.safetensors does not fit this model.*unexpected keys|"
                                              r"model.safetensors does not fit this model.*missing keys") as err:
        ck.load_model_weights(ckpt, other)
    assert "mixers.1." in str(err.value) and "shape mismatch embed.weight: checkpoint (32, 16) vs model (32, 24)" in str(err.value)


def test_resume_with_a_different_model_config_is_refused(finished_run, tmp_path, capsys):
    from onebigstate.cli.main import main
    cfg_file = write_config(tmp_path / "other.yaml")
    assert main(["train", str(cfg_file), "model.mixer.n_nodes=64", "--resume", str(finished_run)]) == 2
    err = capsys.readouterr().err
    assert "belongs to another run" in err and "model.mixer.n_nodes: checkpoint 32 vs config 64" in err
    assert main(["train", "--resume", str(finished_run), "model.d_model=8"]) == 2
    assert "model.d_model: checkpoint 16 vs config 8" in capsys.readouterr().err


def test_failed_save_leaves_last_pointing_at_previous_complete_checkpoint(run_copy, monkeypatch):
    cfg, model, opt, sched = _parts(run_copy)
    root = run_copy / "checkpoints"

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(root, 12, cfg, model, opt, sched, {})
    monkeypatch.undo()
    assert os.readlink(root / "last") == "step_00000008"
    assert read_checkpoint(run_copy).step == 8
    # The next save clears the leftovers and moves `last`.
    ck.save_checkpoint(root, 12, cfg, model, opt, sched, {}, keep=1)
    assert sorted(p.name for p in root.iterdir()) == ["last", "step_00000012"]
    assert read_checkpoint(run_copy).step == 12


def test_stale_checkpoint_of_a_killed_branch_is_replaced_not_trusted(run_copy):
    cfg, model, opt, sched = _parts(run_copy)
    root = run_copy / "checkpoints"
    # A run killed after renaming step 12 but before moving `last` leaves step 12 behind.
    shutil.copytree(root / "step_00000008", root / "step_00000012")
    assert read_checkpoint(run_copy).step == 8
    ck.save_checkpoint(root, 12, cfg, model, opt, sched, {}, keep=2)
    assert read_checkpoint(run_copy).step == 12
    assert sorted(p.name for p in root.iterdir()) == ["last", "step_00000008", "step_00000012"]


def test_carried_states_round_trip_through_checkpoint_bitwise(run_copy):
    cfg, model, opt, sched = _parts(run_copy)
    g = torch.Generator().manual_seed(3)
    carry = Carry(torch.randint(0, 32, (2, 4), generator=g), torch.rand(2, 4, generator=g),
                  torch.randint(0, 32, (2, 4), generator=g), torch.rand(2, 4, generator=g))
    store = DenseState(torch.randn(2, 32, 32, generator=g), torch.rand(2, 32, 32, generator=g) > 0.5, carry)
    ck.save_checkpoint(run_copy / "checkpoints", 9, cfg, model, opt, sched, {}, states=[store])
    (back,) = read_checkpoint(run_copy).states()
    assert isinstance(back, DenseState)
    for k, v in store.to_tensors().items():
        assert torch.equal(back.to_tensors()[k], v), k


def test_rng_states_round_trip():
    saved = ck.rng_states()
    a = (random.random(), float(np.random.rand()), float(torch.rand(())))
    ck.set_rng_states(saved)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == a


def test_rewriting_the_step_last_points_at_replaces_it_atomically(run_copy):
    """A run resumed from an older checkpoint reaches the step `last` names and rewrites it."""
    cfg, model, opt, sched = _parts(run_copy)
    root = run_copy / "checkpoints"
    assert os.readlink(root / "last") == "step_00000008"
    ck.save_checkpoint(root, 8, cfg, model, opt, sched, {"marker": 1}, keep=2)
    assert os.readlink(root / "last") == "step_00000008"
    assert read_checkpoint(run_copy).trainer_state()["trainer"] == {"marker": 1}
    assert sorted(p.name for p in root.iterdir()) == ["last", "step_00000004", "step_00000008"]
