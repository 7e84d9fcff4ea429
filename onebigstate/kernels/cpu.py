"""The compiled CPU backend of the OBS scan (``backend="cpu"``): ``csrc/obs_scan_cpu.cpp``.

The whole window's time loop runs in C++, forward and backward, parallel over streams, with no
Python and no host synchronisation per step. It is two ``torch.library`` ops,
``obs_cpu::scan_forward`` and ``obs_cpu::scan_backward``, with autograd registered on the first
(:func:`torch.library.register_autograd`), so it composes with autograd like any torch op.

It is compiled by torch's C++ extension tooling the first time it is needed (about a minute on
2 cores; ``make install`` does it ahead) and cached under :func:`build_root`, keyed by the
source, torch's version, the compiler flags and the CPU, so a changed source or another machine
builds afresh. Set ``OBS_EXTENSIONS_DIR`` to put the cache elsewhere.

The op is functional: it reads the state as the window's *base* (:class:`StateBase`) plus the
window's own writes, kept inside the op, and returns the log of writes ``(pos, vals)`` that
:func:`~onebigstate.kernels.scan.obs_scan` applies to the store afterwards. Its backward never
rebuilds the state: it needs the state only on the R x M grid each step read at its active
columns, which the forward logs (kernels/README.md, "The compiled backward").

    python -m onebigstate.kernels.cpu     # build (or find) the extension and say where it is
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
from pathlib import Path

import torch

from onebigstate.kernels.interface import ScanInputs, ScanOutputs, StateBase, sample_indices
from onebigstate.kernels.step import Carry, StepConfig, StepParams

SOURCE = Path(__file__).parent / "csrc" / "obs_scan_cpu.cpp"
# -march=native: the build is cached per CPU (see _cache_key), never shipped to another machine
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-std=c++17"]
LDFLAGS = ["-fopenmp"]

# The window's changes live in dense per-thread N x N scratches (values and slot numbers) while
# they take at most this many bytes (N = 4096 in float32; kept between calls), in a hash map
# beyond (kernels/README.md).
DIRECT_MAX_BYTES = 128 << 20

_state: dict = {"ops": None, "error": None}


def build_root() -> Path:
    """Where compiled extensions are cached: ``$OBS_EXTENSIONS_DIR``, else inside the running
    environment (``<venv>/var/onebigstate-ext``, so a fresh venv builds its own), else
    ``~/.cache/onebigstate/ext``."""
    given = os.environ.get("OBS_EXTENSIONS_DIR")
    if given:
        return Path(given)
    prefix = Path(sys.prefix)
    if os.access(prefix, os.W_OK):
        return prefix / "var" / "onebigstate-ext"
    return Path.home() / ".cache" / "onebigstate" / "ext"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _cache_key() -> str:
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), torch.__version__.encode(), " ".join(CFLAGS + LDFLAGS).encode(),
                 platform.machine().encode(), _cpu_flags().encode(), sys.version.encode()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def load(verbose: bool = False):
    """The compiled ops (``torch.ops.obs_cpu``), building them on first use; raises RuntimeError
    naming the cause when they cannot be built or loaded. Tried once per process."""
    if _state["ops"] is not None:
        return _state["ops"]
    if _state["error"] is not None:
        raise RuntimeError(_state["error"])
    try:
        _state["ops"] = _build_and_load(verbose)
    except Exception as err:  # any build or load failure becomes one message with its cause
        msg = str(err).strip().splitlines()
        _state["error"] = f"{type(err).__name__}: {msg[-1] if msg else ''}"[:500]
        raise RuntimeError(_state["error"]) from err
    return _state["ops"]


def available() -> bool:
    """Whether the compiled ops load here (building them if needed)."""
    try:
        load()
    except RuntimeError:
        return False
    return True


def unavailable_reason() -> str | None:
    """Why :func:`load` failed in this process, or None."""
    return _state["error"]


def _build_and_load(verbose: bool):
    from torch.utils import cpp_extension

    key = _cache_key()
    name = f"obs_scan_cpu_{key}"
    build_dir = build_root() / name
    build_dir.mkdir(parents=True, exist_ok=True)
    built = any(build_dir.glob(f"{name}*.so"))
    if not built:
        print(f"onebigstate: compiling the CPU scan into {build_dir} (once per machine and source; "
              "about 20 s on 2 cores)", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=CFLAGS, extra_ldflags=LDFLAGS,
                       build_directory=str(build_dir), is_python_module=False, verbose=verbose)
    if not built:
        print(f"onebigstate: CPU scan built in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    _register_autograd()
    return torch.ops.obs_cpu


# ---- autograd ------------------------------------------------------------------------------------
# scan_forward's inputs, in schema order: 21 tensors, then the options.
_N_TENSOR_INPUTS = 21
_DIFFERENTIABLE = {"scores": 1, "features": 2, "value": 8, "w_summary": 9, "w_out": 10, "b_out": 11,
                   "beta_logit": 12}


def _setup_context(ctx, inputs, output) -> None:
    (circuit_idx, scores, features, continuous, carry_idx, carry_w, carry_cidx, carry_alpha, value, w_summary,
     w_out, b_out, beta_logit, _dense, _table, _row_sq, _mk, _mv, _rk, _rv, reg_pick) = inputs[:_N_TENSOR_INPUTS]
    (n_nodes, k_min, k_max, m_active, gate_scale, tau, spread, reverse, row_norm, direct, persist, eps, with_chain,
     _direct_max_bytes, _std, _seed, state_bound, _save) = inputs[_N_TENSOR_INPUTS:]
    (_read, _k_soft, _gates, _reg, k_hard, active, w_log, alpha, pos, vals, scale, write_slot, grid_slot,
     grid_val, write_fac) = output
    ctx.mark_non_differentiable(k_hard, active, w_log, alpha, pos, vals, scale, write_slot, grid_slot, grid_val,
                                write_fac)
    ctx.save_for_backward(circuit_idx, scores, features, continuous, carry_idx, carry_w, carry_cidx, carry_alpha,
                          value, w_summary, w_out, b_out, beta_logit, k_hard, active, w_log, alpha, scale,
                          write_slot, grid_slot, grid_val, write_fac, reg_pick)
    ctx.options = (n_nodes, k_min, k_max, m_active, gate_scale, tau, spread, reverse, row_norm, direct, persist,
                   eps, with_chain, state_bound)
    ctx.n_inputs = len(inputs)


def _backward(ctx, g_read, g_k_soft, g_gates, g_reg, *_non_differentiable):
    grads = torch.ops.obs_cpu.scan_backward(*ctx.saved_tensors, g_read.contiguous(), g_k_soft.contiguous(),
                                            g_gates.contiguous(), g_reg.contiguous(), *ctx.options)
    out = [None] * ctx.n_inputs
    for slot, grad in zip(_DIFFERENTIABLE.values(), grads):
        out[slot] = grad
    return tuple(out)


def _register_autograd() -> None:
    torch.library.register_autograd("obs_cpu::scan_forward", _backward, setup_context=_setup_context)


# ---- the backend -----------------------------------------------------------------------------------
def _empty(dtype=torch.float32) -> torch.Tensor:
    return torch.empty(0, dtype=dtype)


def scan_cpu(state, carry: Carry, inputs: ScanInputs, params: StepParams, cfg: StepConfig,
             n_reg_samples: int) -> ScanOutputs:
    """The ``cpu`` backend: runs the window in C++ and applies its writes to ``state`` in place."""
    ops = load()
    if inputs.scores.device.type != "cpu":
        raise ValueError(f"the 'cpu' scan backend runs on CPU tensors; got {inputs.scores.device}")
    dtype = inputs.scores.dtype
    params.require_dtype(dtype, "cpu")
    B, T, _ = inputs.circuit_idx.shape
    # one host sync per window (not per step): without continuous inputs the chain block is left out
    with_chain = bool(inputs.continuous.any())
    W = cfg.writes_per_step(with_chain)
    pick = sample_indices(T * W, n_reg_samples)
    base: StateBase = state.base_view()
    if len(base.runs) > 2:
        raise ValueError(f"the 'cpu' scan backend reads at most two sorted runs of stored changes, got {len(base.runs)}")
    no_run = (_empty(torch.long), _empty(dtype))
    (main_k, main_v), (recent_k, recent_v) = list(base.runs) + [no_run] * (2 - len(base.runs))
    with_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (inputs.scores, inputs.features,
                                                                            *params.tensors()))
    (read, k_soft, gates, reg_values, k_hard, active, w_log, alpha, pos, vals, *_logs) = ops.scan_forward(
        inputs.circuit_idx, inputs.scores, inputs.features, inputs.continuous.to(dtype),
        carry.active_idx, carry.active_w, carry.circuit_idx, carry.alpha, *params.tensors(),
        base.dense if base.dense is not None else _empty(dtype),
        base.s0_table if base.s0_table is not None else _empty(dtype),
        base.s0_row_sq if base.s0_row_sq is not None else _empty(dtype),
        main_k, main_v, recent_k, recent_v, pick,
        cfg.n_nodes, cfg.k_min, cfg.k_max, cfg.m_active, cfg.gate_scale, cfg.k_mask_temperature,
        cfg.spread_from_active, cfg.reverse_assoc, cfg.row_norm, cfg.circuit_direct, cfg.active_persist, cfg.eps,
        with_chain, DIRECT_MAX_BYTES, base.s0_std, base.s0_seed, cfg.state_bound, with_grad)
    with torch.no_grad():
        state.add_(pos, vals)
        state.mark_written(pos, vals != 0)
    final = Carry(active[:, -1], w_log[:, -1], inputs.circuit_idx[:, -1], alpha[:, -1])
    return ScanOutputs(read, k_soft, gates, reg_values, k_hard, active, w_log, state, final)


if __name__ == "__main__":
    t0 = time.perf_counter()
    try:
        load(verbose="-v" in sys.argv)
    except RuntimeError as err:
        sys.exit(f"the compiled CPU scan could not be built: {err} (backend 'auto' will run 'reversible'; "
                 f"python -m onebigstate.kernels.cpu -v shows the compiler's output)")
    print(f"compiled CPU scan ready in {build_root()} ({time.perf_counter() - t0:.1f} s)")
