"""S4D and the dense SSM: the FFT path against the loop, carried state, freezing, the registry."""
from __future__ import annotations

import pytest
import torch

from onebigstate.baselines.s4_dense import DenseSSM
from onebigstate.baselines.s4d import INITS, S4D, S4DConfig
from onebigstate.config import ConfigError
from onebigstate.nets.mixer import build_mixer

from helpers import rel_err

CASES = [(init, disc) for init in INITS for disc in ("zoh", "bilinear")]


def _layer(init: str, disc: str, H: int = 3, N: int = 8) -> S4D:
    torch.manual_seed(0)
    return S4D(H, S4DConfig(d_state=N, init=init, discretization=disc, init_seed=1)).double()


@pytest.mark.parametrize("init,disc", CASES, ids=[f"{i}-{d}" for i, d in CASES])
def test_conv_matches_recurrent_values_and_gradients(init, disc):
    m = _layer(init, disc)
    gen = torch.Generator().manual_seed(2)
    u = torch.randn(2, 17, 3, dtype=torch.float64, generator=gen)   # odd length
    x0 = torch.randn(2, 3, 4, dtype=torch.complex128, generator=gen)
    dy = torch.randn(2, 17, 3, dtype=torch.float64, generator=gen)
    dx = torch.randn(2, 3, 4, dtype=torch.complex128, generator=gen)
    outs = {}
    for mode in ("conv", "recurrent"):
        m.zero_grad()
        uu, xx = u.clone().requires_grad_(), x0.clone().requires_grad_()
        y, xl = m.ssm(uu, xx, mode=mode)
        y_d, xl_d = y.detach(), xl.detach()
        ((y * dy).sum() + (xl * dx.conj()).real.sum()).backward()
        outs[mode] = (y_d, xl_d, uu.grad, xx.grad, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    (yc, xc, guc, gxc, gpc), (yr, xr, gur, gxr, gpr) = outs["conv"], outs["recurrent"]
    assert rel_err(yc, yr) < 1e-10
    assert rel_err(xc, xr) < 1e-10
    assert rel_err(guc, gur) < 1e-10
    assert rel_err(gxc, gxr) < 1e-10
    assert set(gpc) == set(gpr) and {"log_dt", "log_A_re", "A_im", "B_ri", "C_ri", "D"} <= set(gpc)
    for name in gpc:
        assert rel_err(gpc[name], gpr[name]) < 1e-8, name


@pytest.mark.parametrize("mode", ["conv", "recurrent"])
@torch.no_grad()
def test_carried_state_equals_one_pass(mode):
    m = _layer("s4d_inv", "zoh")
    u = torch.randn(2, 13, 3, dtype=torch.float64)
    y_all, s_all = m(u)
    m.cfg.mode = mode
    y1, s1 = m(u[:, :5])
    y2, s2 = m(u[:, 5:], s1)
    assert rel_err(torch.cat([y1, y2], 1), y_all) < 1e-10
    assert rel_err(s2, s_all) < 1e-10


@torch.no_grad()
def test_step_equals_forward():
    m = _layer("two_level", "bilinear")
    u = torch.randn(2, 6, 3, dtype=torch.float64)
    y_all, _ = m(u)
    state, ys = None, []
    for t in range(6):
        y, state = m.step(u[:, t], state)
        ys.append(y)
    assert rel_err(torch.stack(ys, 1), y_all) < 1e-10


def test_discrete_inits_have_the_named_spectrum():
    for disc in ("zoh", "bilinear"):
        m = S4D(2, S4DConfig(d_state=8, init="two_level", discretization=disc, r_min=0.6, r_max=0.95, init_seed=0))
        lam = m.discrete()[0].abs().detach()
        assert torch.allclose(lam.sort(-1).values, torch.tensor([0.6, 0.6, 0.95, 0.95]).expand(2, 4), atol=1e-5)
        m = S4D(2, S4DConfig(d_state=8, init="linear_mag", discretization=disc, r_min=0.5, r_max=0.8, init_seed=0))
        assert torch.allclose(m.discrete()[0].abs().detach(), torch.linspace(0.5, 0.8, 4).expand(2, 4), atol=1e-5)


def test_frozen_recurrent_weights_do_not_change():
    torch.manual_seed(0)
    m = S4D(4, S4DConfig(d_state=8, init="s4d_lin", freeze_recurrent=True))
    rec = {n: p.detach().clone() for n, p in m.named_parameters() if n in ("log_dt", "log_A_re", "A_im")}
    rest = {n: p.detach().clone() for n, p in m.named_parameters() if n not in rec}
    assert all(not getattr(m, n).requires_grad for n in rec)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randn(3, 20, 4)
    for _ in range(5):
        opt.zero_grad()
        y, _ = m(x)
        ((y - x.roll(3, 1)) ** 2).mean().backward()
        opt.step()
    for n, p in m.named_parameters():
        if n in rec:
            assert torch.equal(p, rec[n]), n
        else:
            assert not torch.equal(p, rest[n]), f"{n} should train"
    # Learned: the same loop moves the eigenvalues.
    m2 = S4D(4, S4DConfig(d_state=8, init="s4d_lin"))
    before = m2.A_im.detach().clone()
    opt = torch.optim.Adam(m2.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        y, _ = m2(x)
        (y ** 2).mean().backward()
        opt.step()
    assert not torch.equal(m2.A_im, before)


@torch.no_grad()
def test_dense_ssm_has_the_same_outputs_and_spectrum():
    m = _layer("s4d_inv", "zoh", H=2, N=8)
    d = DenseSSM.from_s4d(m, p_seed=3, p_cond=10.0).double()
    u = torch.randn(2, 11, 2, dtype=torch.float64)
    y_diag, _ = m.ssm(u)
    y_dense, _ = d.ssm(u)
    assert rel_err(y_dense, y_diag) < 1e-6
    lam = m.discrete()[0].detach()
    ev = torch.linalg.eigvals(d.A.detach()[0].double())
    want = torch.cat([lam[0], lam[0].conj()]).cdouble()
    dist = (ev[:, None] - want[None, :]).abs().min(1).values
    assert dist.max() < 1e-5


def test_registry_and_state_size():
    m = build_mixer("s4d", 8, {"d_state": 16, "init": "random", "freeze_recurrent": True})
    y, state = m(torch.randn(2, 9, 8))
    assert y.shape == (2, 9, 8) and state.shape == (2, 8, 8)
    assert m.state_size(9) == {"floats": 8 * 16}
    with pytest.raises(ConfigError, match="d_stat"):
        build_mixer("s4d", 8, {"d_stat": 16})
    with pytest.raises(ConfigError, match="even"):
        build_mixer("s4d", 8, {"d_state": 15})
    with pytest.raises(ValueError, match=r"\[B, T, d_model=8\]"):
        m(torch.randn(2, 9, 7))
