"""Chunked mode (``kernels/chunked.py``) against the sequential reference and its own specification.

Float64 throughout. Tolerances, as relative errors (``tests.helpers.rel_err``): 1e-12 for values,
states and carries, 1e-10 for gradients; discrete choices (k_t, A_t, written entries) identical.

- chunks of one step are the sequential model (values and gradients), in both implementations;
- as many sweeps as steps in a chunk are the sequential model too, and so is the exact variant
  (``chunk_sweeps=0``, which stops when the carries settle);
- the chunk-parallel path equals the specification (the reference step handed each sweep's carries)
  where the chunked model is an approximation (1 and 2 sweeps), over the kernels' case table;
- the gate cuts where its rule says, on hand-made inputs.
"""
from __future__ import annotations

import pytest
import torch

from onebigstate import OBSConfig, OBSLayer
from onebigstate.kernels.chunked import ChunkSpec, gate_bounds
from onebigstate.kernels.scan import ScanInputs
from onebigstate.kernels.step import StepConfig
from tests.helpers import rel_err
from tests.test_obs_kernels import CASES, assert_grads_close, run

SEQUENTIAL: dict = {}


def sequential(name: str):
    if name not in SEQUENTIAL:
        SEQUENTIAL[name] = run("reference", CASES[name])
    return SEQUENTIAL[name]


def chunked(backend: str, name: str, **settings):
    case = dict(CASES[name])
    case["cfg"] = {**case.get("cfg", {}), "scan_mode": "chunked", **settings}
    return run(backend, case)


def assert_same_run(a, b, grads: bool = True) -> None:
    y_a, dx_a, g_a, s_a, st_a = a
    y_b, dx_b, g_b, s_b, st_b = b
    assert torch.equal(st_a.k_hard, st_b.k_hard)
    assert torch.equal(st_a.active_idx, st_b.active_idx)
    assert rel_err(y_a, y_b) < 1e-12
    assert rel_err(s_a.S, s_b.S) < 1e-12
    assert torch.equal(s_a.touched, s_b.touched)
    assert torch.equal(s_a.carry.active_idx, s_b.carry.active_idx)
    assert rel_err(s_a.carry.active_w, s_b.carry.active_w) < 1e-12
    assert rel_err(s_a.carry.alpha, s_b.carry.alpha) < 1e-12
    if grads:
        assert rel_err(dx_a, dx_b) < 1e-10
        assert_grads_close(g_a, g_b, 1e-10)


@pytest.mark.parametrize("backend", ["reference", "reversible"])
@pytest.mark.parametrize("name", list(CASES))
def test_chunks_of_one_step_are_the_sequential_model(name, backend):
    out = chunked(backend, name, max_chunk=1)
    assert_same_run(out, sequential(name))
    assert set(out[4].chunk_lengths) == {1} and set(out[4].chunk_sweeps) == {1}


@pytest.mark.parametrize("backend", ["reference", "reversible"])
@pytest.mark.parametrize("name", ["odd_T", "carried_state", "continuous_mixed", "every_switch"])
def test_as_many_sweeps_as_steps_are_the_sequential_model(name, backend):
    # chunks of 4 with 4 sweeps (T = 15 or 17: a short last chunk), values and gradients
    out = chunked(backend, name, max_chunk=4, chunk_sweeps=4)
    assert_same_run(out, sequential(name))


@pytest.mark.parametrize("name", ["odd_T", "row_norm", "every_switch"])
def test_the_exact_variant_equals_sequential(name):
    out = chunked("reversible", name, max_chunk=5, chunk_sweeps=0)
    # it stops when the carries settle: the values are sequential's; the gradient is that of
    # the sweeps it ran, equal to sequential's when it ran as many as the chunk has steps
    assert_same_run(out, sequential(name), grads=all(s == n for s, n in zip(out[4].chunk_sweeps,
                                                                           out[4].chunk_lengths)))
    assert max(out[4].chunk_sweeps) <= 5


@pytest.mark.parametrize("settings", [dict(max_chunk=4, chunk_sweeps=1), dict(max_chunk=6, chunk_sweeps=2),
                                      dict(max_chunk=64, chunk_sweeps=2)],
                         ids=["C4_sweeps1", "C6_sweeps2", "C64_longer_than_the_window"])
@pytest.mark.parametrize("name", list(CASES))
def test_chunk_parallel_path_equals_the_specification(name, settings):
    assert_same_run(chunked("reversible", name, **settings), chunked("reference", name, **settings))


def test_one_sweep_is_an_approximation_not_the_sequential_model():
    # chunks longer than one step with fewer sweeps than steps change the model (that is the point)
    y_c = chunked("reversible", "odd_T", max_chunk=4, chunk_sweeps=1)[0]
    assert rel_err(y_c, sequential("odd_T")[0]) > 1e-3


def test_gated_chunks_match_the_specification_and_cover_the_window():
    settings = dict(max_chunk=5, chunk_sweeps=2, chunk_gate="rule")
    out = chunked("reversible", "continuous_mixed", **settings)
    assert_same_run(out, chunked("reference", "continuous_mixed", **settings))
    assert sum(out[4].chunk_lengths) == CASES["continuous_mixed"]["T"] and max(out[4].chunk_lengths) <= 5


def test_sparse_store_runs_chunked_like_the_dense_one():
    settings = dict(max_chunk=4, chunk_sweeps=2, state_init="hash")
    dense = chunked("reversible", "row_norm", **settings)
    sparse = chunked("reversible", "row_norm", **settings, state_backend="sparse")
    assert torch.equal(dense[4].active_idx, sparse[4].active_idx)
    assert rel_err(sparse[0], dense[0]) < 1e-12
    assert rel_err(sparse[1], dense[1]) < 1e-10
    assert_grads_close(sparse[2], dense[2], 1e-10)


@torch.no_grad()
def _eval(layer, x):
    return layer(x)


def test_without_gradients_gives_the_same_outputs_and_state():
    cfg = OBSConfig(d_model=12, n_nodes=24, d_key=8, d_value=6, d_hidden=8, d_write=8, k_min=2, k_max=4,
                    m_active=5, init_std=0.1, row_norm=True, state_bound=0.5, scan_mode="chunked", max_chunk=4)
    torch.manual_seed(0)
    layer = OBSLayer(cfg).double()
    x = torch.randn(2, 11, 12, dtype=torch.float64)
    y_grad, s_grad = layer(x)
    y_eval, s_eval = _eval(layer, x)
    assert rel_err(y_eval, y_grad.detach()) < 1e-12 and rel_err(s_eval.S, s_grad.S) < 1e-12


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_sequential_only_backends_refuse_chunked_mode(backend):
    cfg = OBSConfig(d_model=8, n_nodes=16, d_key=4, d_value=4, d_hidden=4, d_write=4, k_min=2, k_max=3,
                    m_active=4, backend=backend, scan_mode="chunked")
    with pytest.raises(ValueError, match="sequential mode only"):
        OBSLayer(cfg)(torch.randn(1, 3, 8))


def test_bad_chunk_settings_are_refused():
    with pytest.raises(ValueError, match="max_chunk"):
        ChunkSpec(max_chunk=0)
    with pytest.raises(ValueError, match="chunk_sweeps"):
        ChunkSpec(sweeps=-1)
    with pytest.raises(ValueError):
        OBSConfig(scan_mode="chunked", chunk_gate="learned")


# ---- the gate's cuts on hand-made inputs --------------------------------------------------------

def _inputs(circuits: list[list[int]], continuous: list[float]) -> ScanInputs:
    idx = torch.tensor([circuits])                                     # [1, T, K]
    T, K = idx.shape[1:]
    return ScanInputs(idx, torch.zeros(1, T, K), torch.zeros(1, T, 3), torch.tensor([continuous]))


CFG = StepConfig(n_nodes=32, k_min=2, k_max=3, m_active=4)


def test_gate_cuts_before_a_step_that_rereads_a_circuit_of_its_chunk():
    # tokens 0..3 on fresh nodes, then step 4 re-reads step 1's sure nodes (a query of a key)
    c = [[0, 1, 20], [2, 3, 21], [4, 5, 22], [6, 7, 23], [3, 2, 24], [8, 9, 25]]
    assert gate_bounds(_inputs(c, [0.0] * 6), CFG, max_chunk=16) == [(0, 4), (4, 6)]


def test_gate_ignores_a_node_outside_the_sure_part_of_a_circuit():
    # node 20 is only a candidate (slot k_min or later) of step 0: no re-read
    c = [[0, 1, 20], [20, 3, 21], [4, 5, 22]]
    assert gate_bounds(_inputs(c, [0.0] * 3), CFG, max_chunk=16) == [(0, 3)]


def test_gate_cuts_where_a_continuous_input_changes_scene():
    # frames 0-2 share nodes with their predecessor (re-reads, but frames: no cut); frame 3 shares
    # none (a new scene): cut; step 4 shares none either but is a token: no cut there
    c = [[0, 1, 2], [1, 10, 3], [10, 11, 4], [12, 13, 5], [14, 15, 6]]
    assert gate_bounds(_inputs(c, [1.0, 1.0, 1.0, 1.0, 0.0]), CFG, max_chunk=16) == [(0, 3), (3, 5)]
    # the same nodes as tokens: step 1 re-reads node 1 of step 0, step 2 node 10 of step 1
    assert gate_bounds(_inputs(c, [0.0] * 5), CFG, max_chunk=16) == [(0, 1), (1, 2), (2, 5)]


def test_gate_with_k_min_0_uses_each_circuits_first_node():
    # k_min 0: no slot is sure, so the rule reads the first candidate (re-read at step 2, new scene
    # at step 4); without that floor it cut every frame and never a re-read
    cfg = StepConfig(n_nodes=32, k_min=0, k_max=3, m_active=4)
    c = [[0, 1, 20], [2, 3, 21], [0, 5, 22], [6, 7, 23], [8, 7, 24]]
    assert gate_bounds(_inputs(c, [0.0] * 5), cfg, max_chunk=16) == [(0, 2), (2, 5)]
    frames = [[0, 1, 2], [0, 3, 4], [5, 6, 7]]
    assert gate_bounds(_inputs(frames, [1.0] * 3), cfg, max_chunk=16) == [(0, 2), (2, 3)]


def test_gate_cuts_at_max_chunk_and_takes_the_union_over_streams():
    c = [[2 * t, 2 * t + 1, 30] for t in range(7)]
    assert gate_bounds(_inputs(c, [0.0] * 7), CFG, max_chunk=3) == [(0, 3), (3, 6), (6, 7)]
    # two streams: the second re-reads at step 2, the first never; both are cut there
    second = [[0, 1, 30], [2, 3, 30], [1, 0, 30], [4, 5, 30]]
    idx = torch.tensor([c[:4], second])
    inputs = ScanInputs(idx, torch.zeros(2, 4, 3), torch.zeros(2, 4, 3), torch.zeros(2, 4))
    assert gate_bounds(inputs, CFG, max_chunk=16) == [(0, 2), (2, 4)]


# ---- training in chunked mode -------------------------------------------------------------------

def test_chunked_training_learns_and_a_stopped_lifelong_run_resumes_exactly(tmp_path):
    from onebigstate.config import build_config
    from onebigstate.training.checkpoint import read_checkpoint
    from onebigstate.training.config import RunConfig
    from onebigstate.training.trainer import train
    from tests.training_helpers import read_metrics, single_thread, tiny_tree

    def cfg(steps):
        tree = tiny_tree(steps=steps, carry_state=True, cosine=False, warmup=0, eval_every=6, ckpt_every=6,
                         log_every=2)
        tree["model"]["mixer"].update(scan_mode="chunked", max_chunk=5, chunk_sweeps=2)
        return build_config(RunConfig, tree)

    with single_thread():
        train(cfg(12), tmp_path / "whole", log=lambda m: None)
        train(cfg(6), tmp_path / "parts", log=lambda m: None)
        train(cfg(12), tmp_path / "parts", resume=read_checkpoint(tmp_path / "parts"), log=lambda m: None)
    whole = read_metrics(tmp_path / "whole")
    assert whole == read_metrics(tmp_path / "parts")
    losses = [r["loss"] for r in whole if r.get("kind") == "train"]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    (s_parts,), (s_whole,) = read_checkpoint(tmp_path / "parts").states(), read_checkpoint(tmp_path / "whole").states()
    assert torch.equal(s_parts.S, s_whole.S)
