"""The benchmark's task generators: deterministic per (seed, step), held-out sets from the test
seed range, and labels right on cases checked by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from onebigstate.config import ConfigError
from onebigstate.tasks.base import TaskConfig
from onebigstate.tasks.common import IGNORE
from onebigstate.tasks.parity import running_parity
from onebigstate.tasks.registry import build_task
from onebigstate.tasks.s5 import composition_table

SMALL = {
    "selective_copy": {"vocab_size": 8, "body_len": 12, "n_tokens": 3},
    "delayed_recall": {"vocab_size": 8, "n_tokens": 2, "delay": 5, "test_delay": 9},
    "parity": {"seq_len": 6, "test_len": 15},
    "s5": {"seq_len": 5, "test_len": 11},
    "retention": {"vocab_size": 32, "n_pairs": 3, "seq_len": 20, "test_distances": [4, 10, 30]},
    "continual": {"vocab_size": 32, "n_phases": 3, "pairs_per_phase": 2, "repeats": 2},
}


def _task(name, test_size=16, seed=0, **params):
    return build_task(TaskConfig(name=name, seed=seed, test_size=test_size, params={**SMALL[name], **params}))


@pytest.mark.parametrize("name", list(SMALL))
def test_batches_are_a_function_of_seed_and_step(name):
    a, b = _task(name), _task(name)
    x1, y1 = a.train_batch(3, 8)
    x2, y2 = b.train_batch(3, 8)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = a.train_batch(4, 8)
    x4, _ = _task(name, seed=1).train_batch(3, 8)
    assert not torch.equal(x1, x3) and not torch.equal(x1, x4)
    t1, t2 = a.test_set(), b.test_set()
    assert torch.equal(t1[0], t2[0]) and torch.equal(t1[1], t2[1])
    assert x1.dtype == y1.dtype == torch.long
    assert int(x1.min()) >= 0 and int(x1.max()) < a.vocab_size
    scored = y1[y1 != IGNORE]
    assert scored.numel() > 0 and int(scored.min()) >= 0 and int(scored.max()) < a.n_out


@pytest.mark.parametrize("name", list(SMALL))
def test_groups_mark_exactly_the_scored_positions(name):
    g = _task(name).grouped_test_set()
    assert torch.equal(g.groups >= 0, g.labels != IGNORE)
    assert int(g.groups.max()) < len(g.names)


def test_selective_copy_labels_are_the_data_tokens_in_order():
    x, y = _task("selective_copy").train_batch(0, 32)
    body = x[:, :12]
    for row in range(32):
        data = body[row][body[row] != 0].tolist()
        assert x[row, 12:].tolist() == [1, 1, 1]
        assert y[row, 12:].tolist() == data and len(data) == 3
        assert (y[row, :12] == IGNORE).all()


def test_delayed_recall_copies_the_first_tokens_after_the_delay_and_tests_a_longer_one():
    t = _task("delayed_recall")
    x, y = t.train_batch(0, 16)
    assert x.shape[1] == 2 + 5 + 2
    assert torch.equal(y[:, 7:], x[:, :2]) and (x[:, 7:] == 1).all()
    xt, yt = t.test_set()
    assert xt.shape[1] == 2 + 9 + 2 and torch.equal(yt[:, 11:], xt[:, :2])


def test_parity_by_hand_and_longer_test_sequences():
    assert running_parity(np.array([[1, 0, 1, 1, 0, 1]])).tolist() == [[1, 1, 0, 1, 1, 0]]
    t = _task("parity")
    x, y = t.train_batch(0, 4)
    assert x.shape == (4, 6) and torch.equal(y, torch.cumsum(x, 1) % 2)
    g = t.grouped_test_set()
    assert g.inputs.shape == (16, 15) and g.names == ["t<=6", "t<=12", "t<=15"]
    assert g.groups[0].tolist() == [0] * 6 + [1] * 6 + [2] * 3


def test_s5_worked_example_of_the_docstring():
    perms, table = composition_table(3)
    assert perms[1] == (0, 2, 1) and perms[3] == (1, 2, 0) and perms[4] == (2, 0, 1)
    # (a o b)(i) = a[b[i]]
    assert perms[table[2, 1]] == (1, 2, 0)
    t = build_task(TaskConfig(name="s5", params={"degree": 3, "seq_len": 3}))
    x, y = t.run(1, 3, np.random.default_rng(0))
    x[:] = [[1, 2, 3]]
    acc, out = x[0, 0], [x[0, 0]]
    for g in x[0, 1:]:
        acc = table[g, acc]
        out.append(acc)
    assert out == [1, 3, 4]


def test_s5_labels_compose_the_permutations():
    t = _task("s5")
    assert t.vocab_size == t.n_out == 120
    x, y = t.train_batch(0, 4)
    for row in range(4):
        state = list(range(5))
        for step in range(5):
            g = t.perms[int(x[row, step])]
            state = [g[state[i]] for i in range(5)]
            assert t.perms[int(y[row, step])] == tuple(state)


def test_retention_queries_ask_the_written_values_at_the_given_distances():
    t = _task("retention")
    x, y = t.train_batch(0, 8)
    for row in range(8):
        written = {int(x[row, 2 * i]): int(x[row, 2 * i + 1]) for i in range(3)}
        qpos = (y[row] != IGNORE).nonzero().flatten().tolist()
        assert len(qpos) == 3
        assert {int(x[row, p]) for p in qpos} == set(written)
        for p in qpos:
            assert int(y[row, p]) == written[int(x[row, p])] and int(x[row, p + 1]) == 0
        # distractor keys are never written keys
        others = [int(x[row, p]) for p in range(6, 20, 2) if p not in qpos]
        assert not set(others) & set(written)
    life = t.lifelong_set()
    assert life.names == ["d=4", "d=10", "d=30"]
    for row in range(life.inputs.shape[0]):
        for grp, d in enumerate([4, 10, 30]):
            pos = (life.groups[row] == grp).nonzero().flatten().tolist()
            assert pos == [6 + d]                      # 3 writes = 6 tokens, then the distance


@pytest.mark.parametrize("window", [2, 6, 64])
def test_retention_stream_made_window_by_window_has_the_lifelong_sets_layout(window):
    from onebigstate.tasks.retention import RetentionConfig, generate_retention, retention_stream
    cfg = RetentionConfig(vocab_size=64, n_pairs=4, seq_len=32)
    dists = [10, 30, 101]
    x, y, g = generate_retention(cfg, 3, np.random.default_rng(0), distances=dists)
    parts = list(retention_stream(cfg, 3, dists, window, np.random.default_rng(0)))
    assert all(p[0].shape[1] == window for p in parts[:-1])
    X, Y, G = (np.concatenate([p[i] for p in parts], 1) for i in range(3))
    # the same writes, queries, labels and groups; only the distractors are drawn otherwise
    assert X.shape == x.shape and (Y == y).all() and (G == g).all()
    assert (X[:, :8] == x[:, :8]).all() and (X[y != IGNORE] == x[y != IGNORE]).all()
    q = np.argwhere(y != IGNORE)
    assert (X[q[:, 0], q[:, 1] + 1] == 0).all()                        # every query is followed by its pad
    for row in range(3):
        distractors = X[row, 8::2][Y[row, 8::2] == IGNORE]
        assert not np.isin(distractors, x[row, :8:2]).any()             # never a written key
    with pytest.raises(ValueError, match="even"):
        next(retention_stream(cfg, 3, dists, 5, np.random.default_rng(0)))


def test_continual_probe_asks_each_phase_and_current_is_a_repeat():
    t = _task("continual")
    g = t.grouped_test_set()
    assert g.names == ["current", "phase 0", "phase 1", "phase 2"]
    x, y, grp = g.inputs[0].tolist(), g.labels[0].tolist(), g.groups[0].tolist()
    assert len(x) == 2 * (3 * 2 * 2 + 6)
    pairs = {}
    for p in range(3):
        block = x[p * 8:(p + 1) * 8]
        for i in range(0, 8, 2):
            pairs.setdefault(block[i], (p, block[i + 1]))
        assert grp[p * 8:p * 8 + 4] == [-1] * 4          # first round: not scored
        assert [grp[p * 8 + 4 + i] for i in (0, 2)] == [0, 0]
    probe = range(24, 36, 2)
    assert sorted(x[i] for i in probe) == sorted(pairs)
    for i in probe:
        assert y[i] == pairs[x[i]][1] and grp[i] == 1 + pairs[x[i]][0]


def test_continual_remapped_keys_probe_the_latest_value():
    t = _task("continual", shared_keys=True)
    x, y, grp = (v[0].tolist() for v in (t.grouped_test_set().inputs, t.grouped_test_set().labels,
                                         t.grouped_test_set().groups))
    last = {x[i]: x[i + 1] for i in range(16, 24, 2)}
    for i in range(24, 28, 2):
        assert y[i] == last[x[i]] and grp[i] == 1


def test_bad_params_name_the_key():
    with pytest.raises(ConfigError, match="n_tokens"):
        build_task(TaskConfig(name="selective_copy", params={"body_len": 2, "n_tokens": 3}))
    with pytest.raises(ConfigError, match="test_len"):
        build_task(TaskConfig(name="parity", params={"seq_len": 8, "test_len": 4}))
