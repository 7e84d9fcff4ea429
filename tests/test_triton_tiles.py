"""The fused Triton scan with the nodes in tiles (any N), against the reference, on the dense store.

The kernel reads the N nodes a tile at a time and merges each tile's activations into a running
top-m. Here the tiles are a few nodes wide (N = 37 in tiles of 16: three tiles, the last one
partial), so that every tile boundary case shows at sizes the reference can check in float64:
outputs, k_t, A_t, final state, written entries, carry, and the gradients of every parameter and
of the input, through both places dL/dS can live (a dense buffer, or by slot). Run by Triton's
interpreter on CPU tensors (``TRITON_INTERPRET=1``), or on CUDA where there is one.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"       # before triton is imported: run the kernels on CPU tensors
pytest.importorskip("triton", reason="triton is not installed (pip install 'triton>=3.9')")

from onebigstate import OBSConfig, OBSLayer  # noqa: E402
from onebigstate.kernels import triton_scan  # noqa: E402
from tests.helpers import rel_err  # noqa: E402
from tests.test_obs_kernels import BASE, CASES, F32_TOL, assert_grads_close  # noqa: E402
from tests.test_obs_kernels import run as run_with_grads  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _tiled(case: dict, **cfg) -> dict:
    return {**case, "cfg": {**case.get("cfg", {}), "n_nodes": 37, **cfg}}


TILED_CASES = {
    # every switch at once: by default with dL/dS by slot only (test_tiled_gradients_by_slot_...)
    "every_switch": _tiled(CASES["every_switch"]),
    # every node active: all places of the top-m filled from several tiles
    "m_equals_n": dict(T=6, cfg=dict(n_nodes=20, k_max=4, m_active=20)),
    # S_0 = 0: the nodes outside the circuits all have activation 0, a tie across the tiles that
    # the smaller indices must win
    "ties": _tiled(dict(T=9, continuous="mixed"), init_std=0.0),
    # the interpreter takes several seconds a case: these with -m slow
    "plain": _tiled(CASES["odd_T"]),
    "state_bound": _tiled(CASES["state_bound"]),
    # row_norm without spreading: the A_{t-1} rows are read for their logged scales only
    "row_norm_no_spread": _tiled(CASES["row_norm"], spread_from_active=False),
}
DEFAULT_CASES = {"m_equals_n", "ties"}


@pytest.fixture
def tiles(monkeypatch):
    """Tiles of 16 nodes (8 for N = 20)."""
    monkeypatch.setattr(triton_scan, "TILE_NODES", 16)
    return monkeypatch


FLOAT64_TOL = {"y": 1e-12, "state": 1e-12, "dx": 1e-10, "grads": 1e-10}


def assert_same_run(ref, fast, tol=FLOAT64_TOL):
    """Two ``run_with_grads`` results agree: outputs, choices, gradients, final state, written
    entries, carry (``fast`` on any device and in any float dtype, compared in float64)."""
    y_r, dx_r, g_r, s_r, st_r = ref
    y_t, dx_t, g_t, s_t, st_t = fast
    f64 = lambda t: t.detach().cpu().double()
    assert torch.equal(st_r.k_hard, st_t.k_hard.cpu())
    assert torch.equal(st_r.active_idx, st_t.active_idx.cpu())
    assert rel_err(f64(y_t), f64(y_r)) < tol["y"]
    assert rel_err(f64(dx_t), f64(dx_r)) < tol["dx"]
    assert_grads_close({n: f64(g) for n, g in g_t.items()}, {n: f64(g) for n, g in g_r.items()}, tol["grads"])
    assert rel_err(f64(s_t.S), f64(s_r.S)) < tol["state"]
    assert torch.equal(s_t.touched.cpu(), s_r.touched.cpu())
    assert torch.equal(s_t.carry.active_idx.cpu(), s_r.carry.active_idx.cpu())
    assert torch.equal(s_t.carry.circuit_idx.cpu(), s_r.carry.circuit_idx.cpu())
    assert rel_err(f64(s_t.carry.active_w), f64(s_r.carry.active_w)) < tol["y"]
    assert rel_err(f64(s_t.carry.alpha), f64(s_r.carry.alpha)) < tol["y"]


@pytest.mark.parametrize("name", [n if n in DEFAULT_CASES else pytest.param(n, marks=pytest.mark.slow)
                                  for n in TILED_CASES])
def test_tiled_scan_matches_the_reference(name, tiles):
    case = TILED_CASES[name]
    if case["cfg"]["n_nodes"] < 32:
        tiles.setattr(triton_scan, "TILE_NODES", 8)
    assert_same_run(run_with_grads("reference", case), run_with_grads("triton", case, device=DEVICE))


def test_tie_case_has_ties_across_tiles():
    """The 'ties' case is what it says: at its first step most activations are exactly 0, and
    the top-m takes some of them, so the order of equal values decides A_t."""
    _, _, _, _, stats = run_with_grads("reference", TILED_CASES["ties"])
    first = stats.active_idx[:, 0]                          # [B, M]
    circuit = stats.circuit_idx[:, 0]
    outside = ~(first.unsqueeze(2) == circuit.unsqueeze(1)).any(2)
    assert outside.any(), "no node outside the circuit was chosen: the case tests no ties"


def test_tiled_gradients_by_slot_match_the_reference(tiles):
    """Every switch at once, with dL/dS by slot (what large N and the sparse store use) forced on
    the dense store (the dense dL/dS buffer: test_triton_scan.py, and this case with -m slow)."""
    tiles.setattr(triton_scan, "DENSE_GRADIENT_RATIO", 0)
    case = TILED_CASES["every_switch"]
    assert_same_run(run_with_grads("reference", case), run_with_grads("triton", case, device=DEVICE))


def test_tiled_scan_without_gradients_matches_the_reference(tiles):
    """Evaluation (nothing logged for a backward; with row_norm and no spreading, the A_{t-1}
    rows are then not read at all): the same outputs, state and carry."""
    case = TILED_CASES["row_norm_no_spread"]
    results = {}
    for backend, device in (("reference", "cpu"), ("triton", DEVICE)):
        cfg = OBSConfig(**{**BASE, **case["cfg"], "backend": backend})
        torch.manual_seed(0)
        layer = OBSLayer(cfg).double().to(device).eval()
        x = torch.randn(3, case["T"], cfg.d_model, dtype=torch.float64).to(device)
        with torch.no_grad():
            _, state = layer(torch.randn(3, 5, cfg.d_model, dtype=torch.float64).to(device))
            y, state = layer(x, state)
        results[backend] = (y.cpu(), state, layer.last_stats)
    (y_r, s_r, st_r), (y_t, s_t, st_t) = results["reference"], results["triton"]
    assert torch.equal(st_r.active_idx, st_t.active_idx.cpu())
    assert rel_err(y_t, y_r) < 1e-12
    assert rel_err(s_t.S.cpu(), s_r.S) < 1e-12
    assert torch.equal(s_t.touched.cpu(), s_r.touched)
    assert torch.equal(s_t.carry.active_idx.cpu(), s_r.carry.active_idx)


def test_tile_nodes_fits_the_budget():
    assert triton_scan.tile_nodes(37, 4, 5, sparse=False) == 64                  # capped at N, a power of two
    assert triton_scan.tile_nodes(16384, 12, 16, sparse=False) == 128           # 32 rows x 128 = 4096
    assert triton_scan.tile_nodes(16384, 32, 64, sparse=True) == 16             # 128 rows x 16 = 2048
    assert triton_scan.tile_nodes(16384, 2, 2, sparse=False) == triton_scan.MAX_TILE_NODES
    for n, k, m, sparse in [(100_000, 12, 16, False), (16384, 64, 128, True), (9000, 3, 5, False)]:
        block = triton_scan.tile_nodes(n, k, m, sparse)
        rows = 1 << (k + m - 1).bit_length()
        budget = triton_scan.SPARSE_TILE_ELEMENTS if sparse else triton_scan.TILE_ELEMENTS
        assert block & (block - 1) == 0 and 16 <= block <= triton_scan.MAX_TILE_NODES
        assert block == 16 or rows * block <= budget


@pytest.mark.slow
def test_dense_store_above_the_old_node_limit():
    """N = 8200 (above the former limit of 8192 activations in one program), the kernel's own
    tile size, float64, one stream: forward and gradients against the compiled CPU backend (the
    reference's N x N copy per step would not fit this machine)."""
    from onebigstate.kernels import cpu
    if DEVICE == "cpu" and not cpu.available():
        pytest.skip(f"the compiled CPU backend is unavailable: {cpu.unavailable_reason()}")
    case = dict(T=3, B=1, continuous="mixed", cfg=dict(n_nodes=8200, row_norm=True, circuit_direct=1.0,
                                                       state_bound=0.5))
    assert_same_run(run_with_grads("cpu", case), run_with_grads("triton", case, device=DEVICE))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_tiled_scan_on_cuda_matches_the_reference(dtype, tiles):
    case = TILED_CASES["every_switch"]
    tol = FLOAT64_TOL if dtype == torch.float64 else F32_TOL
    assert_same_run(run_with_grads("reference", case), run_with_grads("triton", case, dtype=dtype, device="cuda"),
                    tol)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dense_store_above_the_old_node_limit_on_cuda():
    """N = 8200 at the kernel's own tile size, float64, on the GPU: against reversible there."""
    case = dict(T=16, B=2, continuous="mixed", carried=True,
                cfg=dict(n_nodes=8200, row_norm=True, circuit_direct=1.0, state_bound=0.5, reverse_assoc=True))
    assert_same_run(run_with_grads("reversible", case, device="cuda"),
                    run_with_grads("triton", case, device="cuda"))
