"""The sparse state backend (hash-generated S_0 plus written entries) against the dense one.

The dense backend with ``state_init: hash`` starts from the same S_0, so the two must give the
same outputs, gradients, final state and written-entry counts through the reversible scan;
the store itself is checked against a dense mirror, through checkpoints, and at an N whose
dense state would not fit in memory.
"""
from __future__ import annotations

import pytest
import torch

from onebigstate import OBSConfig, OBSLayer
from onebigstate.model import sparse_state
from onebigstate.model.sparse_state import SparseState, hashed_initial_state
from onebigstate.model.state import DenseState, WriteSetGradient
from onebigstate.training.checkpoint import states_from_tensors, states_to_tensors
from tests.helpers import rel_err
from tests.test_obs_kernels import CASES, FAST_BACKENDS, run

SPARSE_CASES = ["odd_T", "continuous_mixed", "carried_state", "reverse_assoc", "row_norm", "circuit_direct",
                "state_bound",
                "costs_and_gaussian_reg", "k_min_zero", "active_persist"]


def _with(case: dict, **cfg) -> dict:
    return {**case, "cfg": {**case.get("cfg", {}), **cfg}}


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("name", SPARSE_CASES)
def test_sparse_backend_matches_dense_values_and_gradients(name, backend):
    case = CASES[name]
    y_d, dx_d, g_d, s_d, st_d = run("reference", _with(case, state_backend="dense", state_init="hash"))
    y_s, dx_s, g_s, s_s, st_s = run(backend, _with(case, state_backend="sparse"))
    assert isinstance(s_s, SparseState) and isinstance(s_d, DenseState)
    assert torch.equal(st_d.active_idx, st_s.active_idx)
    assert rel_err(y_s, y_d) < 1e-12
    assert rel_err(dx_s, dx_d) < 1e-10
    assert g_d.keys() == g_s.keys()
    for n in g_d:
        assert rel_err(g_s[n], g_d[n]) < 1e-10 if g_d[n].abs().max() > 0 else g_s[n].abs().max() == 0, n
    assert rel_err(s_s.as_dense(), s_d.S) < 1e-12
    assert torch.equal(s_s.entries_written(), s_d.entries_written())
    assert rel_err(s_s.carry.active_w, s_d.carry.active_w) < 1e-12


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_sparse_backend_with_s0_hashed_on_every_read(backend, monkeypatch):
    """Above S0_TABLE_MAX_BYTES no S_0 table is kept: every row read hashes its values (the
    compiled backend with its own C++ copy of the hash, which must give the same numbers)."""
    monkeypatch.setattr(sparse_state, "S0_TABLE_MAX_BYTES", 0)
    monkeypatch.setattr(sparse_state, "_S0_TABLES", {})
    case = _with(CASES["every_switch"], state_backend="sparse")
    y_r, dx_r, g_r, s_r, st_r = run("reference", case)
    y_f, dx_f, g_f, s_f, st_f = run(backend, case)
    assert torch.equal(st_r.active_idx, st_f.active_idx)
    assert rel_err(y_f, y_r) < 1e-12 and rel_err(dx_f, dx_r) < 1e-10
    for n in g_r:
        assert rel_err(g_f[n], g_r[n]) < 1e-10, n
    assert rel_err(s_f.as_dense(), s_r.as_dense()) < 1e-12
    assert torch.equal(s_f.entries_written(), s_r.entries_written())


def test_sparse_backend_through_the_reference_scan():
    case = _with(CASES["continuous_mixed"], state_backend="sparse")
    y_ref, dx_ref, g_ref, s_ref, _ = run("reference", case)
    y_rev, dx_rev, g_rev, s_rev, _ = run("reversible", case)
    assert rel_err(y_rev, y_ref) < 1e-12
    assert rel_err(dx_rev, dx_ref) < 1e-10
    assert rel_err(s_rev.as_dense(), s_ref.as_dense()) < 1e-12


def test_hashed_initial_state_is_seeded_gaussian_and_the_same_in_every_dtype():
    a = hashed_initial_state(256, 0.5, seed=3)
    assert torch.equal(a, hashed_initial_state(256, 0.5, seed=3))
    assert not torch.equal(a, hashed_initial_state(256, 0.5, seed=4))
    assert abs(a.mean().item()) < 0.01 and abs(a.std().item() - 0.5) < 0.01
    # rows and columns are not copies of each other
    assert torch.corrcoef(torch.stack([a[0], a[1]]))[0, 1].abs() < 0.2
    assert torch.equal(hashed_initial_state(64, 0.1, 0, torch.float64), hashed_initial_state(64, 0.1, 0).double())


def test_rows_hashed_on_read_equal_the_shared_table(monkeypatch):
    store = SparseState.fresh(40, batch=2, std=0.3, seed=1)
    store.add_(torch.tensor([5, 40 * 40 + 7, 3 * 40 + 2]), torch.tensor([1.0, -2.0, 0.5]))
    rows = torch.tensor([[0, 3], [0, 39]])
    from_table = store.rows(rows)
    monkeypatch.setattr(sparse_state, "S0_TABLE_MAX_BYTES", 0)
    assert torch.equal(store.rows(rows), from_table)
    assert torch.equal(store.values_at(torch.tensor([5, 2, 1607])), from_table.new_tensor(
        [from_table[0, 0, 5].item(), from_table[0, 0, 2].item(), from_table[1, 0, 7].item()]))


def test_shared_tables_stay_below_the_limit_least_recently_used_going_first(monkeypatch):
    monkeypatch.setattr(sparse_state, "_S0_TABLES", {})
    monkeypatch.setattr(sparse_state, "S0_TABLE_MAX_BYTES", 2 * 32 * 32 * 4)   # two float32 32x32 tables
    table = lambda seed: sparse_state._s0_table(32, 0.1, seed, torch.float32, torch.device("cpu"))
    a = table(0)
    table(1)
    assert table(0) is a                       # kept, and now the most recently used
    table(2)                                   # the third evicts seed 1, not seed 0
    assert [k[2] for k in sparse_state._S0_TABLES] == [0, 2] and table(0) is a
    assert torch.equal(table(1)[0], hashed_initial_state(32, 0.1, 1))   # rebuilt when asked again


@pytest.mark.parametrize("recent_min", [8, 1 << 16])   # the recent run joins the main one often / never
def test_sparse_store_against_a_dense_mirror(monkeypatch, recent_min):
    monkeypatch.setattr(SparseState, "RECENT_MIN", recent_min)
    g = torch.Generator().manual_seed(0)
    B, N = 3, 17
    store = SparseState.fresh(N, B, std=0.2, seed=5, dtype=torch.float64)
    mirror = hashed_initial_state(N, 0.2, 5, torch.float64).expand(B, N, N).clone()
    written = torch.zeros(B, N, N, dtype=torch.bool)
    for _ in range(6):
        pos = torch.randint(0, B * N * N, (40,), generator=g)
        pos[:5] = pos[5:10]                                  # duplicates accumulate
        vals = torch.randn(40, generator=g, dtype=torch.float64)
        vals[10:14] = 0                                      # zero changes store nothing
        store.add_(pos, vals)
        mirror.view(-1).index_add_(0, pos, vals)
        written.view(-1)[pos[vals != 0]] = True
        rows = torch.randint(0, N, (B, 4), generator=g)
        expect = mirror[torch.arange(B).unsqueeze(1), rows]
        assert rel_err(store.rows(rows), expect) < 1e-14
        probe = torch.randint(0, B * N * N, (7, 2), generator=g)
        assert rel_err(store.values_at(probe), mirror.view(-1)[probe]) < 1e-14
    assert torch.equal(store.keys, torch.sort(store.keys).values)
    assert torch.equal(store.entries_written(), written.view(B, -1).sum(1))
    assert rel_err(store.as_dense(), mirror) < 1e-14


def test_sparse_state_survives_a_checkpoint_round_trip():
    torch.manual_seed(0)
    layer = OBSLayer(OBSConfig(d_model=8, n_nodes=32, k_min=2, k_max=4, m_active=5, state_backend="sparse"))
    with torch.no_grad():
        _, state = layer(torch.randn(2, 9, 8))
    tensors, meta = states_to_tensors([state])
    (back,) = states_from_tensors(tensors, meta)
    assert isinstance(back, SparseState)
    assert torch.equal(back.as_dense(), state.as_dense())
    assert torch.equal(back.carry.active_idx, state.carry.active_idx)
    x = torch.randn(2, 4, 8)
    with torch.no_grad():
        y1, _ = layer(x, state.clone())
        y2, _ = layer(x, back)
    assert torch.equal(y1, y2)


def test_sparse_state_rejects_bad_tensors_and_randn_init():
    with pytest.raises(ValueError, match="lack"):
        SparseState.from_tensors({"keys": torch.zeros(0, dtype=torch.long)})
    meta = {"meta": torch.tensor([8, 1, 0]), "std": torch.tensor(0.1, dtype=torch.float64)}
    with pytest.raises(ValueError, match="strictly increasing"):
        SparseState.from_tensors({"keys": torch.tensor([5, 3]), "vals": torch.ones(2), **meta})
    with pytest.raises(ValueError, match="2\\^63"):
        SparseState.fresh(1 << 31, batch=4, std=0.1, seed=0)
    with pytest.raises(ValueError, match="sparse backend generates S_0"):
        OBSConfig(state_backend="sparse", state_init="randn")


def test_sparse_backend_trains_at_an_n_whose_dense_state_would_not_fit():
    # N = 65536: a dense state is 16 GiB per stream; the sparse one stores what was written
    torch.manual_seed(0)
    N = 1 << 16
    layer = OBSLayer(OBSConfig(d_model=8, n_nodes=N, d_key=8, d_value=8, d_hidden=8, d_write=8,
                               k_min=2, k_max=4, m_active=6, state_backend="sparse"))
    assert layer.s0 is None
    x = torch.randn(2, 6, 8, requires_grad=True)
    y, state = layer(x)
    y.square().sum().backward()
    assert x.grad.abs().sum() > 0 and layer.value.grad.abs().sum() > 0
    # per step at most k^2 (intra) + m k (from the active nodes) entries per stream
    assert 0 < state.entries_written().max() <= 6 * (4 * 4 + 6 * 4)
    assert state.keys.numel() == int(state.entries_written().sum())


def test_write_set_gradient_keeps_only_its_positions():
    G = WriteSetGradient(torch.tensor([[7, 3], [3, 11]]), torch.float64)
    G.add_(torch.tensor([3, 5, 11, 3]), torch.tensor([1.0, 9.0, 2.0, 0.5], dtype=torch.float64))
    assert G.values_at(torch.tensor([3, 7, 11])).tolist() == [1.5, 0.0, 2.0]
    with pytest.raises(RuntimeError, match="outside its write set"):
        G.values_at(torch.tensor([5]))


def test_dense_backend_with_a_write_set_gradient_matches_the_reference(monkeypatch):
    # large dense states keep dL/dS only at the window's writes; force that at a small size
    monkeypatch.setattr(DenseState, "DENSE_GRADIENT_RATIO", 0)
    case = CASES["reverse_assoc"]
    y_ref, dx_ref, g_ref, _, _ = run("reference", case)
    y_rev, dx_rev, g_rev, _, _ = run("reversible", case)
    assert rel_err(y_rev, y_ref) < 1e-12 and rel_err(dx_rev, dx_ref) < 1e-10
    for n in g_ref:
        assert rel_err(g_rev[n], g_ref[n]) < 1e-10, n


@pytest.mark.gpu
def test_sparse_backend_on_cuda_matches_the_cpu():
    torch.manual_seed(0)
    cfg = OBSConfig(d_model=8, n_nodes=64, d_key=8, d_value=8, d_hidden=8, d_write=8, k_min=2, k_max=4,
                    m_active=5, row_norm=True, state_backend="sparse")
    layer = OBSLayer(cfg).double()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    outs = {}
    for device in ("cpu", "cuda"):
        layer.to(device)
        layer.zero_grad()
        xd = x.to(device).requires_grad_(True)
        y, state = layer(xd)
        y.square().sum().backward()
        outs[device] = (y.detach().cpu(), xd.grad.cpu(), layer.value.grad.cpu(), state.as_dense().cpu())
    for a, b in zip(outs["cpu"], outs["cuda"]):
        assert rel_err(b, a) < 1e-10


@pytest.mark.parametrize("row_norm", [False, True])
def test_sparse_spread_without_gathering_rows_equals_the_gathered_rows(row_norm):
    from onebigstate.model.state import StateStore
    g = torch.Generator().manual_seed(3)
    B, N, R = 3, 29, 6
    store = SparseState.fresh(N, B, std=0.4, seed=2, dtype=torch.float64)
    for _ in range(3):
        store.add_(torch.randint(0, B * N * N, (60,), generator=g), torch.randn(60, generator=g, dtype=torch.float64))
    rows = torch.randint(0, N, (B, R), generator=g)
    coeff = torch.rand(B, R, generator=g, dtype=torch.float64)
    coeff[:, -2:] = 0                                  # circuit slots beyond k_t
    act, scale = store.spread(rows, coeff, row_norm)
    ref_act, ref_scale = StateStore.spread(store, rows, coeff, row_norm)
    assert rel_err(act, ref_act) < 1e-13
    assert (scale is None) == (not row_norm)
    if row_norm:
        assert rel_err(scale, ref_scale) < 1e-13
