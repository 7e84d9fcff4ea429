"""The reversible training path against the plain step-by-step reference (float64).

Compares outputs, gradients of every parameter and of the input, the final state, the
carry and which entries were written, over a table of awkward cases.
"""
from __future__ import annotations

import pytest
import torch

from onebigstate import OBSConfig, OBSLayer
from tests.helpers import rel_err

BASE = dict(d_model=12, n_nodes=24, d_key=8, d_value=6, d_hidden=8, d_write=8, k_min=2, k_max=4,
            m_active=5, init_std=0.1)

CASES = {
    "T1": dict(T=1),
    "odd_T": dict(T=13),
    "continuous_mixed": dict(T=17, continuous="mixed"),
    "k_fixed": dict(T=9, cfg=dict(k_min=3, k_max=3)),
    "no_spread": dict(T=11, cfg=dict(spread_from_active=False)),
    "gaussian_reg_and_k_cost": dict(T=10, cfg=dict(gaussian_reg=dict(weight=0.5, n_samples=37), k_cost=0.3)),
    "m_equals_n": dict(T=6, cfg=dict(n_nodes=8, k_max=4, m_active=8)),
    "carried_state": dict(T=8, carried=True),
    "reverse_assoc": dict(T=12, continuous="mixed", carried=True, cfg=dict(reverse_assoc=True)),
    "row_norm": dict(T=14, continuous="mixed", carried=True, cfg=dict(row_norm=True)),
    "circuit_direct": dict(T=12, continuous="mixed", carried=True, cfg=dict(row_norm=True, circuit_direct=2.0)),
}


def run(backend: str, case: dict, seed: int = 0):
    cfg = OBSConfig(**{**BASE, **case.get("cfg", {}), "backend": backend})
    torch.manual_seed(seed)
    layer = OBSLayer(cfg).double().train()
    B, T = 3, case["T"]
    x = torch.randn(B, T, cfg.d_model, dtype=torch.float64, requires_grad=True)
    cont = None
    if case.get("continuous") == "mixed":
        cont = torch.rand(B, T, generator=torch.Generator().manual_seed(1)) > 0.5
    state = None
    if case.get("carried"):
        with torch.no_grad():
            _, state = layer(torch.randn(B, 5, cfg.d_model, dtype=torch.float64))
    y, state = layer(x, state, continuous=cont)
    gy = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    loss = (y * gy).sum() + layer.last_stats.aux_loss + (layer.last_stats.k_soft ** 2).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    return y.detach(), x.grad.clone(), grads, state, layer.last_stats


@pytest.mark.parametrize("name", list(CASES))
def test_reversible_matches_reference_values_and_gradients(name):
    case = CASES[name]
    y_r, dx_r, g_r, s_r, st_r = run("reference", case)
    y_f, dx_f, g_f, s_f, st_f = run("reversible", case)
    assert torch.equal(st_r.k_hard, st_f.k_hard)
    assert torch.equal(st_r.active_idx, st_f.active_idx)
    assert rel_err(y_f, y_r) < 1e-12
    assert rel_err(dx_f, dx_r) < 1e-10
    # a parameter unused in a case (beta without spreading) has no gradient or a zero one
    for n in g_r.keys() | g_f.keys():
        a = g_f.get(n, torch.zeros(()))
        b = g_r.get(n, torch.zeros(()))
        assert rel_err(a, b) < 1e-10 if b.abs().max() > 0 else a.abs().max() == 0, n
    # final state, written entries and carry agree too
    assert rel_err(s_f.S, s_r.S) < 1e-12
    assert torch.equal(s_f.touched, s_r.touched)
    assert torch.equal(s_f.carry.active_idx, s_r.carry.active_idx)
    assert rel_err(s_f.carry.active_w, s_r.carry.active_w) < 1e-12


def test_every_parameter_gets_a_gradient():
    _, _, grads, _, _ = run("reversible", dict(T=12, continuous="mixed", cfg=dict(
        gaussian_reg=dict(weight=0.1, n_samples=20), k_cost=0.1)))
    layer = OBSLayer(OBSConfig(**BASE))
    names = {n for n, _ in layer.named_parameters()}
    assert names == set(grads), names - set(grads)
    for n, g in grads.items():
        assert g.abs().sum() > 0, f"zero gradient for {n}"


def test_reversible_backward_twice_is_a_clear_error():
    layer = OBSLayer(OBSConfig(**BASE)).double()
    y, _ = layer(torch.randn(2, 4, BASE["d_model"], dtype=torch.float64))
    y.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="cannot be differentiated twice"):
        y.sum().backward()


NO_GRAD_CASES = {"odd_T": CASES["odd_T"], "reg": CASES["gaussian_reg_and_k_cost"],
                 "row_norm_mixed": dict(T=14, continuous="mixed", cfg=dict(row_norm=True))}


@pytest.mark.parametrize("name", list(NO_GRAD_CASES))
def test_reversible_without_gradients_gives_the_same_outputs_and_state(name, monkeypatch):
    """Evaluation (no_grad) skips the backward's logs and state copy; nothing else may change."""
    from onebigstate.model.state import DenseState
    copies = []
    snapshot = DenseState.snapshot
    monkeypatch.setattr(DenseState, "snapshot", lambda self: copies.append(1) or snapshot(self))
    case = NO_GRAD_CASES[name]
    y_ref, _, _, s_ref, st_ref = run("reference", case)
    cfg = OBSConfig(**{**BASE, **case.get("cfg", {}), "backend": "reversible"})
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
    assert torch.equal(layer.last_stats.active_idx, st_ref.active_idx)
    assert rel_err(y, y_ref) < 1e-12 and rel_err(state.S, s_ref.S) < 1e-12
    assert torch.equal(state.touched, s_ref.touched)
