"""The scan as one pure op: what it changes, what it returns, how it picks a backend, what it refuses.

``obs_scan(state, carry, inputs, params, cfg, backend=...)`` returns the reads, the step
statistics, the final state and the final carry, and changes its inputs only when asked
(``in_place=True``). The backends' values are compared in tests/test_obs_kernels.py.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from onebigstate import OBSConfig, OBSLayer
from onebigstate.kernels import backends, cpu
from onebigstate.kernels.scan import ScanInputs, obs_scan
from onebigstate.model.sparse_state import SparseState
from onebigstate.model.state import DenseState
from tests.helpers import rel_err
from tests.test_obs_kernels import BASE

BACKENDS = ["reference", "reversible", "cpu"]


def _setup(state_backend: str = "dense", B: int = 2, T: int = 7, seed: int = 0, **cfg):
    torch.manual_seed(seed)
    layer = OBSLayer(OBSConfig(**{**BASE, "state_backend": state_backend, "row_norm": True, **cfg})).double()
    x = torch.randn(B, T, BASE["d_model"], dtype=torch.float64)
    idx, scores = layer.addresser(x)
    inputs = ScanInputs(idx, scores, layer.write.features(x), x.new_zeros(B, T))
    return layer, inputs


def _snapshot(state) -> dict:
    t = {k: v.clone() for k, v in state.to_tensors().items()}
    return t


@pytest.mark.parametrize("state_backend", ["dense", "sparse"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_op_leaves_its_inputs_alone_unless_asked(backend, state_backend):
    layer, inputs = _setup(state_backend)
    with torch.no_grad():
        _, state = layer(torch.randn(2, 3, BASE["d_model"], dtype=torch.float64))   # a carried state
    before, carry = _snapshot(state), state.carry.clone()
    inputs_before = [t.clone() for t in (inputs.circuit_idx, inputs.scores, inputs.features)]
    out = obs_scan(state, carry, inputs, layer.step_params(), layer.step_cfg, backend=backend)
    assert out.state is not state
    for k, v in _snapshot(state).items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(carry.active_w, state.carry.active_w)
    for a, b in zip(inputs_before, (inputs.circuit_idx, inputs.scores, inputs.features)):
        assert torch.equal(a, b)
    # asked to, it advances the state it was given, to the same final state
    out_in_place = obs_scan(state, carry, inputs, layer.step_params(), layer.step_cfg, backend=backend,
                            in_place=True)
    assert out_in_place.state is state
    assert rel_err(state.as_dense(), out.state.as_dense()) < 1e-12
    assert torch.equal(state.entries_written(), out.state.entries_written())
    # the final carry is returned and kept in the final state too (checkpoints store it)
    assert torch.equal(out.carry.active_idx, out.active_idx[:, -1])
    assert torch.equal(out.state.carry.active_idx, out.carry.active_idx)
    assert torch.equal(out.carry.circuit_idx, inputs.circuit_idx[:, -1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_op_starts_from_the_carry_it_is_given(backend):
    """The carry argument, not whatever the state object holds, is where the window starts."""
    layer, inputs = _setup()
    with torch.no_grad():
        _, state = layer(torch.randn(2, 3, BASE["d_model"], dtype=torch.float64))
        carry = state.carry.clone()
        a = obs_scan(state, carry, inputs, layer.step_params(), layer.step_cfg, backend=backend)
        b = obs_scan(state, None, inputs, layer.step_params(), layer.step_cfg, backend=backend)
        state.carry = None
        c = obs_scan(state, carry, inputs, layer.step_params(), layer.step_cfg, backend=backend)
    assert not torch.equal(a.read, b.read)          # None: every stream starts with no active nodes
    assert torch.equal(a.read, c.read) and torch.equal(a.active_idx, c.active_idx)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_gets_clear_errors(backend):
    layer, inputs = _setup()
    state = layer.init_state(2)
    p, cfg = layer.step_params(), layer.step_cfg
    with pytest.raises(ValueError, match="circuit_idx must be"):
        obs_scan(state, None, ScanInputs(inputs.circuit_idx[..., :2], inputs.scores, inputs.features,
                                         inputs.continuous), p, cfg, backend=backend)
    with pytest.raises(ValueError, match="scores must be"):
        obs_scan(state, None, ScanInputs(inputs.circuit_idx, inputs.scores[:, :3], inputs.features,
                                         inputs.continuous), p, cfg, backend=backend)
    with pytest.raises(ValueError, match="at least one step"):
        obs_scan(state, None, ScanInputs(inputs.circuit_idx[:, :0], inputs.scores[:, :0], inputs.features[:, :0],
                                         inputs.continuous[:, :0]), p, cfg, backend=backend)
    with pytest.raises(ValueError, match="state holds 3 streams"):
        obs_scan(layer.init_state(3), None, inputs, p, cfg, backend=backend)
    with pytest.raises(ValueError, match="unknown scan backend"):
        obs_scan(state, None, inputs, p, cfg, backend="fast")


def test_cpu_backend_refuses_node_indices_out_of_range_and_mixed_dtypes():
    layer, inputs = _setup()
    state = layer.init_state(2)
    bad = inputs.circuit_idx.clone()
    bad[0, 3, 1] = BASE["n_nodes"]
    with pytest.raises(RuntimeError, match="circuit_idx holds node indices outside"):
        obs_scan(state, None, ScanInputs(bad, inputs.scores, inputs.features, inputs.continuous),
                 layer.step_params(), layer.step_cfg, backend="cpu")
    with pytest.raises(ValueError, match="one dtype"):
        obs_scan(state, None, ScanInputs(inputs.circuit_idx, inputs.scores.float(), inputs.features.float(),
                                         inputs.continuous.float()), layer.step_params(), layer.step_cfg,
                 backend="cpu")


def test_auto_runs_the_compiled_backend_on_cpu():
    assert backends.resolve_backend("auto", torch.device("cpu")) == "cpu"
    assert OBSConfig().backend == "auto"


def test_when_the_compiled_backend_cannot_load_auto_says_why_once_and_runs_reversible(monkeypatch):
    monkeypatch.setattr(cpu, "_state", {"ops": None, "error": "RuntimeError: no compiler here"})
    monkeypatch.setattr(backends, "_said", set())
    with pytest.warns(RuntimeWarning, match="no compiler here.*runs 'reversible'"):
        assert backends.resolve_backend("auto", torch.device("cpu")) == "reversible"
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # said once: not again
        assert backends.resolve_backend("auto", torch.device("cpu")) == "reversible"
    # named explicitly, it raises with the cause instead of running something else
    layer, inputs = _setup()
    with pytest.raises(RuntimeError, match="no compiler here"):
        obs_scan(layer.init_state(2), None, inputs, layer.step_params(), layer.step_cfg, backend="cpu")


def test_the_build_is_cached_by_source_and_flags(monkeypatch, tmp_path):
    key = cpu._cache_key()
    assert key == cpu._cache_key()
    monkeypatch.setattr(cpu, "CFLAGS", cpu.CFLAGS + ["-DOBS_TEST_FLAG"])
    assert cpu._cache_key() != key
    monkeypatch.setenv("OBS_EXTENSIONS_DIR", str(tmp_path))
    assert cpu.build_root() == tmp_path


# ---- the dense store builds its [B, N, N] tensors only when read ------------------------------------
def test_a_fresh_dense_state_is_built_on_first_read_with_its_writes():
    s0 = torch.randn(6, 6, dtype=torch.float64)
    state = DenseState.fresh(s0, 2)
    assert state._S is None and state.base_view().dense is s0
    pos = torch.tensor([0, 7, 40, 7])
    vals = torch.tensor([1.0, 2.0, 3.0, 0.5], dtype=torch.float64)
    state.add_(pos, vals)
    state.mark_written(pos, vals != 0)
    copy = state.clone()
    assert state._S is None and copy._S is None
    expected = s0.unsqueeze(0).expand(2, 6, 6).clone()
    expected.view(-1).index_add_(0, pos, vals)
    assert torch.equal(state.entries_written(), torch.tensor([2, 1]))
    assert state._S is None                        # counting written entries needs no S
    assert torch.equal(state.S, expected) and torch.equal(copy.as_dense(), expected)
    assert torch.equal(state.values_at(torch.tensor([7, 40])), torch.tensor([s0[1, 1] + 2.5, s0[0, 4] + 3.0]))
    state.add_(torch.tensor([1]), torch.tensor([1.0], dtype=torch.float64))   # built now: in place
    assert state.S[0, 0, 1] == s0[0, 1] + 1.0 and copy.S[0, 0, 1] == s0[0, 1]


def test_a_fresh_state_through_a_window_matches_a_built_one():
    layer, inputs = _setup()
    built = layer.init_state(2)
    _ = built.S                                    # materialise: the compiled op reads it as [B, N, N]
    a = obs_scan(layer.init_state(2), None, inputs, layer.step_params(), layer.step_cfg, backend="cpu")
    b = obs_scan(built, None, inputs, layer.step_params(), layer.step_cfg, backend="cpu")
    assert torch.equal(a.read, b.read) and torch.equal(a.state.S, b.state.S)
    assert torch.equal(a.state.touched, b.state.touched)
    assert isinstance(a.state, DenseState) and not isinstance(a.state, SparseState)
