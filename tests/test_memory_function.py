"""The memory function: closed forms against simulation and known cases, MC <= N, adapters."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from onebigstate.analysis.memory_function import (closed_form_dense, closed_form_diagonal, memory_function,
                                                  mf_from_states, plot_memory_functions)
from onebigstate.baselines.s4_dense import DenseSSM
from onebigstate.baselines.s4d import INITS, S4D, S4DConfig

SIM = dict(n_fit=4000, n_test=2000)


def test_scalar_ssm_has_the_textbook_memory_function():
    # x_t = a x_{t-1} + u_t: MF(tau) = (1 - a^2) a^(2 tau), MC = 1.
    a, taus = 0.8, np.arange(31)
    want = (1 - a ** 2) * a ** (2 * taus)
    diag = closed_form_diagonal(np.array([a]), np.array([1.0]), 30)
    dense = closed_form_dense(np.array([[a]]), np.array([1.0]), 30)
    np.testing.assert_allclose(diag.mf, want, atol=1e-12)
    np.testing.assert_allclose(dense.mf, want, atol=1e-12)
    assert diag.rank == 1


@pytest.mark.parametrize("init", ["linear_mag", "s4d_inv"])
def test_closed_form_agrees_with_simulation(init):
    m = S4D(1, S4DConfig(d_state=8, init=init, r_min=0.5, r_max=0.9, dt_min=0.1, dt_max=0.1, init_seed=0))
    cf = memory_function(m, tau_max=40, method="closed_form")
    # Held-out R^2 of slowly decaying tails fluctuates by about 1/sqrt(n_test) per tau.
    sim = memory_function(m, tau_max=40, method="simulation", washout=500, seed=0, n_fit=20000, n_test=20000)
    assert cf.method == "closed_form" and sim.method == "simulation"
    assert np.abs(cf.mf - sim.mf).max() < 0.03
    assert abs(cf.mc - sim.mc) < 0.4


@pytest.mark.parametrize("init", INITS)
def test_memory_capacity_at_most_state_size(init):
    m = S4D(2, S4DConfig(d_state=8, init=init, init_seed=3))
    r = memory_function(m, tau_max=2000, channel=0)
    assert r.state_dim == 8
    assert 0 <= r.mc <= 8 + 1e-9
    assert np.all((r.mf >= 0) & (r.mf <= 1))
    assert r.cond >= 1 and r.rank <= 8


def test_memory_capacity_at_most_state_size_simulated_lstm():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 3, batch_first=True)
    r = memory_function(lstm, tau_max=30, washout=100, **SIM)
    assert r.state_dim == 6 and r.mc <= 6


def test_lstm_adapter_matches_stepping_the_lstm():
    from onebigstate.analysis.memory_function import LSTMAdapter
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 3, num_layers=2, batch_first=True)
    adapter = LSTMAdapter(lstm)
    u = np.random.default_rng(0).uniform(-1, 1, 40)
    xs = torch.as_tensor(u, dtype=torch.float32)[:, None] * adapter.w
    state, ref = None, []
    with torch.no_grad():
        for t in range(len(u)):
            _, state = lstm(xs[t].reshape(1, 1, -1), state)
            ref.append(torch.cat([state[0].reshape(-1), state[1].reshape(-1)]).double().numpy())
    np.testing.assert_allclose(adapter.run(u), np.array(ref), atol=1e-6)


def test_dense_and_diagonal_give_the_same_memory_function():
    m = S4D(1, S4DConfig(d_state=8, init="s4d_inv", dt_min=0.05, dt_max=0.05, init_seed=0)).double()
    d = DenseSSM.from_s4d(m, p_seed=1, p_cond=10.0)
    cf_diag = memory_function(m, tau_max=100)
    cf_dense = memory_function(d, tau_max=100)
    np.testing.assert_allclose(cf_dense.mf, cf_diag.mf, atol=1e-6)
    sim_diag = memory_function(m, tau_max=100, method="simulation", washout=500, **SIM)
    sim_dense = memory_function(d, tau_max=100, method="simulation", washout=500, **SIM)
    np.testing.assert_allclose(sim_dense.mf, sim_diag.mf, atol=2e-3)


def test_nonlinear_adapters_give_bounded_memory(tmp_path):
    from mambapy.mamba import Mamba, MambaConfig

    from onebigstate.model.config import OBSConfig
    from onebigstate.model.layer import OBSLayer
    from onebigstate.nets.mixer import build_mixer
    torch.manual_seed(0)
    models = {
        "mamba": Mamba(MambaConfig(d_model=4, n_layers=1, d_state=2, expand_factor=2)),
        "deltanet": build_mixer("deltanet", 8, {"impl": "recurrent", "n_heads": 2}),
        "obs": OBSLayer(OBSConfig(d_model=8, n_nodes=16, d_key=8, d_value=8, d_hidden=8, d_write=8,
                                  k_min=2, k_max=3, m_active=4)),
    }
    results = []
    for name, model in models.items():
        r = memory_function(model, tau_max=10, washout=20, n_fit=400, n_test=200, label=name)
        assert r.method == "simulation"
        assert np.all((r.mf >= 0) & (r.mf <= 1)) and r.mc <= r.state_dim
        results.append(r)
    assert [r.state_dim for r in results] == [16, 32, 16]
    plot_memory_functions(results, tmp_path / "mf.png", title="test")
    assert (tmp_path / "mf.png").stat().st_size > 0


def test_simulation_checks_its_windows():
    u = np.zeros(100)
    with pytest.raises(ValueError, match="washout"):
        mf_from_states(np.zeros((100, 2)), u, tau_max=10, washout=5, n_fit=50)
    with pytest.raises(ValueError, match="held-out"):
        mf_from_states(np.zeros((100, 2)), u, tau_max=10, washout=10, n_fit=95)
    with pytest.raises(ValueError, match="not a linear SSM"):
        memory_function(torch.nn.LSTM(2, 2), tau_max=3, method="closed_form")


def test_docstring_example_runs():
    from onebigstate.analysis import memory_function as mod
    lines = [ln.strip() for ln in mod.__doc__.splitlines() if ln.startswith("    res")]
    assert len(lines) == 3
    scope = {"S4D": S4D, "S4DConfig": S4DConfig, "torch": torch, "memory_function": memory_function}
    exec(lines[0], scope)
    assert scope["res"].method == "closed_form" and scope["res"].mc <= 32 + 1e-6
    exec("\n".join(lines[1:]), scope)
    assert scope["res"].method == "simulation" and scope["res"].mc <= 64


def test_cli_memory_writes_plot_and_json(tmp_path, capsys):
    import argparse
    import json

    from onebigstate.cli import memory as cli
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["memory", "two_level", "lstm", "--n-state", "8", "--tau-max", "12",
                              "--n-fit", "300", "--n-test", "300", "--out", str(tmp_path)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "two_level" in printed and "lstm" in printed and "MC =" in printed
    data = json.loads((tmp_path / "memory.json").read_text())
    assert [m["model"] for m in data["models"]] == ["two_level", "lstm"]
    assert all(m["mc"] <= m["read_out_dim"] + 1e-6 for m in data["models"])
    assert (tmp_path / "memory.png").exists()


def test_multichannel_layers_share_the_input_projection():
    # Three channels driven through the same fixed projection: dense and diagonal still agree,
    # and the read-out sees all 3 x 8 state dimensions.
    m = S4D(3, S4DConfig(d_state=8, init="s4d_inv", init_seed=0))
    d = DenseSSM.from_s4d(m)
    a, b = memory_function(m, tau_max=50), memory_function(d, tau_max=50)
    assert a.state_dim == b.state_dim == 24
    np.testing.assert_allclose(a.mf, b.mf, atol=1e-5)
    assert a.mc <= 24
