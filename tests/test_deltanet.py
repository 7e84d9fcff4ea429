"""DeltaNet / Gated DeltaNet: the chunked op against the step-by-step reference.

Values, final states and gradients (q, k, v, beta, g, initial state, under random upstream
gradients) in float64 on small awkward sizes; then the layer's two impls with the same
weights; then (GPU only) fla's layers against ours with the same weights.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from onebigstate.baselines.deltanet import DeltaNetMixer, delta_rule_chunk, delta_rule_recurrent
from onebigstate.nets import build_mixer


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref||, the error measure of every comparison here."""
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


# (T, chunk, gated, with initial state): odd lengths, lengths shorter than a chunk, exact multiples,
# one-step chunks, one-step sequences
OP_CASES = {
    "T13-C4": (13, 4, False, True),
    "T13-C4-gated": (13, 4, True, True),
    "T3-C8-shorter-than-chunk": (3, 8, False, True),
    "T3-C8-shorter-than-chunk-gated": (3, 8, True, False),
    "T16-C8-exact": (16, 8, False, False),
    "T16-C8-exact-gated": (16, 8, True, True),
    "T7-C1": (7, 1, True, True),
    "T1-C4-one-step": (1, 4, False, True),
    "T10-C5-gated-no-init": (10, 5, True, False),
}


def _op_inputs(T: int, gated: bool, with_init: bool, seed: int = 0, B: int = 2, H: int = 3, K: int = 5, V: int = 4,
               dtype=torch.float64, strong_decay: bool = False):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=dtype), dim=-1)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen, dtype=dtype)
    beta = torch.rand(B, T, H, generator=gen, dtype=dtype)
    g = None
    if gated:
        g = -torch.rand(B, T, H, generator=gen, dtype=dtype) * (8.0 if strong_decay else 1.0)
    S0 = torch.randn(B, H, K, V, generator=gen, dtype=dtype) if with_init else None
    return q, k, v, beta, g, S0


@pytest.mark.parametrize("case", list(OP_CASES), ids=list(OP_CASES))
def test_chunk_op_matches_recurrent_values_and_grads(case):
    T, C, gated, with_init = OP_CASES[case]
    inputs = [t.requires_grad_() if t is not None else None for t in _op_inputs(T, gated, with_init)]
    q, k, v, beta, g, S0 = inputs
    o_ref, S_ref = delta_rule_recurrent(q, k, v, beta, g, S0)
    o, S = delta_rule_chunk(q, k, v, beta, g, S0, chunk_size=C)
    assert rel_err(o, o_ref) < 1e-12
    assert rel_err(S, S_ref) < 1e-12
    gen = torch.Generator().manual_seed(1)
    do, dS = torch.randn(o.shape, generator=gen, dtype=o.dtype), torch.randn(S.shape, generator=gen, dtype=S.dtype)
    leaves = [t for t in inputs if t is not None]
    grads_ref = torch.autograd.grad((o_ref * do).sum() + (S_ref * dS).sum(), leaves)
    grads = torch.autograd.grad((o * do).sum() + (S * dS).sum(), leaves)
    names = [n for n, t in zip(["q", "k", "v", "beta", "g", "S0"], inputs) if t is not None]
    for name, a, b in zip(names, grads, grads_ref):
        assert rel_err(a, b) < 1e-11, f"gradient of {name}"


def test_chunk_op_strong_decay_float32():
    # strong decays (exp(g) down to e^-8 per step) must not overflow inside a chunk
    q, k, v, beta, g, S0 = _op_inputs(40, True, True, seed=3, dtype=torch.float32, strong_decay=True)
    o_ref, S_ref = delta_rule_recurrent(*(t.double() for t in (q, k, v, beta, g, S0)))
    o, S = delta_rule_chunk(q, k, v, beta, g, S0, chunk_size=16)
    assert torch.isfinite(o).all()
    assert rel_err(o.double(), o_ref) < 1e-4
    assert rel_err(S.double(), S_ref) < 1e-4


def test_recurrent_op_is_the_delta_rule_by_hand():
    # one head, K = V = 2, two steps written out: S1 = b1 k1 v1^T; S2 = e^g2 (I - b2 k2 k2^T) S1 + b2 k2 v2^T
    k1, k2 = torch.tensor([1.0, 0.0]), torch.tensor([0.6, 0.8])
    v1, v2 = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 3.0])
    b1, b2, g2 = 0.5, 0.25, -0.1
    S1 = b1 * torch.outer(k1, v1)
    S2 = torch.exp(torch.tensor(g2)) * (torch.eye(2) - b2 * torch.outer(k2, k2)) @ S1 + b2 * torch.outer(k2, v2)
    q = torch.stack([k1, k2]).view(1, 2, 1, 2)
    k = torch.stack([k1, k2]).view(1, 2, 1, 2)
    v = torch.stack([v1, v2]).view(1, 2, 1, 2)
    beta = torch.tensor([b1, b2]).view(1, 2, 1)
    g = torch.tensor([0.0, g2]).view(1, 2, 1)
    o, S = delta_rule_recurrent(q, k, v, beta, g, scale=1.0)
    torch.testing.assert_close(S[0, 0], S2)
    torch.testing.assert_close(o[0, 1, 0], k2 @ S2)
    torch.testing.assert_close(o[0, 0, 0], k1 @ S1)


def test_op_rejects_bad_shapes_with_both_shapes_in_the_message():
    q, k, v, beta, g, S0 = _op_inputs(5, True, True)
    with pytest.raises(ValueError, match=r"initial_state .*got \(2, 3, 4, 4\)"):
        delta_rule_chunk(q, k, v, beta, g, S0[..., :4, :])


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet"])
@pytest.mark.parametrize("use_short_conv", [True, False], ids=["conv", "no-conv"])
def test_layer_chunk_equals_recurrent_values_and_param_grads(name, use_short_conv):
    torch.manual_seed(0)
    kw = {"n_heads": 2, "chunk_size": 4, "use_short_conv": use_short_conv}
    chunk = build_mixer(name, 12, {**kw, "impl": "chunk"}).double()
    rec = build_mixer(name, 12, {**kw, "impl": "recurrent"}).double()
    rec.load_state_dict(chunk.state_dict())
    x = torch.randn(2, 11, 12, dtype=torch.float64)
    y_c, st_c = chunk(x)
    y_r, st_r = rec(x)
    assert rel_err(y_c, y_r) < 1e-12
    assert rel_err(st_c["S"], st_r["S"]) < 1e-12
    dy = torch.randn_like(y_c)
    (y_c * dy).sum().backward()
    (y_r * dy).sum().backward()
    for (n, p_c), p_r in zip(chunk.named_parameters(), rec.parameters()):
        assert rel_err(p_c.grad, p_r.grad) < 1e-11, n


@pytest.mark.gpu
@pytest.mark.parametrize("gated", [False, True], ids=["deltanet", "gated_deltanet"])
@pytest.mark.parametrize("T", [37, 130], ids=["T37-fla-recurrent", "T130-fla-chunk"])
def test_fla_layer_matches_own_implementation(gated, T):
    """fla.layers DeltaNet / GatedDeltaNet against our chunked op, same weights, on CUDA.

    fla switches to its fused recurrent kernel for T <= 64 and to the chunk kernel above.
    fla's layer runs under bf16 autocast (its chunk kernel refuses float32), hence the tolerance
    of a few percent; GatedDeltaNet's backward is skipped (fla 0.6 with Triton 3.6 refuses it on Hopper, see DEPENDENCIES.md).
    """
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("fla.layers")
    torch.manual_seed(0)
    name = "gated_deltanet" if gated else "deltanet"
    kw = {"n_heads": 4, "chunk_size": 32}
    fla_mixer = build_mixer(name, 128, {**kw, "impl": "fla"}).cuda()
    own = build_mixer(name, 128, {**kw, "impl": "chunk"}).cuda()
    assert isinstance(own, DeltaNetMixer)
    own.load_state_dict(fla_mixer.fla.state_dict())
    fla_mixer.eval()
    own.eval()
    x = torch.randn(2, T, 128, device="cuda", requires_grad=True)
    y_fla, _ = fla_mixer(x)
    y_own, _ = own(x)
    tol = 3e-2                      # fla runs under bf16 autocast (its chunk kernel refuses float32)
    assert rel_err(y_fla.float(), y_own.float()) < tol
    if gated:
        return
    dy = torch.randn_like(y_own)
    names = [n for n, _ in own.named_parameters()]
    fla_params = dict(fla_mixer.fla.named_parameters())
    g_fla = torch.autograd.grad((y_fla * dy).sum(), [x, *(fla_params[n] for n in names)])
    g_own = torch.autograd.grad((y_own * dy).sum(), [x, *own.parameters()])
    for name, a, b in zip(["x", *names], g_fla, g_own):
        assert rel_err(a, b) < tol, name
