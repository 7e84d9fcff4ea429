"""The OBS scan: run the recurrence over a window of T steps, with a backend chosen by name.

    out = obs_scan(state, carry, inputs, params, cfg, backend="auto")
    out.read, out.k_soft, ...          # per-step results [B, T, ...]
    out.state, out.carry               # the final state and carry

Backends (one signature, the same results up to floating-point rounding):

- ``reference``: a plain step-by-step loop, out-of-place updates of the dense state, plain
  autograd. The specification; O(N^2) work per step, for small sizes and tests.
- ``reversible``: the Python training path. Writes go in place; the backward pass walks the
  window in reverse, rebuilding each earlier state by subtracting the logged deltas, so memory
  saved for backward is one copy of the state plus O(T (k^2 + m k)) logged numbers, not T x N^2.
- ``cpu``: the same recurrence compiled (C++, ``kernels/cpu.py``): the whole window's loop,
  forward and backward, parallel over streams. CPU tensors only.
- ``auto`` (the default): ``cpu`` on CPU tensors when it loads, else ``reversible``
  (:func:`onebigstate.kernels.backends.resolve_backend` says once why).

A store with ``runs_own_scan`` (the column-sharded state of ``onebigstate.distributed.sharded``, S
split over the processes of a ``torch.distributed`` group) runs its own scan for ``auto`` and
``reference``; the other backends and the chunked mode refuse it. The op and the stores meet only
through ``kernels/interface.py``.

Gradients flow within one call. The state and carry handed in are treated as constants
(truncated backpropagation at call boundaries, as in lifelong training over windows).
"""
from __future__ import annotations

from onebigstate.kernels.backends import BACKENDS, resolve_backend, run_backend
from onebigstate.kernels.chunked import scan_chunked, scan_chunked_reference
from onebigstate.kernels.interface import ScanInputs, ScanOutputs
from onebigstate.kernels.step import Carry, StepConfig, StepParams


def obs_scan(state, carry: Carry | None, inputs: ScanInputs, params: StepParams, cfg: StepConfig, *,
             backend: str = "auto", in_place: bool = False, n_reg_samples: int = 0, chunks=None) -> ScanOutputs:
    """Run the recurrence over a window of T >= 1 steps.

    state: a :class:`~onebigstate.model.state.StateStore` (B streams of N x N). It is *not*
    changed unless ``in_place=True`` (lifelong windows, where copying S each window would cost
    B N^2): then it is updated and returned as ``out.state``; otherwise ``out.state`` is a new
    store. carry: the small state handed from the previous step (None: every stream starts
    with an empty active set). inputs: what was computed in parallel over time; params: the
    weights used inside the recurrence; cfg: sizes and switches. ``n_reg_samples`` > 0 also
    returns the final state at that many of the window's written entries (the Gaussian
    regulariser's sample). ``chunks``, a :class:`~onebigstate.kernels.chunked.ChunkSpec`, runs
    the chunked mode (``kernels/chunked.py``): ``reference`` by its specification, ``auto`` and
    ``reversible`` by the chunk-parallel path; the compiled backends run the sequential mode only
    and raise. Nothing else is changed: ``carry``, ``inputs`` and ``params`` are read
    only. ``out.state.carry`` is set to the final carry as well (stores keep it for checkpoints).
    """
    inputs.check(cfg)
    B, T, _ = inputs.circuit_idx.shape
    if T == 0:
        raise ValueError("obs_scan needs at least one step (T >= 1)")
    if B == 0:
        raise ValueError("obs_scan needs at least one stream (B >= 1)")
    if state.batch != B or state.n_nodes != cfg.n_nodes:
        raise ValueError(f"state holds {state.batch} streams of N={state.n_nodes} nodes, but the inputs have "
                         f"{B} streams and the config N={cfg.n_nodes}")
    own = state.runs_own_scan
    if own:
        _check_own_scan_backend(state, backend, chunks)
    name = state.kind if own else resolve_backend(backend, inputs.scores.device)
    if not in_place:
        state = state.clone()
    if carry is None:
        carry = Carry.empty(B, cfg, inputs.scores.dtype, inputs.scores.device)
    if own:
        out = state.own_scan(carry.detach(), inputs, params, cfg, n_reg_samples)
    elif chunks is not None:
        out = _run_chunked(backend, name, state, carry.detach(), inputs, params, cfg, n_reg_samples, chunks)
    else:
        out = run_backend(name, state, carry.detach(), inputs, params, cfg, n_reg_samples)
    out.carry = out.carry.detach()
    out.state.carry = out.carry
    return out


def _check_own_scan_backend(state, backend: str, chunks) -> None:
    """A store that runs its own recurrence (the column-sharded state: the reference step with
    collectives) takes backends ``auto`` and ``reference``, sequential mode only."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend '{backend}'; expected one of {list(BACKENDS)}")
    name = type(state).__name__
    if backend not in ("auto", "reference"):
        raise ValueError(f"scan backend '{backend}' cannot run a {state.kind} state ({name}): use backend 'auto' "
                         f"or 'reference', which run its own scan")
    if chunks is not None:
        raise ValueError(f"scan_mode 'chunked' is not supported with a {state.kind} state ({name}); use the "
                         "sequential mode")


def _run_chunked(asked: str, name: str, state, carry, inputs, params, cfg, n_reg_samples, spec) -> ScanOutputs:
    if name == "reference":
        return scan_chunked_reference(state, carry, inputs, params, cfg, n_reg_samples, spec)
    if asked in ("auto", "reversible"):
        return scan_chunked(state, carry, inputs, params, cfg, n_reg_samples, spec)
    raise ValueError(f"scan_mode 'chunked' runs on backend 'auto' or 'reversible' (the chunk-parallel PyTorch "
                     f"path) or 'reference' (its specification); backend '{asked}' runs the sequential mode only")
