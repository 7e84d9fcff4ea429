"""The fused Triton scan (``triton`` backend) against the reference, run by Triton's interpreter
on CPU tensors (``TRITON_INTERPRET=1``), or on CUDA where there is one.

Over the kernel tests' case table, in float64: outputs, step statistics, final state, carry and
written-entry map within 1e-12 (relative), identical ``k_t`` and ``A_t``, and the gradients of
every parameter and of the input within 1e-10, as for the other fast backends (N here fits one
tile of the kernel; ``test_triton_tiles.py`` runs several tiles and ``test_triton_sparse.py`` the
sparse store). What the kernel cannot run is refused with an error that says so.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"       # before triton is imported: run the kernels on CPU tensors
pytest.importorskip("triton", reason="triton is not installed (pip install 'triton>=3.9')")

from onebigstate import OBSConfig, OBSLayer  # noqa: E402
from tests.helpers import rel_err  # noqa: E402
from tests.test_obs_kernels import BASE, CASES, assert_grads_close  # noqa: E402
from tests.test_obs_kernels import run as run_with_grads  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def run(backend: str, case: dict):
    cfg = OBSConfig(**{**BASE, **case.get("cfg", {}), "backend": backend})
    torch.manual_seed(0)
    layer = OBSLayer(cfg).double().to(DEVICE).eval()
    B, T = case.get("B", 3), case["T"]
    x = torch.randn(B, T, cfg.d_model, dtype=torch.float64).to(DEVICE)
    cont = None
    if case.get("continuous") == "mixed":
        cont = (torch.rand(B, T, generator=torch.Generator().manual_seed(1)) > 0.5).to(DEVICE)
    state = None
    with torch.no_grad():
        if case.get("carried"):
            _, state = layer(torch.randn(B, 5, cfg.d_model, dtype=torch.float64).to(DEVICE))
        y, state = layer(x, state, continuous=cont)
    return y, state, layer.last_stats


@pytest.mark.parametrize("name", list(CASES))
def test_triton_forward_matches_the_reference(name):
    case = CASES[name]
    y_r, s_r, st_r = run("reference", case)
    y_t, s_t, st_t = run("triton", case)
    assert torch.equal(st_r.k_hard, st_t.k_hard)
    assert torch.equal(st_r.active_idx, st_t.active_idx)
    assert rel_err(y_t, y_r) < 1e-12
    assert rel_err(st_t.gates, st_r.gates) < 1e-12 and rel_err(st_t.k_soft, st_r.k_soft) < 1e-12
    assert rel_err(s_t.S, s_r.S) < 1e-12
    assert torch.equal(s_t.touched, s_r.touched)
    assert torch.equal(s_t.carry.active_idx, s_r.carry.active_idx)
    assert rel_err(s_t.carry.active_w, s_r.carry.active_w) < 1e-12


# the interpreter runs a kernel as Python, a few seconds per case: six cases in the default run,
# the rest with -m slow
DEFAULT_GRAD_CASES = {"T1", "batch_of_1", "carried_state", "state_bound", "every_switch", "m_equals_n"}


@pytest.mark.parametrize("name", [n if n in DEFAULT_GRAD_CASES else pytest.param(n, marks=pytest.mark.slow)
                                  for n in CASES])
def test_triton_gradients_match_the_reference(name):
    case = CASES[name]
    y_r, dx_r, g_r, s_r, st_r = run_with_grads("reference", case)
    y_t, dx_t, g_t, s_t, st_t = run_with_grads("triton", case)
    assert torch.equal(st_r.active_idx, st_t.active_idx)
    assert rel_err(y_t, y_r) < 1e-12
    assert rel_err(dx_t, dx_r) < 1e-10
    assert_grads_close(g_t, g_r, 1e-10)
    assert rel_err(s_t.S, s_r.S) < 1e-12


def test_triton_in_float32_within_the_compiled_backends_tolerances():
    from tests.test_obs_kernels import F32_TOL
    case = CASES["every_switch"]
    y_r, dx_r, g_r, s_r, st_r = run_with_grads("reference", case)
    y_f, dx_f, g_f, s_f, st_f = run_with_grads("triton", case, dtype=torch.float32)
    assert torch.equal(st_r.active_idx, st_f.active_idx)
    assert rel_err(y_f, y_r) < F32_TOL["y"] and rel_err(s_f.S.double(), s_r.S) < F32_TOL["state"]
    assert rel_err(dx_f, dx_r) < F32_TOL["dx"]
    assert_grads_close({n: g.double() for n, g in g_f.items()}, g_r, F32_TOL["grads"])


def test_triton_refuses_what_it_cannot_do():
    """The chunked scan mode runs on the PyTorch backends only: named, not run sequentially instead."""
    x = torch.randn(2, 3, BASE["d_model"], dtype=torch.float64, device=DEVICE)
    chunked = OBSLayer(OBSConfig(**{**BASE, "backend": "triton", "scan_mode": "chunked"})).double().to(DEVICE)
    with torch.no_grad(), pytest.raises(ValueError, match="backend 'triton' runs the sequential mode only"):
        chunked(x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["odd_T", "carried_state", "state_bound", "every_switch"])
def test_triton_on_cuda_matches_the_reference_in_float64_and_float32(name):
    from tests.test_obs_kernels import F32_TOL
    case = CASES[name]
    y_r, dx_r, g_r, s_r, st_r = run_with_grads("reference", case)
    y_t, dx_t, g_t, s_t, st_t = run_with_grads("triton", case, device="cuda")
    assert torch.equal(st_r.active_idx, st_t.active_idx.cpu())
    assert rel_err(y_t, y_r) < 1e-12 and rel_err(dx_t, dx_r) < 1e-10
    assert_grads_close(g_t, g_r, 1e-10)
    y_f, dx_f, g_f, s_f, st_f = run_with_grads("triton", case, dtype=torch.float32, device="cuda")
    assert torch.equal(st_r.active_idx, st_f.active_idx.cpu())
    assert rel_err(y_f, y_r) < F32_TOL["y"] and rel_err(s_f.S.cpu(), s_r.S) < F32_TOL["state"]
    assert rel_err(dx_f, dx_r) < F32_TOL["dx"]
    assert_grads_close(g_f, g_r, F32_TOL["grads"])
