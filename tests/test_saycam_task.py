"""The saycam task: `obs train configs/saycam.yaml task.params.folder=PATH` on two short clips."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from onebigstate.config import ConfigError, load_config
from onebigstate.data.saycam import SayCamError, write_clip
from onebigstate.tasks.base import TaskConfig
from onebigstate.tasks.registry import build_task
from onebigstate.training.config import RunConfig
from onebigstate.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
FPS, SIZE, SR, SECONDS = 10, 32, 16000, 2
PARAMS = ["task.params.fps=5", "task.params.image_size=[8,8]", "task.params.seq_len=8"]


def _clip(path: Path, shift: int) -> None:
    frames = np.zeros((FPS * SECONDS, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(len(frames)):
        frames[i, :, (shift + i) % SIZE] = 255
    t = np.arange(SR * SECONDS) / SR
    write_clip(path, frames, FPS, 0.3 * np.sin(2 * np.pi * (400.0 + 200 * shift) * t), SR)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("saycam_task")
    _clip(root / "a.mp4", 2)
    _clip(root / "b.mp4", 5)
    return root


def _cfg(folder: Path, extra: list[str] = ()) -> RunConfig:
    return load_config(RunConfig, ROOT / "configs" / "saycam.yaml",
                       [f"task.params.folder={folder}", *PARAMS, "task.test_size=8", "train.steps=3",
                        "train.batch_size=4", "train.eval_every=0", "train.ckpt_every=0", "train.log_every=1",
                        "train.progress=false", "train.device=cpu", *extra])


@pytest.mark.parametrize("holdout", ["clips", "time"])
def test_train_obs_on_a_saycam_folder(folder, tmp_path, holdout):
    # time: the last half of each 2-second clip (10 steps at 5 frames/s) is held out
    extra = [f"task.params.holdout={holdout}", "task.params.test_fraction=0.5"]
    res = train(_cfg(folder, extra), tmp_path / "run", log=lambda m: None)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["task"] == "saycam" and saved["model"] == "obs" and saved["step"] == 3
    for k in ("loss", "baseline_mse", "r2", "cosine", "baseline_cosine"):
        assert np.isfinite(saved["metrics"][k]), k
    assert saved["metrics"] == res["metrics"]
    assert saved["metrics"]["baseline_mse"] > 0


def test_windows_are_deterministic_and_labels_hold_the_next_step(folder):
    cfg = _cfg(folder).task
    task, again = build_task(cfg), build_task(cfg)
    x, y = task.train_batch(5, 3)
    x2, y2 = again.train_batch(5, 3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, task.train_batch(6, 3)[0])
    Fd = task.layout.feature_dim
    assert x.shape == (3, 8, Fd + 2) and y.shape == (3, 8, 2 * Fd + 1)
    # the target of step t is the input of step t + 1; the baseline is the input of step t - 1
    assert torch.equal(y[:, :-1, :Fd], x[:, 1:, :Fd]) and torch.equal(y[:, 1:, Fd:2 * Fd], x[:, :-1, :Fd])
    assert torch.equal(y[:, :-1, -1], x[:, 1:, Fd])  # next step's modality
    # predicting the target exactly: loss 0, r2 1, cosine 1; the baseline itself: r2 0
    m = task.metrics(y[..., :Fd], y)
    assert m["loss"] == 0 and m["r2"] == 1 and abs(m["cosine"] - 1) < 1e-5
    assert abs(task.metrics(y[..., Fd:2 * Fd], y)["r2"]) < 1e-6
    tx, ty = task.test_set()
    assert tx.shape[0] == 8 and torch.equal(tx, task.test_set()[0])


def test_bad_folders_name_the_path(tmp_path, folder):
    def build(path, **kw):
        build_task(TaskConfig(name="saycam", params={"folder": str(path), **kw}))

    with pytest.raises(SayCamError, match=r"absent: SAYCam folder does not exist"):
        build(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"empty: no videos"):
        build(empty)
    (empty / "broken.mp4").write_bytes(b"not a video" * 100)
    with pytest.raises(SayCamError, match=r"broken\.mp4: cannot decode"):
        build(empty)
    with pytest.raises(SayCamError, match=r"no training clip part holds a window"):
        build(folder, fps=5, image_size=(8, 8), seq_len=40)
    one = tmp_path / "one"
    one.mkdir()
    _clip(one / "only.mp4", 0)
    with pytest.raises(SayCamError, match=r"one: holdout=clips needs at least 2 videos"):
        build(one, fps=5, image_size=(8, 8), seq_len=8)
    with pytest.raises(ConfigError, match="folder"):
        build_task(TaskConfig(name="saycam", params={}))


def test_obs_train_command(folder, tmp_path, capsys):
    from onebigstate.cli.main import main
    args = ["train", str(ROOT / "configs" / "saycam.yaml"), f"task.params.folder={folder}", *PARAMS,
            "task.test_size=4", "train.steps=2", "train.batch_size=2", "train.progress=false", "train.device=cpu",
            "--out", str(tmp_path / "cli")]
    assert main(args) == 0
    assert "r2" in json.loads((tmp_path / "cli" / "results.json").read_text())["metrics"]
    assert main(["train", str(ROOT / "configs" / "saycam.yaml"), f"task.params.folder={tmp_path / 'nope'}",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "nope: SAYCam folder does not exist" in capsys.readouterr().err
