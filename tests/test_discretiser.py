"""The discretiser: straight-through gradients, usage statistics, config errors, in a model."""
from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from onebigstate.model.discretiser import Discretiser, DiscretiserConfig, usage_stats
from onebigstate.nets import ModelConfig, build_model


@pytest.mark.parametrize("cfg", [DiscretiserConfig(kind="fsq", levels=[5, 4, 3]),
                                 DiscretiserConfig(kind="vq", codebook_size=8)], ids=["fsq", "vq"])
def test_straight_through_gradient_reaches_input(cfg):
    torch.manual_seed(0)
    disc = Discretiser(6, cfg)
    x = torch.randn(3, 5, 6, requires_grad=True)
    q, codes = disc(x)
    assert q.shape == x.shape and codes.shape == (3, 5) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < cfg.n_codes
    (q * torch.randn_like(q)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(disc.codes, codes)


def test_fsq_codes_are_a_function_of_the_rounded_digits():
    torch.manual_seed(0)
    disc = Discretiser(4, DiscretiserConfig(kind="fsq", levels=[3, 3]))
    x = torch.randn(50, 4)
    q, codes = disc(x)
    # equal codes <=> equal quantised vectors
    same_code = codes[:, None] == codes[None, :]
    same_q = torch.isclose(q[:, None], q[None, :], atol=1e-6).all(-1)
    assert torch.equal(same_code, same_q)


def test_usage_stats_on_a_hand_case():
    s = usage_stats(torch.tensor([3.0, 1.0, 0.0, 0.0]))
    p = torch.tensor([0.75, 0.25])
    assert s["perplexity"] == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert (s["used_codes"], s["dead_codes"], s["n_codes"], s["total"]) == (2, 2, 4, 4.0)
    assert usage_stats(torch.ones(5))["perplexity"] == pytest.approx(5.0)
    assert usage_stats(torch.zeros(3))["perplexity"] == 0.0


def test_usage_counts_accumulate_and_reset():
    disc = Discretiser(4, DiscretiserConfig(kind="fsq", levels=[2, 2]))
    _, c1 = disc(torch.randn(2, 7, 4))
    _, c2 = disc(torch.randn(3, 4))
    expected = torch.bincount(torch.cat([c1.reshape(-1), c2]), minlength=4).double()
    assert torch.equal(disc.usage()["counts"], expected)
    assert disc.usage()["total"] == 17
    disc.reset_usage()
    assert disc.usage()["total"] == 0


@pytest.mark.parametrize("kw, match", [
    (dict(kind="fsq", levels=[]), "at least one level"),
    (dict(kind="fsq", levels=[4, 1]), ">= 2"),
    (dict(kind="lfq"), "kind"),
    (dict(codebook_size=1), "codebook_size"),
    (dict(colour="red"), "colour"),
], ids=["no-levels", "level-1", "unknown-kind", "codebook-1", "unknown-key"])
def test_bad_config_errors(kw, match):
    with pytest.raises(ValidationError, match=match):
        DiscretiserConfig(**kw)


def test_bad_input_errors():
    disc = Discretiser(4, DiscretiserConfig(levels=[3, 3]))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        disc(torch.randn(2, 5))
    with pytest.raises(TypeError, match="floating-point"):
        disc(torch.ones(2, 4, dtype=torch.long))


def test_model_with_discretiser_trains_and_reports_codes():
    torch.manual_seed(0)
    cfg = ModelConfig(name="obs", d_model=16, discretiser={"kind": "vq", "codebook_size": 8},
                      mixer=dict(n_nodes=32, k_min=2, k_max=4, m_active=4, d_key=8, d_value=8, d_hidden=8, d_write=8))
    model = build_model(cfg, n_out=5, vocab_size=5)
    out, _ = model(torch.randint(0, 5, (2, 6)))
    loss = out.sum() + model.aux_loss()
    loss.backward()
    assert model.discretiser.codes.shape == (2, 6)
    assert model.mixers[0].addresser.keys.grad is not None
    assert model.discretiser.usage()["total"] == 12


def test_module_docstring_examples_run():
    import doctest

    import onebigstate.model.discretiser as mod
    assert doctest.testmod(mod).failed == 0
