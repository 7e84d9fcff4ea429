"""The MiniGrid action-and-outcome streams and task."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from onebigstate.tasks.base import TaskConfig
from onebigstate.tasks.gridworld import (ACTION_NAMES, FORWARD, IGNORE, LEFT, NOVEL, QUERY, SEEN, GridConfig, _env,
                                         feature_dim, generate_grid, make_episode, make_layout, random_walk)
from onebigstate.tasks.registry import build_task


@pytest.mark.parametrize("seed", [0, 7, 123])
def test_simulated_moves_match_minigrid(seed):
    cfg = GridConfig()
    layout = make_layout(cfg.env_id, seed)
    env = _env(cfg.env_id)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    state = layout.start
    for a in rng.choice(3, size=200, p=[0.25, 0.25, 0.5]):
        _, _, terminated, truncated, _ = env.step(int(a))
        state = layout.step(state, int(a))
        assert state == (int(env.agent_pos[0]), int(env.agent_pos[1]), int(env.agent_dir))
        if terminated or truncated:
            break


def test_stream_structure_and_labels():
    cfg = GridConfig(explore_steps=30, n_queries=4)
    ep = make_episode(cfg, layout_seed=3, walk_seed=5)
    T = 2 * 30 + 1 + 2 * 4
    assert ep.features.shape == (T, feature_dim(9)) and ep.labels.shape == (T, 2)
    # labels sit on action steps: the front class after the action
    for i, (s, a) in enumerate(zip(ep.states[:-1], ep.actions)):
        assert ep.features[2 * i + 1, 1] == 1 and ep.features[2 * i + 1, -3 + a] == 1
        assert ep.labels[2 * i + 1, 0] == ep.layout.front(*ep.states[i + 1])
        assert ep.labels[2 * i, 0] == IGNORE
        seen_before = (s, a) in set(zip(ep.states[:i], ep.actions[:i]))
        assert ep.labels[2 * i + 1, 1] == (SEEN if seen_before else NOVEL)
    # every query asks about an action taken exactly once at that place
    taken = list(zip(ep.states[:-1], ep.actions))
    for q in range(4):
        lab = ep.labels[2 * 30 + 2 + 2 * q]
        if lab[0] == IGNORE:
            continue
        assert lab[1] == QUERY
        qf, qa = ep.features[2 * 30 + 1 + 2 * q], ep.features[2 * 30 + 2 + 2 * q]
        a = int(np.argmax(qa[-3:]))
        matches = [s for s, b in taken if b == a and np.array_equal(qf[3:-3], _obs_part(ep, s))]
        assert len(matches) == 1
        assert lab[0] == ep.layout.front(*ep.layout.step(matches[0], a))
    assert ep.continuous.sum() == 31


def _obs_part(ep, s):
    from onebigstate.tasks.gridworld import obs_features
    return obs_features(ep.layout, s, query=True)[3:-3]


def test_streams_are_a_function_of_the_seed():
    cfg = GridConfig(explore_steps=8, n_queries=2)
    a, b = generate_grid(cfg, 3, seed=11), generate_grid(cfg, 3, seed=11)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], generate_grid(cfg, 3, seed=12)[0])


def test_unknown_action_is_an_error():
    layout = make_layout(GridConfig().env_id, 0)
    with pytest.raises(ValueError, match="unknown action 5"):
        layout.step(layout.start, 5)
    assert ACTION_NAMES[LEFT] == "left" and ACTION_NAMES[FORWARD] == "forward"


def test_task_metrics_per_category():
    task = build_task(TaskConfig(name="gridworld", test_size=4, params={"explore_steps": 10, "n_queries": 2}))
    x, y = task.train_batch(0, 2)
    assert x.shape == (2, 2 * 10 + 1 + 4, task.d_input) and y.shape[:2] == x.shape[:2]
    assert task.seq_len == x.shape[1]           # the length state sizes are counted at (a KV cache's)
    labels = y[y[..., 0] != IGNORE]
    perfect = torch.nn.functional.one_hot(labels[:, 0], 4).float() * 10
    m = task.metrics(perfect, labels)
    assert m["accuracy"] == 1.0 and all(v == 1.0 for k, v in m.items() if k.startswith("acc_"))


def test_tracker_plan_in_a_layout_explored_once_reaches_the_goal():
    from onebigstate.tracker import CircuitTracker
    layout = make_layout(GridConfig().env_id, 4)
    states, acts = random_walk(layout, 200, np.random.default_rng(0))
    place = {s: i for i, s in enumerate(dict.fromkeys(states))}
    tr = CircuitTracker(actions=range(3))
    tr.observe_actions([[place[s]] for s in states], acts)
    found = 0
    for goal in states[::10]:
        plan = tr.plan(tr.lookup([place[states[0]]]), tr.lookup([place[goal]]))
        assert plan is not None  # the walk itself connects its start to every place it visited
        s = states[0]
        for a in plan.actions:
            s = layout.step(s, a)
        assert s == goal
        assert len(plan) >= layout.shortest_path(states[0], goal)
        found += 1
    assert found == len(states[::10])
    with pytest.raises(ValueError, match="unknown action 7"):
        tr.remember(0, 7, 1)
