"""Encoders: routing by modality, flags carried through, and that they learn the shipped data."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from onebigstate.data.layout import ACTION, AUDIO, IMAGE, NONE, TOKEN, StreamLayout
from onebigstate.data.seeandhear import load_seeandhear
from onebigstate.data.streams import StreamConfig, generate_streams
from onebigstate.encoders import ActionEncoder, AudioEncoder, ImageEncoder, MultimodalEncoder, TokenEncoder


@pytest.fixture(scope="module")
def batch():
    return generate_streams(StreamConfig(n_pairs=2, exposures=[1, 2], delay_max=20), 2, seed=0)


def test_each_step_sees_only_its_modality(batch):
    torch.manual_seed(0)
    enc = MultimodalEncoder(batch.layout, d_model=24).eval()
    x, cont = enc(batch.features, batch.modality, batch.continuous)
    assert x.shape == (*batch.modality.shape, 24) and torch.equal(cont, batch.continuous)
    lay, m = batch.layout, batch.modality
    noisy = batch.features.clone()
    # write junk into the absent modality's part of every step: no output may change
    noisy[..., lay.audio_slice][m == IMAGE] = 5.0
    noisy[..., lay.image_slice][m == AUDIO] = 5.0
    noisy[m == NONE] = 5.0
    x2, _ = enc(noisy, m, batch.continuous)
    assert torch.equal(x, x2)
    # silent steps all map to the same learned vector
    silent = x[m == NONE]
    assert torch.allclose(silent, silent[:1].expand_as(silent))
    # default flags: image steps continuous
    assert torch.equal(enc(batch.features, m)[1], m == IMAGE)
    # packed steps (features, modality, flag in one tensor) give the same result
    packed = batch.packed()
    assert packed.shape[-1] == lay.packed_dim == lay.feature_dim + 2
    xp, cp = enc(packed)
    assert torch.equal(xp, x) and torch.equal(cp, batch.continuous)
    assert all(torch.equal(u, v) for u, v in zip(lay.unpack(packed), (batch.features, m, batch.continuous)))


def test_gradients_reach_only_the_encoders_used(batch):
    enc = MultimodalEncoder(batch.layout, d_model=16)
    only_images = torch.where(batch.modality == AUDIO, torch.full_like(batch.modality, NONE), batch.modality)
    x, _ = enc(batch.features, only_images)
    x.square().sum().backward()
    assert enc.encoders["image"].proj.weight.grad.abs().sum() > 0
    assert enc.encoders["audio"].proj.weight.grad is None


def test_token_and_action_steps():
    lay = StreamLayout()
    enc = MultimodalEncoder(lay, d_model=8, vocab_size=5, n_actions=3)
    feats = torch.zeros(1, 4, lay.feature_dim)
    feats[0, :, 0] = torch.tensor([4.0, 2.0, 2.0, 0.0])
    modality = torch.tensor([[TOKEN, TOKEN, ACTION, ACTION]])
    x, cont = enc(feats, modality)
    assert not cont.any() and not torch.allclose(x[0, 1], x[0, 2])
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 5\)"):
        enc(feats.index_fill(2, torch.tensor([0]), 7.0), modality)
    plain = MultimodalEncoder(lay, d_model=8)
    with pytest.raises(ValueError, match=r"modality ids \[3, 4\] have no encoder here"):
        plain(feats, modality)
    with pytest.raises(ValueError, match=r"features must be \[B, T, 1024\]"):
        plain(feats[..., :100], modality)
    assert TokenEncoder(5, 8)(torch.tensor([[1, 2]])).shape == (1, 2, 8)
    assert ActionEncoder(8, action_dim=3)(torch.randn(2, 5, 3)).shape == (2, 5, 8)
    with pytest.raises(ValueError, match="exactly one of n_actions"):
        ActionEncoder(8)


def test_encoder_input_shapes():
    img = ImageEncoder((8, 8), 12)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(img(x), img(x.reshape(2, 3, 64)))
    with pytest.raises(ValueError, match=r"ImageEncoder expects \[\.\.\., 64\] or \[\.\.\., 8, 8\], got \(2, 63\)"):
        img(torch.rand(2, 63))
    aud = AudioEncoder(40, 24, 12)
    a = torch.randn(5, 40, 24)
    assert torch.allclose(aud(a), aud(a.reshape(5, 960)))
    assert ImageEncoder((32, 48), 12)(torch.rand(4, 32 * 48)).shape == (4, 12)


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int = 64) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def test_encoders_learn_the_shipped_data():
    """Real signal: digits classified on held-out scans, words on held-out voices."""
    torch.manual_seed(0)
    data = load_seeandhear()
    train, test = data.split("train"), data.split("test")
    norm = lambda m: (torch.from_numpy(m) - data.mel_mean) / data.mel_std  # noqa: E731
    W, V = train.word_mel.shape[:2]
    words = nn.Sequential(AudioEncoder(40, 24, 32), nn.GELU(), nn.Linear(32, 10))
    _fit(words, norm(train.word_mel).flatten(0, 1), torch.arange(W).repeat_interleave(V), steps=150)
    Wt, Vt = test.word_mel.shape[:2]
    acc = (words(norm(test.word_mel).flatten(0, 1)).argmax(-1) == torch.arange(Wt).repeat_interleave(Vt)).float().mean()
    print(f"word accuracy on held-out voices {acc:.3f}")
    assert acc > 0.8, f"word accuracy on held-out voices {acc:.2f}"
    digits = nn.Sequential(ImageEncoder((8, 8), 32), nn.GELU(), nn.Linear(32, 10))
    _fit(digits, torch.from_numpy(train.images), torch.from_numpy(train.labels), steps=120)
    acc = (digits(torch.from_numpy(test.images)).argmax(-1) == torch.from_numpy(test.labels)).float().mean()
    print(f"digit accuracy on held-out scans {acc:.3f}")
    assert acc > 0.9, f"digit accuracy on held-out scans {acc:.2f}"
