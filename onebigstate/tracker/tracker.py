"""The circuit tracker (SPEC.md part 9): a separate model that watches which circuits of the
big state fire and in what order, learns that order, calls circuits in order (replay,
prediction, planning), and writes what it replays back into the state (consolidation).

Axis letters: ``B`` streams, ``T`` steps, ``K`` circuit slots (k_max), ``M`` active nodes.

**Identifying circuits.** The circuit of step ``t`` of stream ``b`` is the first
``k_hard[b, t]`` entries of ``OBSLayer.last_stats.circuit_idx[b, t]``. A circuit is known by
its node set: with ``min_overlap=1.0`` two steps fire the same circuit when their node sets
are equal (a hash of the sorted set); with ``min_overlap < 1`` a node set joins the known
circuit it overlaps most if their Jaccard overlap is at least ``min_overlap`` (so a circuit
that fired with one node more or less is still recognised). Ids are small integers in order
of first firing.

**Learning the order.** A variable-order Markov model: for every context of the last
``1..order`` circuit ids it counts which circuit fired next. Prediction uses the longest
context seen before (back-off), the most frequent successor, ties broken by the most recent
firing. A route walked once is stored by its transitions; contexts longer than one step
tell apart the continuations of a place the route passed twice.

A second, optional order model is a small GRU over learned circuit embeddings
(:meth:`CircuitTracker.fit_gru`), trained by next-circuit cross-entropy on the recorded
histories; ``replay(..., model="gru")`` then calls circuits by its greedy predictions.

**Action and outcome.** ``remember(place, action, outcome)`` (or ``observe_actions``) stores
that doing ``action`` at circuit ``place`` was followed by circuit ``outcome``; ``plan``
searches these remembered transitions breadth-first for the shortest chain of actions from
a start circuit to a goal circuit.

**Consolidation.** ``consolidate(state, sequence)`` writes a sequence of circuits back into
``S`` chain-style, as a continuous input writes ``S[I_{t-1}, I_t]``: for each consecutive
pair ``(a, b)`` it adds ``strength`` to every entry ``S[i, j]``, ``i`` in ``a``'s nodes and
``j`` in ``b``'s (through the store's ``add_``, marking the entries written). Nothing else
changes. Reading ``a``'s rows afterwards spreads more activation onto ``b``.

    tracker = CircuitTracker(order=3)
    ids = tracker.observe_stats(layer.last_stats, stream=0)     # record one stream's firing order
    tracker.replay(ids[0], steps=len(ids) - 1)                   # -> ids[1:] for a route walked once
    tracker.consolidate(state, ids, strength=0.05)

A hand-checkable case (circuits given as node sets):

    >>> tr = CircuitTracker(order=2, actions=["left", "right"])
    >>> tr.observe([torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])])
    [0, 1, 2]
    >>> tr.replay(0, steps=5)          # the chain ends after the last circuit
    [1, 2]
    >>> tr.remember(0, "left", 2); tr.remember(2, "right", 1)
    >>> tr.plan(0, 1).actions
    ['left', 'right']
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from onebigstate.kernels.step import flat_positions


class TrackerError(ValueError):
    """A cue, circuit or action the tracker does not know, or an ill-formed request."""


@dataclass
class Plan:
    """A chain of remembered transitions: ``places[0] --actions[0]--> places[1] ...``."""

    actions: list = field(default_factory=list)
    places: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.actions)


class OrderGRU(nn.Module):
    """Next-circuit model: embedding -> GRU -> logits over the circuits known when fitted."""

    def __init__(self, n_circuits: int, hidden: int):
        super().__init__()
        self.n_circuits = n_circuits
        self.embed = nn.Embedding(n_circuits, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_circuits)

    def forward(self, ids: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, T] long -> (logits [B, T, C], hidden)."""
        y, h = self.gru(self.embed(ids), h)
        return self.head(y), h


class CircuitTracker:
    """Records circuit firing order, learns it, replays, plans and consolidates.

    ``order``: longest context of the Markov model. ``min_overlap``: Jaccard overlap at which a
    node set counts as a known circuit (1.0: exact). ``actions``: the allowed actions (any
    hashable values); ``None`` accepts any action.
    """

    def __init__(self, order: int = 3, min_overlap: float = 1.0, actions: Iterable[Hashable] | None = None):
        if order < 1:
            raise TrackerError(f"order must be >= 1, got {order}")
        if not 0.0 < min_overlap <= 1.0:
            raise TrackerError(f"min_overlap must be in (0, 1], got {min_overlap}")
        self.order, self.min_overlap = order, min_overlap
        self.actions = None if actions is None else list(actions)
        self._sets: list[frozenset[int]] = []
        self._by_set: dict[frozenset[int], int] = {}
        self.fire_counts: Counter[int] = Counter()
        self.labels: dict[int, Hashable] = {}
        self._next: dict[tuple[int, ...], Counter[int]] = {}
        self._last_seen: dict[tuple[tuple[int, ...], int], int] = {}
        self._clock = 0
        self._outcomes: dict[tuple[int, Hashable], Counter[int]] = {}
        self.history: list[list[int]] = []
        self.gru: OrderGRU | None = None

    # ---- identifying circuits ------------------------------------------------------------
    @property
    def n_circuits(self) -> int:
        return len(self._sets)

    def nodes(self, cid: int) -> torch.Tensor:
        """The node set of circuit ``cid`` (sorted, long)."""
        self._check_id(cid)
        return torch.tensor(sorted(self._sets[cid]), dtype=torch.long)

    def identify(self, nodes: torch.Tensor | Iterable[int], add: bool = True) -> int:
        """The id of the circuit with these nodes; a new id when unknown and ``add``."""
        key = self._node_set(nodes)
        cid = self._by_set.get(key)
        if cid is None and self.min_overlap < 1.0:
            best, best_ov = None, 0.0
            for i, s in enumerate(self._sets):
                ov = len(s & key) / len(s | key)
                if ov > best_ov:
                    best, best_ov = i, ov
            if best is not None and best_ov >= self.min_overlap:
                cid = best
        if cid is None:
            if not add:
                raise TrackerError(f"no known circuit has the nodes {sorted(key)} "
                                   f"(min_overlap={self.min_overlap}, {self.n_circuits} circuits known)")
            cid = len(self._sets)
            self._sets.append(key)
            self._by_set[key] = cid
        return cid

    def lookup(self, nodes: torch.Tensor | Iterable[int]) -> int:
        """The id of a known circuit; :class:`TrackerError` if none matches."""
        return self.identify(nodes, add=False)

    @staticmethod
    def circuits_of(stats, stream: int = 0, steps: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Node sets of the circuits that fired in ``stream`` at ``steps`` (default: all), from an
        ``OBSStats`` (``OBSLayer.last_stats``): the first ``k_hard`` of ``circuit_idx``."""
        B, T = stats.k_hard.shape
        if not 0 <= stream < B:
            raise TrackerError(f"stream {stream} out of range: the stats hold {B} streams")
        steps = range(T) if steps is None else steps
        out = []
        for t in steps:
            if not -T <= t < T:
                raise TrackerError(f"step {t} out of range: the stats hold {T} steps")
            out.append(stats.circuit_idx[stream, t, : int(stats.k_hard[stream, t])].detach().cpu())
        return out

    # ---- recording and learning the order ------------------------------------------------
    def observe(self, circuits: Sequence, labels: Sequence | None = None) -> list[int]:
        """Record one stream's firing order (circuit ids or node sets) and learn from it.

        ``labels`` (optional, one per step) name what each circuit stood for (e.g. a place),
        kept per circuit id (the latest wins). Returns the circuit ids.
        """
        ids = [c if isinstance(c, int) else self.identify(c) for c in circuits]
        for c in ids:
            self._check_id(c)
        if labels is not None:
            if len(labels) != len(ids):
                raise TrackerError(f"got {len(labels)} labels for {len(ids)} circuits")
            self.labels.update(zip(ids, labels))
        self.fire_counts.update(ids)
        for t in range(1, len(ids)):
            self._clock += 1
            for n in range(1, self.order + 1):
                if t - n < 0:
                    break
                ctx = tuple(ids[t - n:t])
                self._next.setdefault(ctx, Counter())[ids[t]] += 1
                self._last_seen[(ctx, ids[t])] = self._clock
        self.history.append(ids)
        return ids

    def observe_stats(self, stats, stream: int = 0, steps: Sequence[int] | None = None,
                      labels: Sequence | None = None) -> list[int]:
        """:meth:`observe` the circuits of ``stream`` (at ``steps``) in an ``OBSStats``."""
        return self.observe(self.circuits_of(stats, stream, steps), labels)

    def successors(self, context: Sequence[int]) -> Counter[int]:
        """Counts of what followed the longest known suffix of ``context`` (empty if none)."""
        ctx = tuple(self._as_id(c) for c in context)
        if not ctx:
            raise TrackerError("the context is empty: give at least one circuit")
        for n in range(min(self.order, len(ctx)), 0, -1):
            found = self._next.get(ctx[-n:])
            if found:
                return found
        return Counter()

    def predict_next(self, context) -> tuple[int, float] | None:
        """(most likely next circuit, its probability) after ``context`` (an id, a node set or
        a sequence of ids, oldest first); ``None`` when nothing ever followed it."""
        ctx = self._context(context)
        counts = self.successors(ctx)
        if not counts:
            return None
        key = tuple(ctx[-min(self.order, len(ctx)):])
        # the context actually used is the longest suffix present; recency among ties
        for n in range(min(self.order, len(ctx)), 0, -1):
            if tuple(ctx[-n:]) in self._next:
                key = tuple(ctx[-n:])
                break
        best = max(counts, key=lambda c: (counts[c], self._last_seen.get((key, c), 0)))
        return best, counts[best] / sum(counts.values())

    def fit_gru(self, hidden: int = 32, steps: int = 300, lr: float = 3e-2, seed: int = 0,
                tol: float = 0.05) -> float:
        """Train the GRU order model on the recorded histories (full-batch Adam, at most
        ``steps`` steps, stopping when the loss falls below ``tol``); returns the final loss.
        Uses its own generator seed, not the global RNG."""
        seqs = [h for h in self.history if len(h) >= 2]
        if not seqs:
            raise TrackerError("fit_gru needs a recorded history of at least two circuits (call observe first)")
        gen = torch.Generator().manual_seed(seed)
        model = OrderGRU(self.n_circuits, hidden)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / p.shape[-1] ** 0.5))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        loss_value = float("inf")
        for _ in range(steps):
            loss = sum(F.cross_entropy(model(torch.tensor(h[:-1]).unsqueeze(0))[0][0], torch.tensor(h[1:]))
                       for h in seqs) / len(seqs)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_value = loss.item()
            if loss_value < tol:
                break
        self.gru = model.eval()
        return loss_value

    def replay(self, cue, steps: int, model: str = "markov") -> list[int]:
        """Call circuits in the learned order from ``cue`` (an id, a node set, or a sequence of
        ids as context): the next ``steps`` circuit ids, fewer if the chain ends.
        ``model="gru"`` uses the GRU order model (see :meth:`fit_gru`), which never ends a chain."""
        if not isinstance(steps, int) or steps < 0:
            raise TrackerError(f"steps must be a non-negative int, got {steps!r}")
        if model not in ("markov", "gru"):
            raise TrackerError(f"unknown order model {model!r}; known: 'markov', 'gru'")
        ctx = self._context(cue)
        if model == "gru":
            return self._replay_gru(ctx, steps)
        out: list[int] = []
        for _ in range(steps):
            nxt = self.predict_next(ctx)
            if nxt is None:
                break
            ctx.append(nxt[0])
            out.append(nxt[0])
        return out

    @torch.no_grad()
    def _replay_gru(self, ctx: list[int], steps: int) -> list[int]:
        if self.gru is None:
            raise TrackerError("no GRU order model: call fit_gru() first")
        if max(ctx) >= self.gru.n_circuits:
            raise TrackerError(f"circuit {max(ctx)} was first seen after the GRU was fitted "
                               f"(it knows ids 0..{self.gru.n_circuits - 1}); call fit_gru() again")
        logits, h = self.gru(torch.tensor(ctx).unsqueeze(0))
        out: list[int] = []
        for _ in range(steps):
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            logits, h = self.gru(torch.tensor([[nxt]]), h)
        return out

    # ---- action and outcome --------------------------------------------------------------
    def remember(self, place, action: Hashable, outcome) -> None:
        """Doing ``action`` at circuit ``place`` was followed by circuit ``outcome``."""
        self._check_action(action)
        p, o = self._as_id(place, add=True), self._as_id(outcome, add=True)
        self._outcomes.setdefault((p, action), Counter())[o] += 1

    def observe_actions(self, places: Sequence, actions: Sequence[Hashable]) -> list[int]:
        """Remember a walk: ``places[i] --actions[i]--> places[i+1]``; returns the place ids."""
        if len(places) != len(actions) + 1:
            raise TrackerError(f"a walk of {len(actions)} actions visits {len(actions) + 1} places, "
                               f"got {len(places)}")
        ids = [self._as_id(p, add=True) for p in places]
        for i, a in enumerate(actions):
            self.remember(ids[i], a, ids[i + 1])
        return ids

    def outcome(self, place, action: Hashable) -> int | None:
        """The circuit most often seen after ``action`` at ``place`` (``None`` if never tried there)."""
        self._check_action(action)
        counts = self._outcomes.get((self._as_id(place), action))
        return None if not counts else counts.most_common(1)[0][0]

    def plan(self, start, goal, max_steps: int | None = None) -> Plan | None:
        """The shortest chain of remembered (place, action) -> outcome transitions from
        ``start`` to ``goal`` (a circuit, or a collection of circuit ids any of which will
        do); ``None`` when the remembered transitions do not connect them."""
        s = self._as_id(start)
        goals = ({self._as_id(g) for g in goal} if isinstance(goal, (set, frozenset, list, tuple))
                 else {self._as_id(goal)})
        if not goals:
            raise TrackerError("the goal set is empty")
        moves: dict[int, list[tuple[Hashable, int]]] = {}
        for (p, a), counts in self._outcomes.items():
            moves.setdefault(p, []).append((a, counts.most_common(1)[0][0]))
        prev: dict[int, tuple[int, Hashable] | None] = {s: None}
        queue, depth = deque([s]), {s: 0}
        while queue:
            p = queue.popleft()
            if p in goals:
                actions, places = [], [p]
                while prev[p] is not None:
                    p, a = prev[p]
                    actions.append(a)
                    places.append(p)
                return Plan(actions[::-1], places[::-1])
            if max_steps is not None and depth[p] >= max_steps:
                continue
            for a, o in moves.get(p, []):
                if o not in prev:
                    prev[o] = (p, a)
                    depth[o] = depth[p] + 1
                    queue.append(o)
        return None

    # ---- consolidation -------------------------------------------------------------------
    def consolidate(self, state, sequence: Sequence, strength: float = 0.05, stream: int = 0) -> torch.Tensor:
        """Write ``sequence`` (circuit ids or node sets) back into ``state`` chain-style: for each
        consecutive pair (a, b), ``S[i, j] += strength`` for i in a's nodes, j in b's nodes, in
        stream ``stream``. Returns the flat positions written ``[W]`` (duplicates accumulate)."""
        ids = [self._as_id(c) for c in sequence]
        if len(ids) < 2:
            raise TrackerError(f"consolidate needs at least two circuits, got {len(ids)}")
        if not 0 <= stream < state.batch:
            raise TrackerError(f"stream {stream} out of range: the state holds {state.batch} streams")
        N = state.n_nodes
        pos = []
        for a, b in zip(ids[:-1], ids[1:]):
            rows, cols = self.nodes(a), self.nodes(b)
            if int(max(rows.max(), cols.max())) >= N:
                raise TrackerError(f"circuit nodes reach {int(max(rows.max(), cols.max()))} but the state has N={N}")
            r = rows.view(1, -1, 1).expand(1, -1, cols.numel())
            c = cols.view(1, 1, -1).expand(1, rows.numel(), -1)
            pos.append((flat_positions(r, c, N) + stream * N * N).reshape(-1))
        pos = torch.cat(pos).to(state.as_dense().device)
        vals = torch.full(pos.shape, float(strength), dtype=state.dtype, device=pos.device)
        with torch.no_grad():
            state.add_(pos, vals)
            state.mark_written(pos, torch.ones_like(pos, dtype=torch.bool))
        return pos

    # ---- helpers -------------------------------------------------------------------------
    @staticmethod
    def _node_set(nodes) -> frozenset[int]:
        if isinstance(nodes, torch.Tensor):
            if nodes.dtype.is_floating_point or nodes.dim() != 1:
                raise TrackerError(f"a circuit is a 1-D integer tensor of node ids, got dtype {nodes.dtype} "
                                   f"shape {tuple(nodes.shape)}")
            nodes = nodes.tolist()
        s = frozenset(int(n) for n in nodes)
        if not s:
            raise TrackerError("a circuit needs at least one node")
        if min(s) < 0:
            raise TrackerError(f"node ids must be >= 0, got {min(s)}")
        return s

    def _check_id(self, cid) -> None:
        if not isinstance(cid, int) or not 0 <= cid < self.n_circuits:
            raise TrackerError(f"unknown circuit {cid!r}: {self.n_circuits} circuits are known "
                               f"(ids 0..{self.n_circuits - 1})")

    def _as_id(self, c, add: bool = False) -> int:
        if isinstance(c, bool):
            raise TrackerError(f"a circuit is an int id or a node set, got {c!r}")
        if isinstance(c, int):
            self._check_id(c)
            return c
        return self.identify(c, add=add)

    def _context(self, cue) -> list[int]:
        if isinstance(cue, (list, tuple)):
            if not cue:
                raise TrackerError("the cue is empty: give a circuit id, a node set, or a non-empty sequence of ids")
            return [self._as_id(c) for c in cue]
        return [self._as_id(cue)]

    def _check_action(self, action) -> None:
        if self.actions is not None and action not in self.actions:
            raise TrackerError(f"unknown action {action!r}; known actions: {self.actions}")
