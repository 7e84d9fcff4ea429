"""``onebigstate.load``: a run's trained model back in Python in one line."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import onebigstate
from onebigstate.config import build_config
from onebigstate.training import CheckpointError, RunConfig, evaluate, load_run, train
from onebigstate.training.checkpoint import MODEL_FILE
from training_helpers import tiny_tree


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("load") / "run"
    train(build_config(RunConfig, tiny_tree()), out, log=lambda m: None)
    return out


def test_load_gives_the_trained_model(run):
    model = onebigstate.load(run)
    loaded = load_run(run)
    assert not model.training and loaded.step == 12 and loaded.path.name.endswith("12")
    inputs, _ = loaded.task.test_set()
    with torch.no_grad():
        assert torch.equal(model(inputs)[0], loaded.model(inputs)[0])
    # the weights are the checkpoint's, tensor for tensor
    saved = load_file(loaded.path / MODEL_FILE)
    state = model.state_dict()
    assert saved.keys() <= state.keys() and all(torch.equal(state[k], v) for k, v in saved.items())
    assert evaluate(model, loaded.task, batch_size=8) == evaluate(loaded.model, loaded.task, batch_size=8)


def test_load_names_what_is_wrong(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        onebigstate.load(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        onebigstate.load(tmp_path)
