"""The circuit tracker on hand-checkable cases: replay, prediction, planning, consolidation, errors."""
from __future__ import annotations

import pytest
import torch

from onebigstate import OBSConfig, OBSLayer
from onebigstate.model.state import DenseState
from onebigstate.tracker import CircuitTracker, TrackerError

# Five circuits of three nodes each (disjoint), as node sets.
C = [torch.tensor([3 * i, 3 * i + 1, 3 * i + 2]) for i in range(5)]


def test_replay_of_a_stored_sequence_returns_it_in_order():
    tr = CircuitTracker(order=2)
    ids = tr.observe([C[0], C[1], C[2], C[3], C[4]])
    assert ids == [0, 1, 2, 3, 4]
    assert tr.replay(0, steps=4) == [1, 2, 3, 4]
    assert tr.replay(C[2], steps=10) == [3, 4]          # the chain ends after the last circuit
    assert tr.replay(torch.tensor([7, 6, 8]), steps=1) == [3]  # the same node set in another order


def test_longer_context_tells_apart_a_place_visited_twice():
    # route A B C B D: from B, the next circuit is C the first time and D the second
    tr = CircuitTracker(order=2)
    tr.observe([C[0], C[1], C[2], C[1], C[3]])
    assert tr.replay(0, steps=4) == [1, 2, 1, 3]
    first = CircuitTracker(order=1)
    first.observe([C[0], C[1], C[2], C[1], C[3]])
    # a first-order model follows the more recent of the two equally counted successors
    assert first.replay(0, steps=4) == [1, 3]


def test_predict_next_counts_and_probability():
    tr = CircuitTracker(order=1)
    tr.observe([C[0], C[1], C[0], C[1], C[0], C[2]])
    assert tr.predict_next(0) == (1, pytest.approx(2 / 3))
    assert tr.predict_next(4 - 2) is None               # nothing ever followed circuit 2


def test_overlap_matching_recognises_a_circuit_with_a_node_more():
    tr = CircuitTracker(min_overlap=0.5)
    a = tr.identify(torch.tensor([1, 2, 3, 4]))
    assert tr.identify(torch.tensor([1, 2, 3, 4, 9])) == a
    assert tr.identify(torch.tensor([7, 8, 9])) != a
    exact = CircuitTracker()
    assert exact.identify([1, 2, 3, 4]) != exact.identify([1, 2, 3, 4, 9])


def test_plan_finds_the_shortest_path_on_a_tiny_graph():
    #   0 -r-> 1 -r-> 2
    #   |             ^
    #   d             u
    #   v             |
    #   3 -----r----> 4     and a dead end 1 -d-> 5
    tr = CircuitTracker(actions=["r", "d", "u"])
    for cid in range(6):
        tr.identify([10 * cid])
    for p, a, o in [(0, "r", 1), (1, "r", 2), (0, "d", 3), (3, "r", 4), (4, "u", 2), (1, "d", 5)]:
        tr.remember(p, a, o)
    plan = tr.plan(0, 2)
    assert plan.actions == ["r", "r"] and plan.places == [0, 1, 2]
    assert tr.plan(3, 2).actions == ["r", "u"]
    assert tr.plan(5, 0) is None                         # nothing remembered leaves 5
    assert tr.plan(0, {4, 5}).places == [0, 1, 5]        # any goal of a set
    assert tr.plan(0, 2, max_steps=1) is None
    assert tr.outcome(0, "d") == 3 and tr.outcome(2, "r") is None


def test_observe_actions_remembers_a_walk():
    tr = CircuitTracker(actions=[0, 1, 2])
    ids = tr.observe_actions([C[0], C[1], C[2]], [2, 0])
    assert tr.outcome(ids[0], 2) == ids[1] and tr.outcome(ids[1], 0) == ids[2]
    assert tr.plan(ids[0], ids[2]).actions == [2, 0]


def test_consolidate_changes_only_the_expected_entries():
    torch.manual_seed(0)
    S = torch.randn(2, 16, 16)
    state = DenseState(S.clone())
    tr = CircuitTracker()
    a, b, c = tr.observe([torch.tensor([1, 2]), torch.tensor([5]), torch.tensor([7, 9])])
    pos = tr.consolidate(state, [a, b, c], strength=0.5, stream=1)
    expected = S.clone()
    for i in (1, 2):
        expected[1, i, 5] += 0.5
    for j in (7, 9):
        expected[1, 5, j] += 0.5
    assert torch.equal(state.S, expected)
    assert pos.numel() == 4
    assert int(state.entries_written()[1]) == 4 and int(state.entries_written()[0]) == 0


def test_consolidate_raises_recall_through_spreading_activation():
    # after consolidation, reading the first circuit's rows activates the second circuit more
    state = DenseState(torch.zeros(1, 12, 12))
    tr = CircuitTracker()
    a, b = tr.observe([torch.tensor([0, 1]), torch.tensor([4, 5])])
    before = state.rows(tr.nodes(a).view(1, -1)).sum(1)[0, [4, 5]]
    tr.consolidate(state, [a, b], strength=0.1)
    after = state.rows(tr.nodes(a).view(1, -1)).sum(1)[0, [4, 5]]
    assert torch.all(after - before > 0.19)


def test_observe_stats_reads_the_circuits_of_an_obs_layer():
    torch.manual_seed(0)
    layer = OBSLayer(OBSConfig(d_model=8, n_nodes=32, d_key=8, d_value=8, d_hidden=8, d_write=8,
                               k_min=2, k_max=4, m_active=4)).eval()
    x = torch.randn(1, 3, 8)
    x = torch.cat([x, x], 1)                             # the same three inputs twice
    layer(x)
    st = layer.last_stats
    tr = CircuitTracker(min_overlap=0.5)
    ids = tr.observe_stats(st, stream=0)
    assert len(ids) == 6
    for t, cid in enumerate(ids):
        k = int(st.k_hard[0, t])
        assert set(st.circuit_idx[0, t, :k].tolist()) & set(tr.nodes(cid).tolist())
    # the same input addresses the same top candidates, so its circuit is recognised
    assert ids[3:] == ids[:3]


@pytest.mark.parametrize("call, match", [
    (lambda tr: tr.replay(7, 3), "unknown circuit 7"),
    (lambda tr: tr.replay(torch.tensor([99, 98]), 3), "no known circuit has the nodes"),
    (lambda tr: tr.replay([], 3), "cue is empty"),
    (lambda tr: tr.replay(0, -1), "non-negative"),
    (lambda tr: tr.replay(torch.tensor([0.5]), 1), "integer tensor"),
    (lambda tr: tr.outcome(0, "jump"), "unknown action 'jump'"),
    (lambda tr: tr.remember(0, "fly", 1), "unknown action 'fly'"),
    (lambda tr: tr.plan(0, 42), "unknown circuit 42"),
    (lambda tr: tr.observe_actions([0, 1], ["l", "r"]), "visits 3 places"),
    (lambda tr: tr.consolidate(DenseState(torch.zeros(1, 4, 4)), [0, 1]), "N=4"),
    (lambda tr: tr.consolidate(DenseState(torch.zeros(1, 16, 16)), [0]), "at least two"),
    (lambda tr: tr.consolidate(DenseState(torch.zeros(1, 16, 16)), [0, 1], stream=3), "stream 3"),
], ids=["unknown-id", "unknown-nodes", "empty-cue", "negative-steps", "float-nodes", "unknown-action",
        "unknown-action-remember", "unknown-goal", "walk-length", "nodes-beyond-N", "short-sequence",
        "bad-stream"])
def test_bad_cues_and_unknown_actions_give_clear_errors(call, match):
    tr = CircuitTracker(actions=["l", "r"])
    tr.observe([C[0], C[1], C[2]])
    with pytest.raises(TrackerError, match=match):
        call(tr)


def test_bad_tracker_settings():
    with pytest.raises(TrackerError, match="order"):
        CircuitTracker(order=0)
    with pytest.raises(TrackerError, match="min_overlap"):
        CircuitTracker(min_overlap=0.0)


def test_module_docstring_example_runs():
    import doctest

    import onebigstate.tracker.tracker as mod
    assert doctest.testmod(mod).failed == 0


def test_gru_order_model_learns_a_stored_sequence():
    tr = CircuitTracker(order=1)
    route = [0, 1, 2, 1, 3, 4, 2, 5]
    tr.observe([torch.tensor([10 + c]) for c in route])
    # the Markov model with one step of context cannot tell the two continuations of 1 and 2 apart
    assert tr.replay(0, steps=7) != route[1:]
    loss = tr.fit_gru(hidden=16, steps=300)
    assert loss < 0.05
    assert tr.replay(0, steps=7, model="gru") == route[1:]
    tr.identify(torch.tensor([99]))
    with pytest.raises(TrackerError, match="after the GRU was fitted"):
        tr.replay(6, steps=1, model="gru")
    with pytest.raises(TrackerError, match="unknown order model"):
        tr.replay(0, steps=1, model="lstm")
    with pytest.raises(TrackerError, match="fit_gru"):
        fresh = CircuitTracker()
        fresh.identify([1])
        fresh.replay(0, 1, model="gru")
