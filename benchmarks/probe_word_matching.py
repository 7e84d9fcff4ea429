"""How hard is matching a novel word heard once, across voices? A reference for the
see-and-hear demo's one-shot novel-word test.

An ``AudioEncoder`` is trained to classify training words (train voices, with the
streams' audio noise); then, for random sets of 5 novel words each heard once in a test
voice variant, a query is the same word in another test variant, matched to the
candidate with the most similar embedding (cosine). Chance is 20%. Raw normalised
log-mel (no training) is the first row.

    python benchmarks/probe_word_matching.py
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from onebigstate.data.seeandhear import load_seeandhear
from onebigstate.encoders import AudioEncoder


def match_rate(embed, mel: torch.Tensor, trials: int = 2000, candidates: int = 5, seed: int = 0) -> float:
    """``mel [W, V, M, L]`` normalised; fraction of trials where the query finds its word."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        E = embed(mel + 0.1 * torch.randn(mel.shape, generator=torch.Generator().manual_seed(seed)))
    W, V = mel.shape[:2]
    hits = 0
    for _ in range(trials):
        words = rng.choice(W, candidates, replace=False)
        variants = rng.integers(V, size=candidates)
        q = rng.integers(candidates)
        vq = (variants[q] + rng.integers(1, V)) % V
        sims = torch.cosine_similarity(E[words, variants], E[words[q], vq][None], dim=-1)
        hits += int(sims.argmax()) == q
    return hits / trials


def train_encoder(mel: torch.Tensor, steps: int, seed: int = 0) -> AudioEncoder:
    torch.manual_seed(seed)
    W, V = mel.shape[:2]
    x, y = mel.flatten(0, 1), torch.arange(W).repeat_interleave(V)
    enc, head = AudioEncoder(mel.shape[2], mel.shape[3], 64), nn.Linear(64, W)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (64,))
        xb = x[idx] + 0.1 * torch.randn_like(x[idx])
        opt.zero_grad()
        nn.functional.cross_entropy(head(torch.relu(enc(xb))), y[idx]).backward()
        opt.step()
    return enc


def main() -> None:
    data = load_seeandhear()
    mel = (torch.from_numpy(data.word_mel) - data.mel_mean) / data.mel_std
    train_v, test_v = data.variants(False), data.variants(True)
    novel = mel[data.novel_word_ids][:, test_v]
    print("one-shot novel-word matching, 5 candidates, another test voice variant (chance 0.20)")
    print(f"  raw log-mel cosine:                     {match_rate(lambda m: m.flatten(2), novel):.3f}")
    for name, ids, steps in (("digit words (10)", data.digit_word_ids, 400),
                             ("digit + extra words (50)", np.concatenate([data.digit_word_ids, data.extra_word_ids]), 800)):
        enc = train_encoder(mel[ids][:, train_v], steps)
        print(f"  encoder trained on {name:<25} {match_rate(enc, novel):.3f}")


if __name__ == "__main__":
    main()
