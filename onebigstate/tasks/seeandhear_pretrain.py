"""Pretraining of the see-and-hear encoders on single steps of the training split.

Before a sequence model learns to hold pairings, its :class:`MultimodalEncoder` can learn to
tell objects and words apart: the image path classifies the training scans (10 digit
classes), the audio path names the training words (the 10 digit words, and the 40 extra words
when the task has them) from the training voices, both with the streams' jitter and noise.
Only the training split is used: novel words, test voices and test scans stay unseen, so the
held-out recall still needs the pairing held in the state. The classification heads are
thrown away; every model of a comparison gets the same pretraining.

A few hundred batches take seconds on a CPU and turn the random encoders into ones whose
vectors for two utterances of the same word (or two scans of the same digit) are close, which
is what a one-shot association needs.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onebigstate.data.layout import AUDIO, IMAGE
from onebigstate.data.seeandhear import SeeHearData
from onebigstate.encoders import MultimodalEncoder


def _image_batch(images: np.ndarray, labels: np.ndarray, n: int, jitter: int, noise: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = rng.integers(len(images), size=n)
    H, W = images.shape[1:]
    pix = np.pad(images[idx], ((0, 0), (jitter, jitter), (jitter, jitter)))
    dy, dx = rng.integers(-jitter, jitter + 1, size=(2, n, 1, 1))
    rows = np.arange(H)[None, :, None] - dy + jitter
    cols = np.arange(W)[None, None, :] - dx + jitter
    pix = pix[np.arange(n)[:, None, None], rows, cols] + noise * rng.standard_normal((n, H, W))
    return np.clip(pix, 0.0, 1.0).reshape(n, -1), labels[idx]


def pretrain_encoder(encoder: MultimodalEncoder, data: SeeHearData, steps: int, seed: int,
                     extra_words: bool, batch_size: int = 128, lr: float = 3e-3,
                     image_jitter: int = 1, image_noise: float = 0.05, audio_noise: float = 0.1) -> dict[str, float]:
    """Train ``encoder`` in place for ``steps`` batches; returns the last batch's accuracies.

    Uses its own seeded generators (numpy and torch), so the process's RNGs are not touched.
    """
    split = data.split("train", extra_words=extra_words)
    layout = encoder.layout
    W, V = split.word_mel.shape[:2]
    d = encoder.d_model
    dtype = encoder.modality_embed.weight.dtype
    gen = torch.Generator().manual_seed(seed)
    heads = nn.ModuleDict({"image": nn.Linear(d, 10), "audio": nn.Linear(d, W)}).to(dtype)
    for h in heads.values():
        nn.init.normal_(h.weight, std=d ** -0.5, generator=gen)
        nn.init.zeros_(h.bias)
    params = list(encoder.parameters()) + list(heads.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng([seed, 31337])
    was_training = encoder.training
    encoder.train()
    acc = {}
    for _ in range(steps):
        feats = np.zeros((2 * batch_size, layout.feature_dim), dtype=np.float32)
        pix, obj = _image_batch(split.images, split.labels, batch_size, image_jitter, image_noise, rng)
        feats[:batch_size, layout.image_slice] = pix
        w, v = rng.integers(W, size=batch_size), rng.integers(V, size=batch_size)
        mel = (split.word_mel[w, v] - data.mel_mean) / data.mel_std
        mel = mel + audio_noise * rng.standard_normal(mel.shape)
        feats[batch_size:, layout.audio_slice] = mel.reshape(batch_size, -1)
        modality = torch.tensor([IMAGE] * batch_size + [AUDIO] * batch_size).view(-1, 1)
        x, _ = encoder(torch.from_numpy(feats).to(dtype).view(-1, 1, layout.feature_dim), modality)
        x = x.view(2 * batch_size, d)
        logits_img, logits_aud = heads["image"](x[:batch_size]), heads["audio"](x[batch_size:])
        y_img, y_aud = torch.from_numpy(obj), torch.from_numpy(w)
        loss = F.cross_entropy(logits_img, y_img) + F.cross_entropy(logits_aud, y_aud)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc = {"image_accuracy": float((logits_img.argmax(1) == y_img).float().mean()),
               "word_accuracy": float((logits_aud.argmax(1) == y_aud).float().mean())}
    encoder.train(was_training)
    return acc


# (initial weights, settings) -> (pretrained weights, accuracies): the models of one comparison
# start from the same encoder weights (the trainer seeds the RNG before building each), so the
# pretraining runs once per process.
_CACHE: dict[tuple, tuple[dict[str, torch.Tensor], dict[str, float]]] = {}


def pretrain_cached(encoder: MultimodalEncoder, data: SeeHearData, steps: int, seed: int, extra_words: bool,
                    **kw) -> dict[str, float]:
    """:func:`pretrain_encoder`, reusing the result of an earlier call on the same initial
    weights, data file and settings in this process."""
    h = hashlib.sha256()
    for name, t in encoder.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    key = (h.hexdigest(), str(data.path), steps, seed, extra_words, tuple(sorted(kw.items())))
    if key not in _CACHE:
        acc = pretrain_encoder(encoder, data, steps, seed, extra_words, **kw)
        _CACHE[key] = ({k: v.detach().clone() for k, v in encoder.state_dict().items()}, acc)
        if len(_CACHE) > 4:
            _CACHE.pop(next(iter(_CACHE)))
    weights, acc = _CACHE[key]
    encoder.load_state_dict(weights)
    return dict(acc)
