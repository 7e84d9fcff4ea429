"""The layer's API contract: a state handed in is not changed unless asked, bad input and foreign
states get errors that name the problem, non-finite input never reaches the big state, and the
soft bound keeps |S| bounded along a long stream."""
from __future__ import annotations

import pytest
import torch

from onebigstate import OBSConfig, OBSLayer

SMALL = dict(d_model=16, n_nodes=32, d_key=8, d_value=8, d_hidden=8, d_write=8, k_min=2, k_max=4, m_active=6)


def layer(**cfg) -> OBSLayer:
    torch.manual_seed(0)
    return OBSLayer(OBSConfig(**{**SMALL, **cfg}))


def started(m: OBSLayer, B: int = 2):
    with torch.no_grad():
        return m(torch.randn(B, 7, 16))[1]


def test_calling_twice_from_one_state_gives_the_same_outputs_and_leaves_it_unchanged():
    m = layer()
    state = started(m)
    S0, carry0 = state.S.clone(), state.carry.active_w.clone()
    x = torch.randn(2, 5, 16)
    y1, s1 = m(x, state)
    y2, s2 = m(x, state)
    assert torch.equal(y1, y2)
    assert s1 is not state and s2 is not state
    assert torch.equal(state.S, S0) and torch.equal(state.carry.active_w, carry0)
    assert torch.equal(s1.S, s2.S) and not torch.equal(s1.S, S0)
    q = torch.randn(2, 16)
    assert torch.equal(m.step(q, state)[0], m.step(q, state)[0])


def test_in_place_advances_the_state_handed_in_with_the_same_values():
    m = layer()
    state = started(m)
    x = torch.randn(2, 5, 16)
    y_copy, s_copy = m(x, state)
    y_in, s_in = m(x, state, in_place=True)
    assert s_in is state
    assert torch.equal(y_in, y_copy) and torch.equal(s_in.S, s_copy.S)


@pytest.mark.parametrize("make_input, match", [
    (lambda m: (torch.randn(0, 5, 16), None), "batch of 0"),
    (lambda m: (torch.randn(2, 5, 16), torch.zeros(2, 32, 32)), "must be a StateStore"),
    (lambda m: (torch.randn(2, 5, 16), layer(m_active=4)(torch.randn(2, 3, 16))[1]), "m_active=4"),
    (lambda m: (torch.randn(2, 5, 16), layer(k_max=3)(torch.randn(2, 3, 16))[1]), "k_max=3"),
    (lambda m: (torch.randn(2, 5, 16), layer(state_backend="sparse")(torch.randn(2, 3, 16))[1]), "sparse-store"),
    (lambda m: (torch.randn(3, 5, 16), started(m)), "2 streams"),
])
def test_bad_input_and_foreign_states_get_errors_that_name_the_problem(make_input, match):
    m = layer()
    x, state = make_input(m)
    with pytest.raises((ValueError, TypeError), match=match):
        m(x, state)


@pytest.mark.parametrize("continuous, match", [(5.0, "bool or a \\[B, T\\] tensor"),
                                               (torch.full((2, 5), 5.0), "in \\[0, 1\\]")])
def test_continuous_flags_outside_zero_one_are_refused(continuous, match):
    with pytest.raises((ValueError, TypeError), match=match):
        layer()(torch.randn(2, 5, 16), continuous=continuous)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_refused_naming_the_stream_and_the_state_keeps_no_trace(bad):
    m = layer()
    state = started(m, B=3)
    S0 = state.S.clone()
    x = torch.randn(3, 6, 16)
    x[1, 4, 3] = bad
    with pytest.raises(ValueError, match=r"1 stream\(s\) \(stream: first step \{1: 4\}\)"):
        m(x, state, in_place=True)
    assert torch.equal(state.S, S0)
    assert torch.isfinite(state.S).all()


@pytest.mark.parametrize("backend", ["reversible", "cpu"])
@pytest.mark.parametrize("c", [2.0, 0.05])
def test_the_soft_bound_keeps_every_entry_within_c_where_plain_writes_grow(backend, c):
    sizes = {}
    for bound in (0.0, c):
        m = layer(state_bound=bound, backend=backend, n_nodes=16, m_active=4).eval()
        state = None
        with torch.no_grad():
            for _ in range(20):
                _, state = m(torch.randn(2, 50, 16), state, in_place=True)
        sizes[bound] = float(state.S.abs().max())
        assert torch.isfinite(state.S).all()
    # plain writes pile up on the hubs; with the bound no write
    # carries an entry past c, also where single writes are far larger than c (c = 0.05)
    assert sizes[0.0] > 5
    assert sizes[c] <= c * (1 + 1e-5)


def test_a_stream_read_in_place_window_after_window_keeps_no_growing_log():
    # every window's written-entry marks were kept until someone read the map: 24 GB after 10^6
    # tokens of 8 streams at N = 1024 (benchmarks/bounded_state.py was killed by the OOM killer)
    m = layer().eval()
    state = None
    with torch.no_grad():
        for _ in range(40):
            _, state = m(torch.randn(2, 30, 16), state, in_place=True)
    pending = sum(p.numel() for p, _ in state._marks)
    assert pending * 9 <= 2 * 32 * 32
