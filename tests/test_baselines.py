"""Every baseline mixer through the one model interface: it trains and its parameter count is
what count_params reports and what a hand formula says. The invariants every mixer keeps (step
equals forward, chunks equal one pass, detached state, state size) are in
``test_mixer_invariants.py``."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from onebigstate.baselines.deltanet import deltanet_param_count
from onebigstate.baselines.mamba import mambapy_param_count
from onebigstate.config import ConfigError
from onebigstate.nets import ModelConfig, build_mixer, build_model, count_params
from onebigstate.tasks.mqar import IGNORE, MQARConfig, generate_mqar
from test_mixer_invariants import CASES as ALL_CASES

# the baselines' cases of the invariants file (small and fast on CPU), those with a hand formula
CASES = {case: spec for case, spec in ALL_CASES.items()
         if spec[0] in ("transformer", "lstm", "mamba", "deltanet", "gated_deltanet", "hopfield", "titans")}


def hand_param_count(name: str, D: int, kw: dict) -> int:
    """Parameters of one mixer at width D, written out per model."""
    if name == "transformer":
        return 4 * D * D                                   # qkv + out, no biases
    if name == "lstm":
        return 8 * D * D + 8 * D                           # 4 gates x (W_ih, W_hh, b_ih, b_hh)
    if name == "mamba":
        return mambapy_param_count(D)
    if name in ("deltanet", "gated_deltanet"):
        return deltanet_param_count(D, n_heads=kw["n_heads"], gated=name == "gated_deltanet")
    if name == "hopfield":
        return 4 * D * D + (kw["n_heads"] if kw.get("learn_beta") else 0) + D * kw.get("conv_size", 0)
    if name == "titans":
        H = kw["heads"]
        E = D // H
        hidden = 4 * E                                     # memory MLP: depth 2, expansion 4
        mem = E + E * hidden + hidden * E                  # LayerNorm gamma + two weights
        return (2 * D                                      # retrieve / store RMSNorms
                + D * H * E + D * H                        # combine_heads, retrieve_gate
                + mem + H * mem                            # template MLP + learned initial weights per head
                + 3 * D * H * E                            # queries, keys, values
                + 3 * (D * H + H))                         # adaptive step, momentum, decay
    raise KeyError(name)


def _model(case: str, d_model: int = 32, n_layers: int = 2, vocab: int = 64):
    name, kw = CASES[case]
    cfg = ModelConfig(name=name, d_model=d_model, n_layers=n_layers, mixer=kw)
    return build_model(cfg, n_out=vocab, vocab_size=vocab)


def _fit_fixed_batch(model, x, labels, steps: int, lr: float) -> list[float]:
    """Adam on one batch; asserts the losses stay finite and returns them."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        logits, _ = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    return losses


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_trains_on_a_fixed_mqar_batch(case):
    torch.manual_seed(0)
    task = MQARConfig(vocab_size=64, seq_len=16, num_kv_pairs=4)
    x, labels = generate_mqar(task, 8, seed=0)
    losses = _fit_fixed_batch(_model(case, vocab=task.vocab_size), x, labels, 20, 1e-2)
    assert min(losses[-3:]) < 0.5 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_param_count_is_count_params_and_hand_formula(case):
    name, kw = CASES[case]
    D, V, L = 32, 64, 2
    mixer = build_mixer(name, D, kw)
    assert count_params(mixer) == hand_param_count(name, D, kw)
    model = _model(case, d_model=D, n_layers=L, vocab=V)
    # embedding (the head shares it), per layer (pre-norm + mixer), final norm
    expected = V * D + L * (2 * D + hand_param_count(name, D, kw)) + 2 * D
    assert count_params(model) == expected


@pytest.mark.parametrize("case", ["transformer", "hopfield", "hopfield-learned-beta"])
def test_attention_over_a_long_cache_in_query_chunks_equals_one_pass(case, monkeypatch):
    """Over a carried cache, queries are split so the score matrix stays small (lifelong
    reading of 100,000-token streams); the values must not change."""
    import onebigstate.baselines.transformer as tr
    torch.manual_seed(0)
    model = _model(case).double()
    x = torch.randint(0, 64, (2, 19))
    y_full, _ = model(x)
    monkeypatch.setattr(tr, "SCORE_ELEMENTS", 150)                   # one or two queries per chunk
    assert len(tr.query_chunks(4, 9, 19)) > 1
    _, states = model(x[:, :10])
    y, _ = model(x[:, 10:], states)
    torch.testing.assert_close(y, y_full[:, 10:], rtol=1e-10, atol=1e-10)


def test_hopfield_large_beta_retrieves_the_nearest_stored_pattern():
    # with a huge beta and normalised patterns, retrieval returns the value of the closest stored key
    torch.manual_seed(0)
    mixer = build_mixer("hopfield", 8, {"n_heads": 1, "beta": 1e4, "normalize_patterns": True}).double()
    with torch.no_grad():
        for p in (mixer.q_proj, mixer.k_proj, mixer.v_proj, mixer.o_proj):
            p.weight.copy_(torch.eye(8))
    stored = torch.eye(8, dtype=torch.float64)[:4] * 3.0                        # four orthogonal patterns
    cue = stored[2] + 0.3 * torch.randn(8, dtype=torch.float64)
    y, _ = mixer(torch.cat([stored, cue[None]]).unsqueeze(0))
    torch.testing.assert_close(y[0, -1], stored[2])


def test_unknown_or_ill_typed_config_keys_are_errors():
    with pytest.raises(ConfigError, match="n_head"):
        build_mixer("transformer", 32, {"n_head": 4})
    with pytest.raises(ConfigError, match="impl"):
        build_mixer("mamba", 32, {"impl": "cuda"})
    with pytest.raises(ConfigError, match="chunk_size"):
        build_mixer("deltanet", 32, {"chunk_size": 0})


def test_attention_state_mismatch_is_reported():
    mixer = build_mixer("transformer", 16, {"n_heads": 2})
    _, cache = mixer(torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match=r"\(batch, heads\)"):
        mixer(torch.randn(3, 3, 16), cache)


def _fla_importable() -> bool:
    try:
        import fla.layers  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(_fla_importable(), reason="fla is importable here; this checks the message when it is not")
@pytest.mark.parametrize("name,kw", [("deltanet", {"impl": "fla"}), ("gated_deltanet", {"impl": "fla"}),
                                     ("mamba", {"impl": "fla_mamba2"})], ids=["deltanet", "gated", "mamba2"])
def test_fla_impl_without_fla_says_so(name, kw):
    with pytest.raises(ImportError, match="flash-linear-attention"):
        build_mixer(name, 32, kw)


def test_rotary_scores_depend_only_on_relative_position():
    from onebigstate.baselines.transformer import apply_rotary, rotary_angles
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, dtype=torch.float64), torch.randn(1, 1, 1, 8, dtype=torch.float64)

    def score(m: int, n: int) -> torch.Tensor:
        cm, sm = rotary_angles(torch.tensor([m]), 8, 10000.0)
        cn, sn = rotary_angles(torch.tensor([n]), 8, 10000.0)
        return (apply_rotary(q, cm, sm) * apply_rotary(k, cn, sn)).sum()

    # angles are computed in float32, hence the tolerance
    torch.testing.assert_close(score(7, 3), score(107, 103), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(score(7, 3), score(7, 4))


@pytest.mark.gpu
@pytest.mark.parametrize("name,kw", [("deltanet", {"impl": "fla"}), ("mamba", {"impl": "fla_mamba2"})],
                         ids=["deltanet_fla", "mamba2_fla"])
def test_fla_baselines_train_on_a_fixed_mqar_batch_on_cuda(name, kw):
    """The bench's deltanet_fla / mamba2_fla (fla's Triton kernels) learn a fixed batch, as ours do."""
    pytest.importorskip("fla.layers")
    torch.manual_seed(0)
    task = MQARConfig(vocab_size=256, seq_len=128, num_kv_pairs=8)
    x, labels = (t.cuda() for t in generate_mqar(task, 16, seed=0))
    cfg = ModelConfig(name=name, d_model=64, n_layers=2, mixer={"n_heads": 2, **kw} if name == "deltanet" else kw)
    losses = _fit_fixed_batch(build_model(cfg, n_out=256, vocab_size=256).cuda(), x, labels, 60, 3e-3)
    assert min(losses[-5:]) < 0.5 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"
