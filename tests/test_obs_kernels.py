"""Every fast scan backend against the plain step-by-step reference (float64).

Compares outputs, gradients of every parameter and of the input, the final state, the carry
and which entries were written, over a table of awkward cases, for the Python training path
(``reversible``) and the compiled one (``cpu``, with its window's changes kept in the dense
per-thread scratch, ``cpu``, and in the hash map used at large N, ``cpu_hashed``).
Tolerance: relative error (``tests.helpers.rel_err``) at most 1e-12 for values and states and
1e-10 for gradients in float64; the discrete choices (k_t, A_t) must be identical.
"""
from __future__ import annotations

import contextlib

import pytest
import torch

from onebigstate import OBSConfig, OBSLayer
from onebigstate.kernels import cpu as cpu_backend
from onebigstate.model.config import PLAIN_LAYER
from tests.helpers import rel_err

# the plain layer (PLAIN_LAYER): each case below names the switches it turns on; "every_switch" has
# the recipe's and more
BASE = dict(d_model=12, n_nodes=24, d_key=8, d_value=6, d_hidden=8, d_write=8, k_min=2, k_max=4,
            m_active=5, init_std=0.1, **PLAIN_LAYER)

CASES = {
    "T1": dict(T=1),
    "odd_T": dict(T=13),
    "batch_of_1": dict(T=9, B=1, continuous="mixed"),
    "continuous_mixed": dict(T=17, continuous="mixed"),
    "k_fixed": dict(T=9, cfg=dict(k_min=3, k_max=3)),
    "no_spread": dict(T=11, cfg=dict(spread_from_active=False)),
    "costs_and_gaussian_reg": dict(T=10, cfg=dict(gaussian_reg=dict(weight=0.5, n_samples=37), k_cost=0.3,
                                                    write_cost=0.7)),
    "m_equals_n": dict(T=6, cfg=dict(n_nodes=8, k_max=4, m_active=8)),
    "carried_state": dict(T=8, carried=True),
    "reverse_assoc": dict(T=12, continuous="mixed", carried=True, cfg=dict(reverse_assoc=True)),
    "row_norm": dict(T=14, continuous="mixed", carried=True, cfg=dict(row_norm=True)),
    "circuit_direct": dict(T=12, continuous="mixed", carried=True, cfg=dict(row_norm=True, circuit_direct=2.0)),
    # a bound small enough that many writes are damped and some entries pinned (factor 0)
    "state_bound": dict(T=16, continuous="mixed", carried=True, cfg=dict(state_bound=0.3)),
    # a step may choose no node (k_hard 0 on some steps here: its k logit starts low and spread)
    "k_min_zero": dict(T=14, continuous="mixed", carried=True, k_logit=-1.6, cfg=dict(
        k_min=0, k_max=3, row_norm=True, circuit_direct=1.0, reverse_assoc=True)),
    # the active nodes stay active, strongly enough that A_t keeps some of A_{t-1}'s nodes
    "active_persist": dict(T=13, continuous="mixed", carried=True, cfg=dict(
        row_norm=True, circuit_direct=1.0, active_persist=1.5, reverse_assoc=True)),
    "every_switch": dict(T=15, continuous="mixed", carried=True, cfg=dict(
        row_norm=True, circuit_direct=1.0, reverse_assoc=True, state_bound=0.5,
        gaussian_reg=dict(weight=0.2, n_samples=50))),
}
# "cpu_hashed": the compiled backend with the window's changes in its hash map (what it uses
# when an N x N scratch would exceed cpu.DIRECT_MAX_BYTES), forced at these small sizes
FAST_BACKENDS = ["reversible", "cpu", "cpu_hashed"]


@contextlib.contextmanager
def backend_mode(backend: str):
    """The config's backend name for ``backend``, with the hashed mode forced for cpu_hashed."""
    saved = cpu_backend.DIRECT_MAX_BYTES
    if backend == "cpu_hashed":
        cpu_backend.DIRECT_MAX_BYTES = 0
    try:
        yield "cpu" if backend.startswith("cpu") else backend
    finally:
        cpu_backend.DIRECT_MAX_BYTES = saved


@torch.no_grad()
def set_k_logit(layer: OBSLayer, case: dict) -> None:
    """A case's ``k_logit``: the write module's k_t spread widely around that logit (so that some
    steps round to k_t = 0 and others do not)."""
    if "k_logit" in case:
        layer.write.b_out[0] += case["k_logit"]
        layer.write.w_out[0] *= 30.0


def run(backend: str, case: dict, seed: int = 0, dtype: torch.dtype = torch.float64, device: str = "cpu"):
    with backend_mode(backend) as name:
        cfg = OBSConfig(**{**BASE, **case.get("cfg", {}), "backend": name})
        torch.manual_seed(seed)
        layer = OBSLayer(cfg).to(dtype=dtype, device=device).train()
        set_k_logit(layer, case)
        B, T = case.get("B", 3), case["T"]
        # drawn in float64 on the CPU whatever the dtype and device, so that every run sees the same numbers
        x = torch.randn(B, T, cfg.d_model, dtype=torch.float64).to(dtype=dtype, device=device).requires_grad_(True)
        cont = None
        if case.get("continuous") == "mixed":
            cont = (torch.rand(B, T, generator=torch.Generator().manual_seed(1)) > 0.5).to(device)
        state = None
        if case.get("carried"):
            with torch.no_grad():
                _, state = layer(torch.randn(B, 5, cfg.d_model, dtype=torch.float64).to(dtype=dtype, device=device))
        y, state = layer(x, state, continuous=cont)
        gy = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        loss = (y * gy.to(dtype=dtype, device=device)).sum() + layer.last_stats.aux_loss \
            + (layer.last_stats.k_soft ** 2).sum()
        loss.backward()
    grads = {n: p.grad.detach().cpu().clone() for n, p in layer.named_parameters() if p.grad is not None}
    return y.detach().cpu(), x.grad.cpu().clone(), grads, state, layer.last_stats


def assert_grads_close(g_fast: dict, g_ref: dict, tol: float) -> None:
    # a parameter unused in a case (beta without spreading) has no gradient or a zero one
    for n in g_ref.keys() | g_fast.keys():
        a = g_fast.get(n, torch.zeros(()))
        b = g_ref.get(n, torch.zeros(()))
        assert (rel_err(a, b) < tol) if b.abs().max() > 0 else (a.abs().max() == 0), n


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_fast_backend_matches_reference_values_and_gradients(name, backend):
    case = CASES[name]
    y_r, dx_r, g_r, s_r, st_r = run("reference", case)
    y_f, dx_f, g_f, s_f, st_f = run(backend, case)
    assert torch.equal(st_r.k_hard, st_f.k_hard)
    if "k_logit" in case:
        assert (st_r.k_hard == 0).any() and (st_r.k_hard > 0).any()
    assert torch.equal(st_r.active_idx, st_f.active_idx)
    assert rel_err(y_f, y_r) < 1e-12
    assert rel_err(dx_f, dx_r) < 1e-10
    assert_grads_close(g_f, g_r, 1e-10)
    # final state, written entries and carry agree too
    assert rel_err(s_f.S, s_r.S) < 1e-12
    assert torch.equal(s_f.touched, s_r.touched)
    assert torch.equal(s_f.carry.active_idx, s_r.carry.active_idx)
    assert torch.equal(s_f.carry.circuit_idx, s_r.carry.circuit_idx)
    assert rel_err(s_f.carry.active_w, s_r.carry.active_w) < 1e-12
    assert rel_err(s_f.carry.alpha, s_r.carry.alpha) < 1e-12


def test_the_active_persist_case_exercises_the_term():
    """The parity case ``active_persist`` would prove nothing if the term never changed A_t."""
    case = CASES["active_persist"]
    without = {**case, "cfg": {**case["cfg"], "active_persist": 0.0}}
    st_with, st_without = run("reference", case)[4], run("reference", without)[4]
    assert (st_with.active_idx != st_without.active_idx).float().mean() > 0.3


# float32: the compiled backend against the float64 reference. Measured on the cases below (worst
# over them): outputs 2.9e-7, final state 1.7e-7, input gradient 4.7e-7 and parameter gradients
# 9.8e-7, the same order as the reversible path's own float32 errors (5.0e-7, 1.7e-7, 2.9e-7,
# 6.8e-7). The tolerances leave about 10x.
F32_TOL = {"y": 3e-6, "state": 2e-6, "dx": 5e-6, "grads": 1e-5}


@pytest.mark.parametrize("name", ["odd_T", "continuous_mixed", "every_switch", "circuit_direct"])
def test_cpu_backend_in_float32_within_the_stated_tolerances(name):
    case = CASES[name]
    y_r, dx_r, g_r, s_r, st_r = run("reference", case)
    y_f, dx_f, g_f, s_f, st_f = run("cpu", case, dtype=torch.float32)
    assert torch.equal(st_r.active_idx, st_f.active_idx)
    assert rel_err(y_f.double(), y_r) < F32_TOL["y"]
    assert rel_err(s_f.S.double(), s_r.S) < F32_TOL["state"]
    assert rel_err(dx_f.double(), dx_r) < F32_TOL["dx"]
    assert_grads_close({n: g.double() for n, g in g_f.items()}, g_r, F32_TOL["grads"])


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_every_parameter_gets_a_gradient(backend):
    _, _, grads, _, _ = run(backend, dict(T=12, continuous="mixed", cfg=dict(
        gaussian_reg=dict(weight=0.1, n_samples=20), k_cost=0.1, write_cost=0.1)))
    layer = OBSLayer(OBSConfig(**BASE))
    names = {n for n, _ in layer.named_parameters()}
    assert names == set(grads), names - set(grads)
    for n, g in grads.items():
        assert g.abs().sum() > 0, f"zero gradient for {n}"


def test_reversible_backward_twice_is_a_clear_error():
    layer = OBSLayer(OBSConfig(**BASE, backend="reversible")).double()
    y, _ = layer(torch.randn(2, 4, BASE["d_model"], dtype=torch.float64))
    y.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="cannot be differentiated twice"):
        y.sum().backward()


def test_cpu_backward_twice_gives_the_same_gradients():
    """The compiled backward reads only what the forward logged, so it may run again."""
    layer = OBSLayer(OBSConfig(**{**BASE, "backend": "cpu", "row_norm": True})).double()
    y, _ = layer(torch.randn(2, 7, BASE["d_model"], dtype=torch.float64))
    y.sum().backward(retain_graph=True)
    first = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    layer.zero_grad()
    y.sum().backward()
    for n, g in first.items():
        assert torch.equal(g, dict(layer.named_parameters())[n].grad), n


NO_GRAD_CASES = {"odd_T": CASES["odd_T"], "reg": CASES["costs_and_gaussian_reg"],
                 "row_norm_mixed": dict(T=14, continuous="mixed", cfg=dict(row_norm=True))}


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("name", list(NO_GRAD_CASES))
def test_without_gradients_gives_the_same_outputs_and_state(name, backend, monkeypatch):
    """Evaluation (no_grad) keeps no logs for a backward (the reversible path: no state copy)."""
    from onebigstate.model.state import DenseState
    copies = []
    snapshot = DenseState.snapshot
    monkeypatch.setattr(DenseState, "snapshot", lambda self: copies.append(1) or snapshot(self))
    case = NO_GRAD_CASES[name]
    y_ref, _, _, s_ref, st_ref = run("reference", case)
    with backend_mode(backend) as backend_name:
        cfg = OBSConfig(**{**BASE, **case.get("cfg", {}), "backend": backend_name})
        torch.manual_seed(0)
        layer = OBSLayer(cfg).double().train()
        x = torch.randn(3, case["T"], cfg.d_model, dtype=torch.float64)
        cont = None
        if case.get("continuous") == "mixed":
            cont = torch.rand(3, case["T"], generator=torch.Generator().manual_seed(1)) > 0.5
        with torch.no_grad():
            y, state = layer(x, None, continuous=cont)
    # the parameters require grad, so only the grad mode tells the scan that no backward follows
    assert copies == []
    assert not y.requires_grad
    assert torch.equal(layer.last_stats.active_idx, st_ref.active_idx)
    assert rel_err(y, y_ref) < 1e-12 and rel_err(state.S, s_ref.S) < 1e-12
    assert torch.equal(state.touched, s_ref.touched)


def test_active_set_ties_go_to_the_smaller_index_as_in_the_compiled_backends():
    from onebigstate.kernels.step import StepConfig, choose_active
    cfg = StepConfig(n_nodes=8, k_min=1, k_max=1, m_active=4)
    act = torch.tensor([[0.5, 2.0, 1.0, 2.0, 2.0, 3.0, 2.0, 2.0]])
    assert choose_active(act, cfg).tolist() == [[5, 1, 3, 4]]
    act = torch.tensor([[0.5, float("nan"), 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]])      # NaN counts as largest
    assert choose_active(act, cfg).tolist() == [[1, 2, 3, 5]]
