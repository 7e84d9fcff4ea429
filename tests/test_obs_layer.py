"""Model-level invariants and input checks of the OBS layer."""
from __future__ import annotations

import pytest
import torch

from onebigstate import OBSConfig, OBSLayer, OBSLM
from onebigstate.config import ConfigError, build_config
from onebigstate.nets import ModelConfig, build_model

CFG = dict(d_model=16, n_nodes=40, d_key=8, d_value=8, d_hidden=8, d_write=8, k_min=2, k_max=5, m_active=6,
           init_std=0.05)


def make(**kw) -> OBSLayer:
    torch.manual_seed(0)
    return OBSLayer(OBSConfig(**{**CFG, **kw})).double().eval()


def test_step_equals_forward():
    layer = make()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    y_seq, s_seq = layer(x)
    state, ys = None, []
    for t in range(9):
        y_t, state = layer.step(x[:, t], state)
        ys.append(y_t)
    assert torch.allclose(torch.stack(ys, 1), y_seq, atol=1e-12)
    assert torch.allclose(state.S, s_seq.S, atol=1e-12)


@pytest.mark.parametrize("split", [1, 4, 8])
def test_chunks_with_carried_state_equal_one_pass(split):
    layer = make()
    x = torch.randn(3, 11, 16, dtype=torch.float64)
    y_all, s_all = layer(x)
    y1, s = layer(x[:, :split])
    y2, s = layer(x[:, split:], s)
    assert torch.allclose(torch.cat([y1, y2], 1), y_all, atol=1e-12)
    assert torch.equal(s.touched, s_all.touched)


def test_detaching_the_state_changes_no_values():
    layer = make()
    x = torch.randn(2, 6, 16, dtype=torch.float64, requires_grad=True)
    _, s = layer(x[:, :3])
    s_copy = s.clone()
    s_copy.S = s_copy.S.detach()
    y_a, _ = layer(x[:, 3:], s)
    y_b, _ = layer(x[:, 3:], s_copy)
    assert torch.equal(y_a, y_b)


def test_episodic_forward_starts_from_the_seeded_initial_state():
    layer = make()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    y1, _ = layer(x)
    y2, _ = layer(x)
    assert torch.equal(y1, y2)
    fresh = layer.init_state(2)
    assert torch.equal(fresh.S[0], fresh.S[1])
    assert float(fresh.S.std()) == pytest.approx(0.05, rel=0.2)


def test_writes_touch_only_a_few_entries_per_step():
    layer = make()
    T = 7
    _, s = layer(torch.randn(1, T, 16, dtype=torch.float64))
    cfg = layer.cfg
    per_step = 2 * cfg.k_max ** 2 + cfg.m_active * cfg.k_max
    assert 0 < int(s.entries_written()[0]) <= T * per_step
    assert int(s.entries_written()[0]) < cfg.n_nodes ** 2


def test_k_varies_within_bounds():
    layer = make(k_min=1, k_max=5)
    with torch.no_grad():
        layer.write.w_out[0].normal_(0, 3.0)
    layer(torch.randn(4, 20, 16, dtype=torch.float64))
    k = layer.last_stats.k_hard
    assert int(k.min()) >= 1 and int(k.max()) <= 5
    assert len(torch.unique(k)) > 1


@pytest.mark.parametrize("bad, match", [
    (torch.randn(2, 5, 15), r"\[B, T, d_model=16\]"),
    (torch.randn(5, 16), r"\[B, T, d_model=16\]"),
    (torch.randint(0, 3, (2, 5, 16)), "floating-point"),
    (torch.randn(2, 0, 16), "at least one step"),
])
def test_bad_input_shape_or_dtype_is_a_clear_error(bad, match):
    layer = OBSLayer(OBSConfig(**CFG))
    with pytest.raises(ValueError, match=match):
        layer(bad)


def test_state_from_another_batch_is_rejected():
    layer = OBSLayer(OBSConfig(**CFG))
    _, s = layer(torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="2 streams"):
        layer(torch.randn(3, 3, 16), s)


def test_k_min_above_k_max_is_a_config_error():
    with pytest.raises(ConfigError, match=r"k_min \(9\) must be <= k_max \(4\)"):
        build_config(OBSConfig, {}, ["k_min=9", "k_max=4"])


def test_unknown_or_ill_typed_config_key_is_named():
    with pytest.raises(ConfigError, match="unknown config key 'n_node'"):
        build_config(OBSConfig, {}, ["n_node=3"])
    with pytest.raises(ConfigError, match="n_nodes"):
        build_config(OBSConfig, {}, ["n_nodes=many"])


def test_lm_rejects_bad_tokens():
    lm = OBSLM(vocab_size=10, n_layers=1, obs=OBSConfig(**CFG))
    with pytest.raises(ValueError, match="int64"):
        lm(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        lm(torch.full((2, 3), 10))


def test_lm_stack_and_state_size():
    lm = OBSLM(vocab_size=10, n_layers=2, obs=OBSConfig(**CFG))
    logits, states = lm(torch.randint(0, 10, (2, 7)))
    assert logits.shape == (2, 7, 10) and len(states) == 2
    size = lm.state_size(7)
    assert size["dense_floats"] == 2 * 40 * 40
    model = build_model(ModelConfig(name="obs", d_model=16, mixer={k: v for k, v in CFG.items() if k != "d_model"}),
                        n_out=10, vocab_size=10)
    assert model.state_size(7)["dense_floats"] == 40 * 40


@pytest.mark.parametrize("reverse", [False, True])
def test_reverse_association_lets_a_later_cue_recall_what_preceded_it(reverse):
    """Object A then word B: with reverse_assoc, B alone later lights up A's circuit."""
    torch.manual_seed(3)
    layer = OBSLayer(OBSConfig(**{**CFG, "init_std": 0.0, "k_min": 3, "k_max": 3, "m_active": 10,
                                  "reverse_assoc": reverse, "spread_from_active": False})).double().eval()
    # three inputs whose circuits do not overlap (picked from seeded candidates)
    cand = torch.randn(40, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        nodes = [set(i.tolist()) for i in layer.addresser(cand.unsqueeze(0))[0][0, :, :3]]
    a, b, c = next((i, j, k) for i in range(40) for j in range(40) for k in range(40)
                   if not (nodes[i] & nodes[j] or nodes[i] & nodes[k] or nodes[j] & nodes[k]))
    x = cand[[a, b, c, b]].unsqueeze(0)                           # [1, 4, 16]: A, B, C, B again
    layer(x)
    st = layer.last_stats
    circuit = [set(st.circuit_idx[0, t, :3].tolist()) for t in range(4)]
    recalled = set(st.active_idx[0, 3][st.active_w[0, 3] > 0].tolist())
    assert bool(circuit[0] <= recalled) == reverse


def test_load_balance_loss_is_one_when_even_and_larger_when_circuits_share_nodes():
    from onebigstate.model.addressing import load_balance_loss
    N, k = 8, 2
    even = torch.full((N,), 1.0 / N)                                    # uniform address probabilities
    disjoint = torch.tensor([[[0, 1], [2, 3], [4, 5], [6, 7]]])
    assert load_balance_loss(even, disjoint, k).item() == pytest.approx(1.0)
    # every circuit on nodes 0 and 1, and the address probability there too: N / k = 4
    piled = torch.softmax(torch.tensor([0.0, 0.0] + [-30.0] * (N - 2)), 0)
    shared = torch.tensor([[[0, 1]] * 4])
    assert load_balance_loss(piled, shared, k).item() == pytest.approx(N / k, rel=1e-6)


@pytest.mark.parametrize("mean_prob,keep", [(False, True), (True, True), (True, False)])
def test_addresser_equals_scoring_every_node_with_autograd(mean_prob, keep, monkeypatch):
    """The blocked top-k and mean address probability, values and gradients, against the plain
    formulas on the whole [B, T, N] score tensor (float64, blocks of 3 rows; the probabilities
    kept for the backward or recomputed there)."""
    from onebigstate.model import addressing
    monkeypatch.setattr(addressing._Address, "BLOCK_FLOATS", 3 * 40)
    monkeypatch.setattr(addressing._Address, "KEEP_FLOATS", 1 << 20 if keep else 0)
    torch.manual_seed(0)
    add = addressing.Addresser(6, 40, 5, 4).double()
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    g_vals = torch.randn(2, 7, 4, dtype=torch.float64)
    g_prob = torch.randn(40, dtype=torch.float64)
    out = add(x, mean_prob=mean_prob)
    loss = (out[1] * g_vals).sum() + ((out[2] * g_prob).sum() if mean_prob else 0)
    loss.backward()
    fast = [p.grad.clone() for p in add.parameters()]
    add.zero_grad()
    scores = (add.query(x) * add.scale) @ add.keys.T
    top = torch.topk(scores, 4, dim=-1)
    loss = (top.values * g_vals).sum()
    if mean_prob:
        prob = torch.softmax(scores, -1).reshape(-1, 40).mean(0)
        loss = loss + (prob * g_prob).sum()
        assert torch.allclose(out[2], prob, rtol=0, atol=1e-15)
    loss.backward()
    assert torch.equal(out[0], top.indices)
    assert torch.allclose(out[1], top.values, rtol=0, atol=1e-14)
    for a, b in zip(fast, (p.grad for p in add.parameters())):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_address_bias_chooses_the_circuit_but_the_scores_stay_unbiased():
    """With a selection bias b the circuit is top-k of s + b, the values handed on are s at those
    nodes, and the gradients are those of s gathered there (float64, against the plain formula)."""
    from onebigstate.model import addressing
    torch.manual_seed(0)
    add = addressing.Addresser(6, 40, 5, 4, balance_rate=0.1).double()
    add.bias.copy_(torch.randn(40, dtype=torch.float64))
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    g_vals = torch.randn(2, 7, 4, dtype=torch.float64)
    idx, vals = add(x)
    (vals * g_vals).sum().backward()
    fast = [p.grad.clone() for p in add.parameters()]
    add.zero_grad()
    scores = (add.query(x) * add.scale) @ add.keys.T
    chosen = torch.topk(scores + add.bias, 4, dim=-1).indices
    (scores.gather(-1, chosen) * g_vals).sum().backward()
    assert torch.equal(idx, chosen)
    assert not torch.equal(idx, torch.topk(scores, 4, dim=-1).indices)     # the bias changed the choice
    assert torch.allclose(vals, scores.gather(-1, chosen), rtol=0, atol=1e-14)
    for a, b in zip(fast, (p.grad for p in add.parameters())):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_address_balance_spreads_a_repeated_input_over_the_nodes_in_training_only():
    """One input repeated on every step addresses the same k nodes; with ``address_balance`` the
    training forwards push those nodes' bias down until other nodes take turns. Evaluation
    forwards leave the bias alone, and the bias is saved with the layer."""
    torch.manual_seed(0)
    cfg = OBSConfig(d_model=8, n_nodes=32, k_min=2, k_max=4, m_active=4, address_balance=0.05)
    layer = OBSLayer(cfg)
    x = torch.randn(1, 1, 8).expand(4, 16, 8).contiguous()
    first = set(layer.addresser(x)[0][..., :2].flatten().tolist())
    assert len(first) == 2                                              # no bias: always the same 2 nodes
    used = set()
    with torch.no_grad():
        for _ in range(60):
            layer(x)
            used |= set(layer.last_stats.circuit_idx[..., :2].flatten().tolist())
    assert len(used) > 8
    assert (layer.addresser.bias[sorted(first)] < 0).all() and abs(float(layer.addresser.bias.mean())) < 1e-5
    bias = layer.addresser.bias.clone()
    layer.eval()
    layer(x)
    assert torch.equal(layer.addresser.bias, bias)
    restored = OBSLayer(cfg)
    restored.load_state_dict(layer.state_dict())
    assert torch.equal(restored.addresser.bias, bias)
    assert "addresser.bias" not in OBSLayer(OBSConfig(d_model=8, n_nodes=32, k_min=2, k_max=4,
                                                      m_active=4)).state_dict()


def test_balance_cost_adds_to_aux_loss_and_reaches_the_address_keys():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 16)
    layer = OBSLayer(OBSConfig(d_model=16, n_nodes=32, k_min=2, k_max=4, m_active=4, balance_cost=0.5))
    layer(x)
    aux = layer.last_stats.aux_loss
    assert aux.item() >= 0.5 - 1e-6                                     # the loss is >= 1 before its weight
    aux.backward()
    assert layer.addresser.keys.grad is not None and layer.addresser.keys.grad.abs().sum() > 0
    layer.eval()                                                        # not a training forward: no cost
    layer(x)
    assert layer.last_stats.aux_loss.item() == 0.0


def test_write_cost_is_the_weighted_mean_gate_and_training_on_it_turns_the_writes_down():
    from onebigstate.model.regularizer import write_mass
    torch.manual_seed(0)
    x = torch.randn(2, 7, 16)
    cfg = dict(d_model=16, n_nodes=32, k_min=2, k_max=4, m_active=4, balance_cost=0.0, reverse_assoc=True)
    layer = OBSLayer(OBSConfig(**cfg, write_cost=0.5))
    layer(x)
    gates = layer.last_stats.gates                                      # [B, T, 4], all 0.5 at init
    K, M = 4, 4
    weighted = (gates.abs() * torch.tensor([K * K, M * K, K * K, K * M]) / (2 * K * K + 2 * M * K)).sum(-1).mean()
    assert torch.allclose(layer.last_stats.aux_loss, 0.5 * weighted)
    assert torch.allclose(write_mass(torch.ones(1, 1, 4), layer.step_cfg), torch.tensor(1.0))
    opt = torch.optim.SGD(layer.write.parameters(), lr=0.5)
    before = write_mass(gates, layer.step_cfg).item()
    for _ in range(20):                                                 # the cost alone: gates go to 0
        opt.zero_grad()
        layer(x)
        layer.last_stats.aux_loss.backward()
        opt.step()
    layer(x)
    assert write_mass(layer.last_stats.gates, layer.step_cfg).item() < 0.5 * before
    plain = OBSLayer(OBSConfig(**cfg))                                  # off by default
    plain(x)
    assert plain.last_stats.aux_loss.item() == 0.0


def test_row_norm_keeps_a_heavily_written_row_from_drowning_a_fresh_one():
    from onebigstate.kernels.step import row_scale, spread
    worn = torch.tensor([1.0, 0.0, 0.0, 0.0]) * 1e4          # a node on 10,000 circuits
    fresh = torch.tensor([0.0, 1.0, 0.0, 0.0])               # a cue written once
    rows = torch.stack([worn, fresh]).unsqueeze(0)           # [1, R=2, N=4]
    coeff = torch.tensor([[0.5, 0.5]])
    plain = spread(coeff, rows)[0]
    normed = spread(coeff * row_scale(rows), rows)[0]
    assert plain[0] / plain[1] == pytest.approx(1e4)
    assert normed[0] / normed[1] < 2.0 + 1e-3                # at most the 1 + ||row|| floor apart
    assert not row_scale(rows.requires_grad_(True)).requires_grad


def test_row_norm_config_reaches_the_recurrence_and_changes_the_read():
    cfg = dict(d_model=16, n_nodes=32, k_min=2, k_max=4, m_active=4, init_std=0.5)
    torch.manual_seed(0)
    plain = OBSLayer(OBSConfig(**cfg, row_norm=False)).eval()
    normed = OBSLayer(OBSConfig(**cfg, row_norm=True)).eval()
    normed.load_state_dict(plain.state_dict())
    assert normed.step_cfg.row_norm and not plain.step_cfg.row_norm
    x = torch.randn(2, 9, 16)
    plain(x)
    normed(x)
    # same weights, same writes; only the read's row weighting differs
    assert torch.isfinite(normed.last_stats.read).all()
    assert not torch.allclose(plain.last_stats.read, normed.last_stats.read)


def _dead_key_layer(circuit_direct: float) -> OBSLayer:
    """A layer whose intra-circuit gate sits at about -1 (how a dead key looks, docs/results/dead_keys.md)."""
    torch.manual_seed(0)
    layer = OBSLayer(OBSConfig(d_model=16, n_nodes=256, k_min=4, k_max=12, m_active=16, row_norm=True,
                               circuit_direct=circuit_direct)).double()
    with torch.no_grad():
        layer.write.w_out[1].zero_()
        layer.write.b_out[1] = -3.0                     # g_in = tanh(-3) = -0.995
    return layer


def _circuit_share_in_active(layer: OBSLayer) -> float:
    st = layer.last_stats
    hit = (st.circuit_idx.unsqueeze(-1) == st.active_idx.unsqueeze(-2)).any(-1)     # [B, T, K]
    used = torch.arange(st.circuit_idx.shape[-1]) < st.k_hard.unsqueeze(-1)
    return ((hit & used).sum() / used.sum()).item()


@pytest.mark.parametrize("direct", [0.0, 4.0])
def test_circuit_direct_keeps_a_negatively_gated_circuit_active_and_its_gate_learnable(direct):
    layer = _dead_key_layer(direct)
    x = torch.randn(3, 1, 16, dtype=torch.float64)
    y, _ = layer(x)
    share = _circuit_share_in_active(layer)
    (y ** 2).sum().backward()
    g_gate = layer.write.b_out.grad[1].abs().item()
    if direct == 0.0:
        # the circuit inhibits itself out of A_t, and top-m passes no gradient back to its gate
        assert share == 0.0 and g_gate == 0.0
    else:
        assert share == 1.0 and g_gate > 0.0


def test_the_retired_settings_are_the_ops_own_defaults():
    """gate_scale and k_mask_temperature left the layer's config; the op's StepConfig defaults are
    what every layer now runs, so they must stay the retired values."""
    from onebigstate.kernels.step import StepConfig
    from onebigstate.model.config import RETIRED_SETTINGS
    layer = OBSLayer(OBSConfig(**CFG))
    assert layer.step_cfg.gate_scale == RETIRED_SETTINGS["gate_scale"]
    assert layer.step_cfg.k_mask_temperature == RETIRED_SETTINGS["k_mask_temperature"]
    assert torch.allclose(torch.tanh(layer.write.b_out[1:]), torch.tensor(RETIRED_SETTINGS["gate_init"]))
    with pytest.raises(ConfigError, match="'gate_init' was retired"):
        build_config(OBSConfig, {"gate_init": 0.3})
    assert StepConfig.from_config(build_config(OBSConfig, {"gate_init": 0.5})).gate_scale == 1.0
