"""The see-and-hear task: batches, held-out streams, scoring, the continuous flags reaching OBS
only, encoder pretraining, and a few training steps of OBS and a baseline through the trainer."""
from __future__ import annotations

import json

import pytest
import torch

from onebigstate.config import ConfigError, build_config
from onebigstate.data.streams import IGNORE, WORD_TARGET_OFFSET
from onebigstate.nets.stack import ModelConfig
from onebigstate.tasks.base import TaskConfig
from onebigstate.tasks.registry import build_task
from onebigstate.tasks.seeandhear_task import StreamSeqModel, grouped_predictions
from onebigstate.training.config import RunConfig
from onebigstate.training.trainer import train

TINY_PARAMS = {"n_pairs": 2, "exposures": [1], "delay_min": 3, "delay_max": 8, "view_frames": 2,
               "name_gap": [1, 2], "spacing": [1, 3], "image_query_frac": 0.5, "pretrain_steps": 0}
TINY_OBS = {"n_nodes": 32, "k_min": 2, "k_max": 4, "m_active": 4, "d_key": 16, "d_value": 16,
            "d_hidden": 16, "d_write": 16}


pytestmark = pytest.mark.usefixtures("one_thread")


def _task(**params):
    return build_task(TaskConfig(name="seeandhear", test_size=4, params={**TINY_PARAMS, **params}))


def test_batches_are_deterministic_with_a_fresh_pairing_per_step():
    task = _task()
    x0, y0 = task.train_batch(0, 4)
    x0b, y0b = task.train_batch(0, 4)
    assert torch.equal(x0, x0b) and torch.equal(y0, y0b)
    assert x0.shape == (4, task.params.seq_len, task.layout.packed_dim)
    labels = [task.train_batch(step, 4)[1] for step in range(4)]
    answers = {tuple(y[y != IGNORE].tolist()) for y in labels}
    assert len(answers) > 1, "training batches of different steps repeat the same pairings"


def test_heldout_streams_use_novel_words_and_answer_objects_or_novel_words():
    task = _task(image_query_frac=1.0)
    _, y = task.test_set()
    words = y[y != IGNORE] - WORD_TARGET_OFFSET
    novel = set(task.data.novel_word_ids.tolist())
    assert words.numel() and set(words.tolist()) <= novel
    _, y_train = task.train_batch(0, 4)
    assert not set((y_train[y_train != IGNORE] - WORD_TARGET_OFFSET).tolist()) & novel


def test_unknown_param_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="n_pair"):
        build_task(TaskConfig(name="seeandhear", params={"n_pair": 3}))


def test_grouped_scoring_answers_within_the_answers_group():
    # A word query (label 3) is scored among the objects, an image query (label 15) among the words.
    out = torch.zeros(1, 2, 80)
    out[0, 0, 40] = 9.0   # a word scores highest, but the answer of a word query is an object
    out[0, 0, 3] = 1.0
    out[0, 1, 2] = 9.0    # an object scores highest, but the answer of an image query is a word
    out[0, 1, 15] = 1.0
    assert grouped_predictions(out, torch.tensor([[3, 15]])).tolist() == [[3, 15]]


@pytest.mark.parametrize("name,reaches", [("obs", True), ("lstm", False)])
def test_continuous_flags_reach_obs_only(name, reaches):
    task = _task()
    torch.manual_seed(0)
    mixer = TINY_OBS if name == "obs" else {}
    model = task.build_model(ModelConfig(name=name, d_model=16, mixer=mixer))
    assert isinstance(model, StreamSeqModel)
    x, _ = task.train_batch(0, 2)
    flags = x[..., -1] > 0.5
    assert flags.any() and (x[..., -2][flags] == 1).all(), "image steps are the continuous ones"
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(x, continuous=torch.zeros_like(flags))
    assert (not torch.allclose(a, b)) == reaches


def test_encoder_pretraining_separates_words_and_digits():
    task = _task(pretrain_steps=30, freeze_encoder=True, extra_words=True)
    torch.manual_seed(0)
    model = task.build_model(ModelConfig(name="lstm", d_model=16))
    # chance: 1 in 50 words, 1 in 10 digits
    assert task.pretrain_accuracy["word_accuracy"] > 0.1 and task.pretrain_accuracy["image_accuracy"] > 0.3
    assert not any(p.requires_grad for p in model.embed.parameters())
    # the same initial weights give the same pretrained encoder (cached in the process)
    torch.manual_seed(0)
    again = task.build_model(ModelConfig(name="obs", d_model=16, mixer=TINY_OBS))
    for p, q in zip(model.embed.parameters(), again.embed.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", ["obs", "lstm"])
def test_trains_a_few_steps_through_the_trainer(tmp_path, name):
    tree = {"task": {"name": "seeandhear", "test_size": 4, "params": {**TINY_PARAMS, "pretrain_steps": 2}},
            "model": {"name": name, "d_model": 16, "mixer": TINY_OBS if name == "obs" else {}},
            "train": {"steps": 3, "batch_size": 2, "log_every": 1, "eval_batch_size": 4, "progress": False}}
    res = train(build_config(RunConfig, tree), tmp_path, log=lambda m: None)
    assert res["step"] == 3 and 0.0 <= res["metrics"]["accuracy"] <= 1.0
    losses = [json.loads(x)["loss"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if json.loads(x)["kind"] == "train"]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_shipped_config_builds():
    from onebigstate.config import load_config
    from training_helpers import ROOT
    cfg = load_config(RunConfig, ROOT / "configs" / "seeandhear.yaml", ["model.name=deltanet", "model.mixer={}"])
    assert cfg.task.name == "seeandhear" and cfg.model.name == "deltanet"
