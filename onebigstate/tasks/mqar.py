"""Multi-query associative recall (MQAR), generated as the Zoology benchmark defines it.

A sequence holds ``num_kv_pairs`` key-value pairs, then the keys again as queries at
power-law distributed gaps, with random tokens in between; the model must output each
query's value at the query's position. Keys come from the first half of the vocabulary
(excluding 0), values from the second half. Loss and accuracy only on the answers.

Worked example (vocab 16, seq_len 12, 2 pairs; keys from 1..7, values from 8..15):

    context  : k1=3 v1=12 k2=5 v2=9                      (positions 0-3)
    queries  : the key 5 at gap 0, the key 3 at gap 2     (positions 4, 8)
    inputs   : 3 12 5 9 | 5 r 11 r 3 r r r   (r: random filler tokens)
    labels   : -100 ... at position 4 -> 9, at position 8 -> 12, elsewhere -100

Train and test sets use disjoint seed ranges (train seeds < 1_000_000 <= test seeds).
"""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field, model_validator

from onebigstate.config import StrictModel

IGNORE = -100
TEST_SEED_OFFSET = 1_000_000


class MQARConfig(StrictModel):
    vocab_size: int = Field(8192, ge=4)
    seq_len: int = Field(64, ge=4)
    num_kv_pairs: int = Field(8, ge=1)
    power_a: float = Field(0.01, gt=0.0, description="power-law exponent of the query gaps (Zoology)")
    random_non_queries: bool = True

    @model_validator(mode="after")
    def _check(self) -> "MQARConfig":
        if self.seq_len % 2:
            raise ValueError(f"seq_len must be even, got {self.seq_len}")
        if self.num_kv_pairs * 4 > self.seq_len:
            raise ValueError(f"num_kv_pairs*4 ({self.num_kv_pairs * 4}) must be <= seq_len ({self.seq_len})")
        if self.vocab_size <= self.seq_len:
            raise ValueError(f"vocab_size ({self.vocab_size}) must exceed seq_len ({self.seq_len})")
        if self.num_kv_pairs >= self.vocab_size // 2 - 1:
            raise ValueError(f"num_kv_pairs ({self.num_kv_pairs}) needs a larger vocabulary than {self.vocab_size}")
        return self


def generate_mqar(cfg: MQARConfig, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sequences: (inputs [n, T] int64, labels [n, T] int64 with IGNORE off the answers)."""
    rng = np.random.default_rng(seed)
    T, P, V = cfg.seq_len, cfg.num_kv_pairs, cfg.vocab_size
    half = V // 2
    ctx = 2 * P
    # keys from 1..half-1, values from half..V-1, distinct within a sequence
    keys = np.argsort(rng.random((n, half - 1)), axis=1)[:, :P] + 1
    values = np.argsort(rng.random((n, V - half)), axis=1)[:, :P] + half
    kvs = np.zeros((n, ctx), dtype=np.int64)
    kvs[:, 0::2], kvs[:, 1::2] = keys, values
    # query gaps: P distinct slots out of `space`, power-law weighted towards small gaps
    space = (T - ctx) // 2
    p = cfg.power_a * np.arange(1, space + 1) ** (cfg.power_a - 1)
    p = p / p.sum()
    gaps = np.stack([rng.choice(space, size=P, replace=False, p=p) for _ in range(n)])
    queries = np.zeros((n, T - ctx + 1), dtype=np.int64)
    np.put_along_axis(queries, gaps * 2, keys, axis=1)
    examples = np.concatenate([kvs, queries], axis=1)
    labels = np.full((n, T + 1), IGNORE, dtype=np.int64)
    np.put_along_axis(labels, gaps * 2 + ctx + 1, values, axis=1)
    inputs = torch.from_numpy(examples[:, :-1].copy())
    targets = torch.from_numpy(labels[:, 1:].copy())
    if cfg.random_non_queries:
        fill = torch.from_numpy(rng.integers(0, V, size=inputs.shape))
        inputs = torch.where(inputs == 0, fill, inputs)
    return inputs, targets


def answer_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(correct, total) over the positions with a label."""
    mask = labels != IGNORE
    pred = logits.argmax(-1)
    return int((pred[mask] == labels[mask]).sum()), int(mask.sum())
