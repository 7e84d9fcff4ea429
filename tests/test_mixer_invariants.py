"""The invariants every sequence mixer keeps, written once and run for every registered mixer.

- step equals forward: feeding a sequence one step at a time (``mixer.step``) gives the values
  of one pass, for every mixer that has a step interface;
- chunks with carried state equal one pass: a sequence split anywhere, the state carried;
- detaching the carried state changes no values (truncated BPTT cuts gradients, not values);
- the state size is reported: positive floats per stream, constant in the sequence length for
  a recurrent model, the KV cache for attention.

float64 throughout, so the tolerance is 1e-10 (0 for detaching). A new mixer gets a case in
``CASES`` or ``test_every_registered_mixer_has_a_case`` fails.
"""
from __future__ import annotations

import pytest
import torch

import onebigstate.baselines  # noqa: F401  (registers the baseline mixers)
from onebigstate.model.config import PLAIN_LAYER
from onebigstate.nets import MIXERS, ModelConfig, build_mixer, build_model

# name -> (registered mixer, small config)
CASES = {
    "obs": ("obs", {"n_nodes": 32, "k_min": 2, "k_max": 4, "m_active": 4, "d_key": 8, "d_value": 8,
                    "d_hidden": 8, "d_write": 8, **PLAIN_LAYER}),          # the recipe is the sparse case
    "obs-sparse-rownorm-direct": ("obs", {"n_nodes": 32, "k_min": 2, "k_max": 4, "m_active": 4, "d_key": 8,
                                          "d_value": 8, "d_hidden": 8, "d_write": 8, "state_backend": "sparse",
                                          "row_norm": True, "circuit_direct": 1.0}),
    "transformer": ("transformer", {"n_heads": 2}),
    "lstm": ("lstm", {}),
    "mamba": ("mamba", {}),
    "mamba-seq-scan": ("mamba", {"pscan": False}),
    "deltanet": ("deltanet", {"n_heads": 2, "chunk_size": 8}),
    "gated_deltanet": ("gated_deltanet", {"n_heads": 2, "chunk_size": 8}),
    "hopfield": ("hopfield", {"n_heads": 2}),
    "hopfield-learned-beta": ("hopfield", {"n_heads": 2, "learn_beta": True, "normalize_patterns": True,
                                           "beta": 8.0, "n_updates": 2, "conv_size": 3}),
    "titans": ("titans", {"heads": 2, "chunk_size": 2}),
    "s4d": ("s4d", {"d_state": 8}),
    "s4_dense": ("s4_dense", {"d_state": 8}),
}
# state grows with the sequence (a KV cache); the rest keep a fixed-size state
ATTENTION = {"transformer", "hopfield"}
IDS = list(CASES)


def _model(case: str, d_model: int = 16, n_layers: int = 2, vocab: int = 64):
    name, kw = CASES[case]
    return build_model(ModelConfig(name=name, d_model=d_model, n_layers=n_layers, mixer=kw), n_out=vocab,
                       vocab_size=vocab)


def _detach(state):
    """Detach every tensor in a state (dicts, tuples, titans' NeuralMemState and TensorDicts; the
    OBS store keeps no graph: its carry is detached by the op)."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, dict):
        return {k: _detach(v) for k, v in state.items()}
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_detach(v) for v in state))
    if isinstance(state, (tuple, list)):
        return type(state)(_detach(v) for v in state)
    if hasattr(state, "apply") and hasattr(state, "items"):     # titans' TensorDict
        return state.apply(lambda t: t.detach())
    return state


def test_every_registered_mixer_has_a_case():
    assert set(MIXERS) == {name for name, _ in CASES.values()}


@pytest.mark.parametrize("case", IDS)
def test_step_equals_forward(case):
    name, kw = CASES[case]
    torch.manual_seed(0)
    mixer = build_mixer(name, 16, kw).double()
    if not hasattr(mixer, "step"):
        pytest.skip(f"{name} has no step interface")
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    y_full, _ = mixer(x)
    state, ys = None, []
    for t in range(x.shape[1]):
        y, state = mixer.step(x[:, t], state)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, dim=1), y_full, rtol=1e-10, atol=1e-10)


def test_the_recurrent_mixers_have_a_step_interface():
    with_step = {name for name, kw in CASES.values() if hasattr(build_mixer(name, 16, kw), "step")}
    assert with_step >= {"obs", "lstm", "mamba", "deltanet", "gated_deltanet", "s4d"}


@pytest.mark.parametrize("splits", [(5, 1, 7), (1, 12), (8, 5)], ids=["5-1-7", "1-12", "8-5"])
@pytest.mark.parametrize("case", IDS)
def test_chunks_with_carried_state_equal_one_pass(case, splits):
    torch.manual_seed(0)
    model = _model(case).double()
    x = torch.randint(0, 64, (2, sum(splits)))
    y_full, _ = model(x)
    states, ys, start = None, [], 0
    for n in splits:
        y, states = model(x[:, start:start + n], states)
        ys.append(y)
        start += n
    torch.testing.assert_close(torch.cat(ys, dim=1), y_full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", IDS)
def test_detaching_the_carried_state_changes_no_values(case):
    torch.manual_seed(0)
    model = _model(case).double()
    x = torch.randint(0, 64, (2, 11))
    _, states = model(x[:, :6])
    y2, _ = model(x[:, 6:], states)
    y2_detached, _ = model(x[:, 6:], [_detach(s) for s in states])
    torch.testing.assert_close(y2_detached, y2, rtol=0, atol=0)


@pytest.mark.parametrize("case", IDS)
def test_state_size_is_reported(case):
    name, kw = CASES[case]
    model = _model(case)
    s64, s1024 = model.state_size(64)["floats"], model.state_size(1024)["floats"]
    assert s64 > 0
    if name not in ATTENTION:
        assert s1024 == s64
        return
    conv = 2 * 16 * (kw.get("conv_size", 1) - 1)
    assert s1024 - conv == 16 * (s64 - conv) == 2 * 1024 * 16 * 2       # K and V, 2 layers


def test_obs_reports_its_dense_size_too():
    size = _model("obs").state_size(64)
    assert size["dense_floats"] == 2 * 32 * 32 and size["floats"] >= size["dense_floats"]
