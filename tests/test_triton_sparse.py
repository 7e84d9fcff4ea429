"""The fused Triton scan on the sparse state store (hash-generated S_0 plus the written changes).

The kernel reads S_0 from the store's shared table, hashes it itself (the integer hash of
``sparse_state.hash_normal``), or takes it as 0, and keeps the changes in a per-stream
open-addressing table; the window's writes go into the ``SparseState`` afterwards. Checked in
float64 at small awkward sizes (N = 37 in tiles of 16) against the reference on the dense store
built from the same S_0 (``state_init: hash``) and against ``reversible`` on the sparse store:
outputs, k_t, A_t, gradients of every parameter and of the input, the final state's keys and
values, the written-entry counts, the carry. Run by Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``), or on CUDA where there is one.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"       # before triton is imported: run the kernels on CPU tensors
triton = pytest.importorskip("triton", reason="triton is not installed (pip install 'triton>=3.9')")
import triton.language as tl  # noqa: E402

from onebigstate import OBSConfig, OBSLayer  # noqa: E402
from onebigstate.kernels import triton_scan  # noqa: E402
from onebigstate.kernels.interface import s0_seed_words  # noqa: E402
from onebigstate.kernels.triton_kernels import _s0  # noqa: E402
from onebigstate.model import sparse_state  # noqa: E402
from onebigstate.model.sparse_state import SparseState, s0_values  # noqa: E402
from onebigstate.model.state import DenseState  # noqa: E402
from tests.helpers import rel_err  # noqa: E402
from tests.test_obs_kernels import CASES, F32_TOL, assert_grads_close  # noqa: E402
from tests.test_obs_kernels import run as run_with_grads  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _with(case: dict, **cfg) -> dict:
    return {**case, "cfg": {**case.get("cfg", {}), "n_nodes": 37, **cfg}}


SPARSE_CASES = {
    "every_switch": _with(CASES["every_switch"]),          # carried: the stored changes fill the table
    "m_equals_n": dict(T=6, cfg=dict(n_nodes=20, k_max=4, m_active=20)),
    # the interpreter takes several seconds a case: these with -m slow
    "plain": _with(CASES["odd_T"]),
    "state_bound": _with(CASES["state_bound"]),
    "row_norm": _with(CASES["row_norm"]),
    "active_persist": _with(CASES["active_persist"]),
    "k_min_zero": _with(CASES["k_min_zero"]),
}
DEFAULT_CASES = {"every_switch", "m_equals_n"}


@pytest.fixture
def tiles(monkeypatch):
    monkeypatch.setattr(triton_scan, "TILE_NODES", 16)
    return monkeypatch


@pytest.fixture
def hashed_s0(monkeypatch):
    """No shared S_0 table: the kernel hashes S_0 itself (the store's choice above
    S0_TABLE_MAX_BYTES)."""
    monkeypatch.setattr(sparse_state, "S0_TABLE_MAX_BYTES", 0)
    monkeypatch.setattr(sparse_state, "_S0_TABLES", {})


def _dense_twin(case: dict) -> dict:
    return {**case, "cfg": {**case["cfg"], "state_backend": "dense", "state_init": "hash"}}


def _sparse(case: dict) -> dict:
    return {**case, "cfg": {**case["cfg"], "state_backend": "sparse"}}


def assert_matches_dense_reference(case: dict, dtype=torch.float64):
    """Triton on the sparse store against the reference on the dense store from the same S_0, and
    its final store against reversible's on the sparse store: the same sorted keys (reversible
    applies each step's writes as it goes, triton the window's at once), values within rounding."""
    y_r, dx_r, g_r, s_r, st_r = run_with_grads("reference", _dense_twin(case))
    y_t, dx_t, g_t, s_t, st_t = run_with_grads("triton", _sparse(case), dtype=dtype, device=DEVICE)
    s_rev = run_with_grads("reversible", _sparse(case), dtype=dtype)[3]
    assert torch.equal(s_t.keys.cpu(), s_rev.keys)
    assert rel_err(s_t.vals.cpu().double(), s_rev.vals.double()) < (1e-12 if dtype == torch.float64 else 1e-6)
    assert isinstance(s_t, SparseState) and isinstance(s_r, DenseState)
    assert torch.equal(st_r.k_hard, st_t.k_hard.cpu())
    assert torch.equal(st_r.active_idx, st_t.active_idx.cpu())
    tol = dict(y=1e-12, state=1e-12, dx=1e-10, grads=1e-10) if dtype == torch.float64 else F32_TOL
    assert rel_err(y_t.double(), y_r) < tol["y"]
    assert rel_err(dx_t.double(), dx_r) < tol["dx"]
    assert_grads_close({n: g.double() for n, g in g_t.items()}, g_r, tol["grads"])
    assert rel_err(s_t.as_dense().cpu().double(), s_r.S) < tol["state"]
    assert torch.equal(s_t.entries_written().cpu(), s_r.entries_written())
    assert torch.equal(s_t.carry.active_idx.cpu(), s_r.carry.active_idx)
    assert rel_err(s_t.carry.active_w.cpu().double(), s_r.carry.active_w) < tol["y"]
    return s_t


@pytest.mark.parametrize("name", [n if n in DEFAULT_CASES else pytest.param(n, marks=pytest.mark.slow)
                                  for n in SPARSE_CASES])
def test_sparse_store_matches_the_dense_reference(name, tiles):
    case = SPARSE_CASES[name]
    if case["cfg"]["n_nodes"] < 32:
        tiles.setattr(triton_scan, "TILE_NODES", 8)
    assert_matches_dense_reference(case)


def test_sparse_store_with_s0_hashed_in_the_kernel(tiles, hashed_s0):
    assert_matches_dense_reference(SPARSE_CASES["every_switch"])


def test_sparse_store_with_a_zero_s0(tiles):
    """init_std 0: S_0 = 0 (many tied activations of 0 across the tiles)."""
    assert_matches_dense_reference(_with(CASES["continuous_mixed"], init_std=0.0))


def test_sparse_store_over_several_windows(tiles):
    """Lifelong windows without gradients: the store's changes sit in both of its sorted runs
    (the main one after a compaction, the recent one after the next window), and each window's
    kernel reads them from its table; outputs and state after every window equal the reference's
    on the dense store from the same S_0."""
    results = {}
    for backend, store in (("reference", "dense"), ("triton", "sparse")):
        cfg = OBSConfig(d_model=12, n_nodes=37, d_key=8, d_value=6, d_hidden=8, d_write=8, k_min=2, k_max=4,
                        m_active=5, init_std=0.1, state_init="hash", state_backend=store, backend=backend,
                        row_norm=True, state_bound=0.5)
        device = DEVICE if backend == "triton" else "cpu"
        torch.manual_seed(0)
        layer = OBSLayer(cfg).double().to(device).eval()
        state = layer.init_state(2)
        x = torch.randn(3, 2, 4, cfg.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        ys = []
        with torch.no_grad():
            for i, window in enumerate(x):
                if store == "sparse" and i == 2:
                    assert all(keys.numel() for keys, _ in state.base_view().runs), "both runs hold changes"
                y, state = layer(window.to(device), state, in_place=True)
                ys.append(y.cpu())
                if store == "sparse" and i == 0:
                    state.keys                          # compaction: the changes move to the main run
        results[backend] = (ys, state)
    (ys_r, s_r), (ys_t, s_t) = results["reference"], results["triton"]
    for y_t, y_r in zip(ys_t, ys_r):
        assert rel_err(y_t, y_r) < 1e-12
    assert rel_err(s_t.as_dense().cpu(), s_r.S) < 1e-12
    assert torch.equal(s_t.entries_written().cpu(), s_r.entries_written())


@pytest.mark.slow
def test_sparse_store_in_float32_within_the_compiled_backends_tolerances(tiles, hashed_s0):
    assert_matches_dense_reference(SPARSE_CASES["every_switch"], dtype=torch.float32)


@triton.jit
def _s0_probe(out, S0, hw, rows_ptr, cols_ptr, n, S0_MODE: tl.constexpr, STD: tl.constexpr, N: tl.constexpr,
              BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = i < n
    rows = tl.load(rows_ptr + i, mask=live, other=0)
    cols = tl.load(cols_ptr + i, mask=live, other=0)
    tl.store(out + i, _s0(S0, hw, rows, cols, live, N, S0_MODE, STD), mask=live)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed,std", [(0, 0.1), (7, 1.0), (123456, 0.013)])
def test_kernel_hash_gives_the_stores_s0_exactly(seed, std, dtype):
    """The kernel's S_0 hash (with the interface's seed words) against sparse_state.s0_values:
    equal to the last bit, over small indices and indices near 2^31 and 2^32 - 1 (the hash's
    32-bit words)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.cat([torch.arange(64).repeat_interleave(64), torch.randint(0, 1 << 32, (4096,), generator=g),
                      torch.tensor([(1 << 31) - 1, 1 << 31, (1 << 32) - 1])])
    cols = torch.cat([torch.arange(64).repeat(64), torch.randint(0, 1 << 32, (4096,), generator=g),
                      torch.tensor([(1 << 32) - 1, 0, 1 << 31])])
    want = s0_values(rows, cols, std, seed, dtype)
    got = torch.empty(rows.numel(), dtype=dtype, device=DEVICE)
    words = torch.tensor(s0_seed_words(seed), dtype=torch.long, device=DEVICE)
    std32 = float(torch.tensor(std, dtype=torch.float32))
    _s0_probe[(-(-rows.numel() // 1024),)](got, got, words, rows.to(DEVICE), cols.to(DEVICE), rows.numel(),
                                           S0_MODE=2, STD=std32, N=1, BLOCK=1024)
    mismatch = (got.cpu() != want).sum().item()
    assert mismatch == 0, f"{mismatch} of {rows.numel()} hashed values differ from the store's"


def test_full_table_raises_and_applies_nothing(monkeypatch, tiles):
    """A table too small for the window (forced here; the launcher sizes it not to fill) is an
    error naming its capacity and the setting that raises it, and the store keeps no write."""
    monkeypatch.setattr(triton_scan, "TABLE_SLOTS_PER_ENTRY", 0)     # 16 slots per stream
    cfg = OBSConfig(d_model=12, n_nodes=37, d_key=8, d_value=6, d_hidden=8, d_write=8, k_min=2, k_max=4, m_active=5,
                    init_std=0.1, state_backend="sparse", backend="triton")
    torch.manual_seed(0)
    layer = OBSLayer(cfg).double().to(DEVICE)
    state = layer.init_state(2)
    x = torch.randn(2, 9, cfg.d_model, dtype=torch.float64, device=DEVICE)
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"16 slots per stream.*TABLE_SLOTS_PER_ENTRY"):
        layer(x, state, in_place=True)
    assert state.keys.numel() == 0


def test_other_stores_are_refused():
    with pytest.raises(ValueError, match="dense and the sparse state store.*got object"):
        triton_scan._target(object(), torch.float64, 1, 1)


def test_sparse_store_at_16384_nodes(hashed_s0):
    """N = 16384 (a dense store of one stream would take 2 GiB in float64), S_0 hashed in the
    kernel, the kernel's own tile size: against reversible on the sparse store, values, state
    and gradients."""
    case = _sparse(dict(T=3, B=1, continuous="mixed", cfg=dict(n_nodes=16384, row_norm=True, circuit_direct=1.0,
                                                             state_bound=0.5, reverse_assoc=True)))
    y_r, dx_r, g_r, s_r, st_r = run_with_grads("reversible", case)
    y_t, dx_t, g_t, s_t, st_t = run_with_grads("triton", case, device=DEVICE)
    assert torch.equal(st_r.active_idx, st_t.active_idx.cpu())
    assert rel_err(y_t, y_r) < 1e-12 and rel_err(dx_t, dx_r) < 1e-10
    assert_grads_close(g_t, g_r, 1e-10)
    assert torch.equal(s_t.keys.cpu(), s_r.keys)
    assert rel_err(s_t.vals.cpu(), s_r.vals) < 1e-12


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("table", [True, False])
def test_sparse_store_on_cuda_matches_the_dense_reference(table, tiles, monkeypatch):
    """Compiled on the GPU, S_0 from the shared table and hashed by the kernel (libdevice's log
    and cos in float64 must round to the same float32 numbers as torch's on the CPU)."""
    if not table:
        monkeypatch.setattr(sparse_state, "S0_TABLE_MAX_BYTES", 0)
        monkeypatch.setattr(sparse_state, "_S0_TABLES", {})
    assert_matches_dense_reference(SPARSE_CASES["every_switch"])
    assert_matches_dense_reference(SPARSE_CASES["every_switch"], dtype=torch.float32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sparse_store_at_16384_nodes_on_cuda(hashed_s0):
    """N = 16384 at the kernel's own tile size, float64, on the GPU: against reversible there."""
    case = _sparse(dict(T=16, B=2, continuous="mixed", carried=True,
                        cfg=dict(n_nodes=16384, row_norm=True, circuit_direct=1.0, state_bound=0.5,
                                 reverse_assoc=True)))
    y_r, dx_r, g_r, s_r, st_r = run_with_grads("reversible", case, device="cuda")
    y_t, dx_t, g_t, s_t, st_t = run_with_grads("triton", case, device="cuda")
    assert torch.equal(st_r.active_idx.cpu(), st_t.active_idx.cpu())
    assert rel_err(y_t, y_r) < 1e-12 and rel_err(dx_t, dx_r) < 1e-10
    assert_grads_close(g_t, g_r, 1e-10)
    assert torch.equal(s_t.keys.cpu(), s_r.keys.cpu())
    assert rel_err(s_t.vals.cpu(), s_r.vals.cpu()) < 1e-12
