"""Action and outcome in a MiniGrid world: layouts, an exploring agent, and its streams.

Layouts come from MiniGrid (``MiniGrid-SimpleCrossingS9N2-v0`` by default: a 9 x 9 room whose
interior 7 x 7 is crossed by walls with gaps, a different layout per seed), run offline with
seeded resets. The agent's moves follow MiniGrid's rules for these layouts (``left``/``right``
turn, ``forward`` moves unless the cell in front is a wall), simulated here on the layout's
cells so a stream costs microseconds per step; ``tests/test_gridworld.py`` checks the
simulation against ``env.step`` step by step.

A **stream** interleaves observations and actions, so an action's circuit is active when the
observation that follows it arrives (the outcome gets wired to the action)::

    obs_0, act_0, obs_1, act_1, ..., obs_L,   then Q queries:  qobs_1, qact_1, ..., qobs_Q, qact_Q

An observation is what the agent knows of its place: its position ``(x, y)``, its direction,
and what is in front of it (empty, wall, goal, other). Labels sit on action steps: the class
of what is in front of the agent *after* the action (the salient part of the next
observation). A query repeats the observation of a place where an action was taken exactly
once during the exploration, then that action ("what happens if I do X here?"): only the
stream has seen the answer, since every stream has its own layout.

Per-step features ``[F]`` (F = 3 + 2 * inner + 4 + N_FRONT + 3):
``[is_obs, is_action, is_query, x one-hot, y one-hot, dir one-hot, front one-hot, action one-hot]``.

Label categories (``labels[..., 1]``): ``NOVEL`` (an exploration action never taken at this
place before), ``SEEN`` (taken there before in this stream), ``QUERY``.

Worked example (a 9 x 9 layout, so positions 1..7 are one-hot over 7 cells): a stream of
``explore_steps=2, n_queries=1`` has 2 * 2 + 1 + 2 = 7 steps; step 1 is ``act_0``, labelled
with the front class of ``obs_1``; step 6 is the query's action, labelled with the front
class after doing it at the queried place.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pydantic import Field

from onebigstate.config import StrictModel

LEFT, RIGHT, FORWARD = 0, 1, 2
ACTION_NAMES = ("left", "right", "forward")
N_ACTIONS = 3
# MiniGrid direction 0 = east (+x), 1 = south (+y), 2 = west, 3 = north.
DIR_VEC = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])
EMPTY, WALL, GOAL, OTHER = 0, 1, 2, 3
FRONT_NAMES = ("empty", "wall", "goal", "other")
N_FRONT = 4
IGNORE = -100
NOVEL, SEEN, QUERY = 1, 2, 3


class GridConfig(StrictModel):
    """The world and the exploring agent."""

    env_id: str = Field("MiniGrid-SimpleCrossingS9N2-v0", description="MiniGrid env giving a layout per seed")
    explore_steps: int = Field(48, ge=1, description="L, actions of the exploration walk")
    n_queries: int = Field(8, ge=0, description="Q, 'what happens if I do X here' questions at the end")
    p_forward: float = Field(0.5, ge=0.0, le=1.0, description="probability that the walk steps forward")


@dataclass(frozen=True)
class Layout:
    """One layout's cells: ``cells[x, y]`` in FRONT classes; the agent's start state."""

    cells: np.ndarray
    start: tuple[int, int, int]

    @property
    def size(self) -> int:
        return self.cells.shape[0]

    def front(self, x: int, y: int, d: int) -> int:
        fx, fy = x + DIR_VEC[d, 0], y + DIR_VEC[d, 1]
        return int(self.cells[fx, fy])

    def step(self, state: tuple[int, int, int], action: int) -> tuple[int, int, int]:
        """MiniGrid's move rule for walls-and-goal layouts."""
        x, y, d = state
        if action == LEFT:
            return x, y, (d - 1) % 4
        if action == RIGHT:
            return x, y, (d + 1) % 4
        if action != FORWARD:
            raise ValueError(f"unknown action {action!r}; known: {dict(enumerate(ACTION_NAMES))}")
        if self.cells[x + DIR_VEC[d, 0], y + DIR_VEC[d, 1]] in (EMPTY, GOAL):
            return x + int(DIR_VEC[d, 0]), y + int(DIR_VEC[d, 1]), d
        return x, y, d

    def free_states(self) -> list[tuple[int, int, int]]:
        xs, ys = np.nonzero((self.cells == EMPTY) | (self.cells == GOAL))
        return [(int(x), int(y), d) for x, y in zip(xs, ys) for d in range(4)]

    def shortest_path(self, start: tuple[int, int, int], goal: tuple[int, int, int]) -> int | None:
        """Fewest actions from ``start`` to ``goal`` (breadth-first over the true dynamics)."""
        from collections import deque
        seen, queue = {start: 0}, deque([start])
        while queue:
            s = queue.popleft()
            if s == goal:
                return seen[s]
            for a in range(N_ACTIONS):
                n = self.step(s, a)
                if n not in seen:
                    seen[n] = seen[s] + 1
                    queue.append(n)
        return None


def _front_class(obj) -> int:
    if obj is None:
        return EMPTY
    return {"wall": WALL, "goal": GOAL}.get(obj.type, OTHER)


@lru_cache(maxsize=4096)
def make_layout(env_id: str, seed: int) -> Layout:
    """The layout MiniGrid's ``env_id`` builds for ``reset(seed=seed)`` (cached)."""
    env = _env(env_id)
    env.reset(seed=seed)
    W, H = env.width, env.height
    cells = np.array([[_front_class(env.grid.get(x, y)) for y in range(H)] for x in range(W)], dtype=np.int64)
    return Layout(cells, (int(env.agent_pos[0]), int(env.agent_pos[1]), int(env.agent_dir)))


@lru_cache(maxsize=8)
def _env(env_id: str):
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers the MiniGrid envs with gymnasium)
    return gym.make(env_id).unwrapped


def feature_dim(size: int) -> int:
    inner = size - 2
    return 3 + 2 * inner + 4 + N_FRONT + N_ACTIONS


def obs_features(layout: Layout, state: tuple[int, int, int], query: bool = False) -> np.ndarray:
    """Features ``[F]`` of an observation step."""
    inner = layout.size - 2
    f = np.zeros(feature_dim(layout.size), dtype=np.float32)
    x, y, d = state
    f[0] = 1.0
    f[2] = float(query)
    o = 3
    f[o + x - 1] = 1.0
    f[o + inner + y - 1] = 1.0
    f[o + 2 * inner + d] = 1.0
    f[o + 2 * inner + 4 + layout.front(x, y, d)] = 1.0
    return f


def action_features(size: int, action: int, query: bool = False) -> np.ndarray:
    f = np.zeros(feature_dim(size), dtype=np.float32)
    f[1] = 1.0
    f[2] = float(query)
    f[-N_ACTIONS + action] = 1.0
    return f


def random_walk(layout: Layout, steps: int, rng: np.random.Generator, p_forward: float = 0.5,
                start: tuple[int, int, int] | None = None) -> tuple[list[tuple[int, int, int]], list[int]]:
    """(states [steps + 1], actions [steps]) of a random exploring walk."""
    p_turn = (1.0 - p_forward) / 2
    acts = rng.choice(N_ACTIONS, size=steps, p=[p_turn, p_turn, p_forward]).tolist()
    states = [start or layout.start]
    for a in acts:
        states.append(layout.step(states[-1], a))
    return states, acts


@dataclass
class Episode:
    """One stream with its ground truth (for the tracker experiments)."""

    layout: Layout
    states: list[tuple[int, int, int]]
    actions: list[int]
    features: np.ndarray   # [T, F]
    labels: np.ndarray     # [T, 2] (front class or IGNORE, category)
    continuous: np.ndarray  # [T] bool: exploration observations


def make_episode(cfg: GridConfig, layout_seed: int, walk_seed: int) -> Episode:
    """One stream in the layout of ``layout_seed``, walked with ``walk_seed``."""
    layout = make_layout(cfg.env_id, layout_seed)
    rng = np.random.default_rng(walk_seed)
    states, acts = random_walk(layout, cfg.explore_steps, rng, cfg.p_forward)
    size = layout.size
    feats, labels, cont = [], [], []
    tried: dict[tuple, int] = {}
    for s, a, s_next in zip(states[:-1], acts, states[1:]):
        feats.append(obs_features(layout, s))
        labels.append((IGNORE, 0))
        cont.append(True)
        feats.append(action_features(size, a))
        labels.append((layout.front(*s_next), SEEN if (s, a) in tried else NOVEL))
        cont.append(False)
        tried[(s, a)] = tried.get((s, a), 0) + 1
    feats.append(obs_features(layout, states[-1]))
    labels.append((IGNORE, 0))
    cont.append(True)
    once = [k for k, n in tried.items() if n == 1]
    if cfg.n_queries:
        picks = rng.permutation(len(once))[: cfg.n_queries] if once else []
        for i in range(cfg.n_queries):
            if i < len(picks):
                s, a = once[picks[i]]
                feats += [obs_features(layout, s, query=True), action_features(size, a, query=True)]
                labels += [(IGNORE, 0), (layout.front(*layout.step(s, a)), QUERY)]
            else:
                # fewer once-taken actions than queries: pad with an unscored repeat of the last place
                feats += [obs_features(layout, states[-1], query=True), action_features(size, LEFT, query=True)]
                labels += [(IGNORE, 0), (IGNORE, 0)]
            cont += [False, False]
    return Episode(layout, states, acts, np.stack(feats), np.array(labels, dtype=np.int64), np.array(cont))


def generate_grid(cfg: GridConfig, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` streams: (features [n, T, F], labels [n, T, 2], continuous [n, T]), layouts and
    walks drawn from ``seed``."""
    ss = np.random.SeedSequence(seed).generate_state(2 * n, dtype=np.uint32).reshape(n, 2)
    eps = [make_episode(cfg, int(a), int(b)) for a, b in ss]
    return (np.stack([e.features for e in eps]), np.stack([e.labels for e in eps]),
            np.stack([e.continuous for e in eps]))
