"""See-and-hear streams: determinism, fresh pairings, consistent targets, delays, splits."""
from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from onebigstate.data import streams
from onebigstate.data.layout import AUDIO, IMAGE, NONE
from onebigstate.data.seeandhear import load_seeandhear
from onebigstate.data.streams import (IGNORE, OBJECT_TO_WORD, PAIR_VIEW, PAIR_WORD, QUERY_VIEW, QUERY_WORD,
                                      WORD_TO_OBJECT, StreamConfig, generate_streams)

TENSORS = ("features", "modality", "continuous", "target", "delay", "exposures", "query_kind", "event",
           "item", "pair_objects", "pair_words")


@pytest.fixture(scope="module")
def data():
    return load_seeandhear()


def _same(a, b) -> bool:
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in TENSORS)


def test_deterministic_per_seed_and_rows_independent_of_batch_size(data):
    cfg = StreamConfig(image_query_frac=0.3)
    a, b = generate_streams(cfg, 3, seed=7, data=data), generate_streams(cfg, 3, seed=7, data=data)
    assert _same(a, b)
    one = generate_streams(cfg, 1, seed=7, data=data)
    assert torch.equal(one.features[0], a.features[0]) and torch.equal(one.target[0], a.target[0])
    half = generate_streams(cfg, 1, seed=7, data=data, dtype=torch.float16)
    assert half.features.dtype == torch.float16 and torch.equal(half.features[0], a.features[0].half())
    other = generate_streams(cfg, 3, seed=8, data=data)
    assert not torch.equal(other.event, a.event)
    # the same seed in another split draws other streams
    test = generate_streams(cfg.model_copy(update={"split": "test"}), 3, seed=7, data=data)
    assert not torch.equal(test.pair_objects, a.pair_objects)


def test_pairing_is_fresh_in_every_stream(data):
    batch = generate_streams(StreamConfig(n_pairs=10, exposures=[1]), 16, seed=0, data=data)
    mappings = {tuple(zip(o.tolist(), w.tolist())) for o, w in zip(batch.pair_objects, batch.pair_words)}
    assert len(mappings) == 16
    # each word names several different objects across the streams
    for word in range(10):
        objects = batch.pair_objects[batch.pair_words == word]
        assert len(set(objects.tolist())) >= 4


def _check_stream(batch, b: int) -> int:
    """Every query's target, delay and exposures agree with the stream's own events."""
    ev, item, tgt = batch.event[b], batch.item[b], batch.target[b]
    pairs = dict(zip(batch.pair_words[b].tolist(), batch.pair_objects[b].tolist()))
    word_of = {o: w for w, o in pairs.items()}
    for t in torch.nonzero(ev == PAIR_WORD).flatten().tolist():
        # the view before the name shows the paired object
        v = max(u for u in range(t) if ev[u] == PAIR_VIEW)
        assert item[v].item() == pairs[item[t].item()]
        assert (ev[v + 1: t] == streams.SILENCE).all()
    n = 0
    for q in torch.nonzero(tgt != IGNORE).flatten().tolist():
        kind = batch.query_kind[b, q].item()
        if kind == WORD_TO_OBJECT:
            assert ev[q] == QUERY_WORD and batch.modality[b, q] == AUDIO
            word = item[q].item()
            assert tgt[q].item() == pairs[word]
        else:
            assert kind == OBJECT_TO_WORD and ev[q] == QUERY_VIEW and batch.modality[b, q] == IMAGE
            word = word_of[item[q].item()]
            assert tgt[q].item() == streams.WORD_TARGET_OFFSET + word
        named = torch.nonzero((ev == PAIR_WORD) & (item == word)).flatten()
        assert batch.exposures[b, q].item() == named.numel()
        assert batch.delay[b, q].item() == q - named.max().item() > 0
        span = 1 if kind == WORD_TO_OBJECT else 3
        assert ev[q - span] == streams.SILENCE
        n += 1
    assert n == len(pairs)
    return n


def test_targets_delays_and_exposures_are_consistent(data):
    cfg = StreamConfig(n_pairs=6, exposures=[1, 2, 3, 5], image_query_frac=0.5, view_frames=3)
    batch = generate_streams(cfg, 4, seed=3, data=data)
    assert sum(_check_stream(batch, b) for b in range(4)) == 24
    assert set(batch.exposures[batch.exposures > 0].tolist()) <= {1, 2, 3, 5}
    assert (batch.query_kind == OBJECT_TO_WORD).any() and (batch.query_kind == WORD_TO_OBJECT).any()
    assert ((batch.target != IGNORE) == (batch.query_kind > 0)).all()
    answers = batch.target[batch.target != IGNORE]
    assert answers.min() >= 0 and answers.max() < streams.n_targets(load_seeandhear()) == 80


@pytest.mark.parametrize("delay", [10, 100, 1000])
def test_delay_and_exposures_are_controllable(data, delay):
    cfg = StreamConfig(split="novel", exposures=[2], delay_min=delay, delay_max=delay)
    batch = generate_streams(cfg, 2, seed=1, data=data)
    d = batch.delay[batch.target != IGNORE]
    # exposures are laid out around the queries: a fixed delay is exact
    assert d.numel() == 10 and (d == delay).all()
    assert (batch.exposures[batch.target != IGNORE] == 2).all()
    assert batch.features.shape[1] == cfg.required_len


def test_novel_words_only_in_novel_streams(data):
    train = generate_streams(StreamConfig(), 8, seed=0, data=data)
    heard = train.item[train.modality == AUDIO]
    assert heard[heard >= 0].max() < 10
    extra = generate_streams(StreamConfig(extra_words=True, n_pairs=10), 8, seed=0, data=data)
    heard = extra.item[extra.modality == AUDIO]
    heard = set(heard[heard >= 0].tolist())
    assert heard.isdisjoint(range(10, 30)) and len(heard & set(range(30, 70))) > 20
    with pytest.raises(ValueError, match="extra_words adds training words"):
        StreamConfig(split="novel", extra_words=True)
    novel = generate_streams(StreamConfig(split="novel"), 8, seed=0, data=data)
    heard = novel.item[novel.modality == AUDIO]
    assert heard[heard >= 0].min() >= 10 and (novel.pair_words >= 10).all()
    # objects are still the digit classes
    assert novel.target[novel.target != IGNORE].max() < 10


def test_feature_layout_and_flags(data):
    batch = generate_streams(StreamConfig(), 4, seed=2, data=data)
    lay, f, m = batch.layout, batch.features, batch.modality
    assert f.shape[-1] == lay.feature_dim == 64 + 40 * 24
    assert torch.equal(batch.continuous, m == IMAGE)
    assert (f[m == NONE] == 0).all()
    assert (f[m == IMAGE][:, lay.audio_slice] == 0).all() and (f[m == AUDIO][:, lay.image_slice] == 0).all()
    assert (f[m == IMAGE][:, lay.image_slice].abs().sum(-1) > 0).all()
    # every event kind of the filler occurs
    assert set(batch.event.unique().tolist()) >= set(range(9)) - {QUERY_VIEW}
    # a view's frames are continuous, jittered copies: neighbours alike, not identical
    views = torch.nonzero(batch.event[0] == PAIR_VIEW).flatten()
    t = views[0].item()
    a, b = f[0, t, lay.image_slice], f[0, t + 1, lay.image_slice]
    assert not torch.equal(a, b)


def test_recall_counts_group_by_kind_exposures_delay(data):
    cfg = StreamConfig(n_pairs=4, exposures=[1, 3], delay_min=20, delay_max=20, image_query_frac=0.5)
    batch = generate_streams(cfg, 3, seed=5, data=data)
    perfect = batch.target.clamp_min(0)
    counts = streams.recall_counts(perfect, batch)
    assert sum(t for _, t in counts.values()) == 12 and all(c == t for c, t in counts.values())
    assert {k[0] for k in counts} == {"word->object", "object->word"} and {k[1] for k in counts} <= {1, 3}
    assert {k[2] for k in counts} == {20}
    logits = torch.nn.functional.one_hot(perfect, streams.n_targets(data)).float()
    logits[..., 0] += 2.0  # now every answer is class 0
    wrong = streams.recall_counts(logits, batch)
    assert sum(c for c, _ in wrong.values()) == int((batch.target == 0).sum())


def test_evaluation_grid_at_long_delays(data):
    for delay in (1000, 10_000):
        cfg = StreamConfig(split="novel", exposures=[1], delay_min=delay, delay_max=delay, image_query_frac=0.5)
        batch = generate_streams(cfg, 2, seed=0, data=data, dtype=torch.float16)
        d = batch.delay[batch.target != IGNORE]
        assert d.numel() == 10 and (d == delay).all() and batch.features.dtype == torch.float16


def test_config_errors():
    with pytest.raises(ValueError, match=r"seq_len \(50\) is too short.*need up to"):
        StreamConfig(seq_len=50)
    with pytest.raises(ValueError, match=r"delay_min \(20\) must be <= delay_max \(10\)"):
        StreamConfig(delay_min=20, delay_max=10)
    with pytest.raises(ValueError, match="exposures"):
        StreamConfig(exposures=[])
    with pytest.raises(ValueError, match="extra"):
        StreamConfig(n_pair=3)


def test_worked_example_in_docstring():
    assert doctest.testmod(streams, raise_on_error=True, optionflags=doctest.NORMALIZE_WHITESPACE).attempted >= 2
