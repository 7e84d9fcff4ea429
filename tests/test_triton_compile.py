"""The Triton kernels compile for a GPU (sm_90) on a machine without one.

Triton's interpreter runs the kernels as Python and lets through what the compiler refuses (a
loop variable whose type changes, an op a dtype lacks). ``triton.compile`` builds the kernels
down to a cubin without a device (the wheel brings ptxas), so every variant the backend launches
is compiled here: the forward on the dense store and on the sparse one (S_0 from the table and
hashed), the backward with dL/dS dense and by slot, the table fill; float32 and float64. In a
subprocess, without ``TRITON_INTERPRET`` (under it ``@triton.jit`` gives interpreted functions).
This checks this machine's Triton only; the GPU machines run another version.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
INT_POINTERS = {"TK", "hw", "cidx", "c_idx", "c_cidx", "o_khard", "o_active", "o_pos", "k_hard_log", "active",
                "wslot", "gslot", "keys"}
INT32_POINTERS = {"o_err", "err"}
SCALARS = {"T", "tcap", "n"}
DIMS = dict(N=16384, K=12, M=16, H=32, DV=16, O=5, W=12 * 12 + 16 * 12 + 12 * 12 + 12 * 16, KP=16, MP=16, HP=32,
            DVP=16, OP=8, K_MIN=4, TAU=4.0, GATE_SCALE=1.0, DIRECT=1.0, BOUND=0.5, EPS=1e-6, SPREAD=True,
            REVERSE=True, ROW_NORM=True, CHAIN=True)


def _signature(fn, float_type: str, constexprs: dict) -> dict:
    def kind(name):
        if name in constexprs:
            return "constexpr"
        if name in SCALARS:
            return "i32"
        if name in INT32_POINTERS:
            return "*i32"
        return "*i64" if name in INT_POINTERS else float_type
    return {name: kind(name) for name in fn.arg_names}


def compile_all() -> None:
    """Compile every launched variant for sm_90 (raises on the first that fails)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from onebigstate.kernels import triton_kernels as tk

    def build(fn, float_type, constexprs, warps=4):
        src = ASTSource(fn, signature=_signature(fn, float_type, constexprs), constexprs=constexprs)
        triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
        print("compiled", fn.__name__, float_type, {k: constexprs[k] for k in ("SPARSE", "S0_MODE", "SLOTS")
                                                     if k in constexprs}, flush=True)

    for float_type in ("*fp32", "*fp64"):
        for sparse, s0_mode in ((False, 0), (True, 1), (True, 2)):
            build(tk._obs_scan_fwd, float_type, {**DIMS, "RP": 32, "BLOCK_N": 64, "SAVE": True, "SPARSE": sparse,
                                                 "S0_MODE": s0_mode, "STD": 0.01}, warps=8)
        for slots in (False, True):
            build(tk._obs_scan_bwd, float_type, {**DIMS, "SLOTS": slots})
        build(tk._table_fill, float_type, {"NN": 16384 * 16384, "BLOCK": 256})


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the other triton tests compile the kernels")
def test_kernels_compile_for_sm90():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", "from tests.test_triton_compile import compile_all; compile_all()"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("compiled") == 12, proc.stdout
