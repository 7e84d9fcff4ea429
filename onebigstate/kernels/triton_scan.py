"""The OBS scan as fused Triton kernels: the ``triton`` backend, forward and backward.

One program per stream walks the window's T steps inside one kernel, as ``cpu`` does in C++
(``triton_kernels.py``): the carry stays in registers, the read rows are gathered from the stream's
dense ``S`` in memory, the writes go into ``S`` in place (``tl.atomic_add``: a step's blocks may
land on one entry), and ``A_t`` is the top-m by M rounds of arg-max over the activation. With
gradients, the forward also logs the state on the grid each step read at its active columns (and
``row_norm``'s scales, the soft bound's factors); the backward kernel walks the window in reverse
from those logs and a dense dL/dS buffer, never rebuilding the state. The math is
``kernels/step.py``'s step for step, tested against ``reference`` in float64 (values, final
state, written entries, carry, gradients of every parameter) by Triton's interpreter on CPU
tensors (``TRITON_INTERPRET=1``, ``tests/test_triton_scan.py``).

Not measured on a GPU yet: no session with a device has run ``benchmarks/gpu_check.sh``, so
whether the kernels compile under the GPU machines' Triton 3.6 and how fast they are is unknown;
``auto`` keeps running ``reversible`` on CUDA until that check passes.

What it does not do, and says so instead of running something else:
- the sparse state store (hash-generated S_0): raises; on CUDA use ``reversible`` for it;
- N above ``MAX_NODES`` (the activation of all N nodes is held in one program's registers).
"""
from __future__ import annotations

import os

import torch

from onebigstate.kernels.scan import ScanInputs, ScanOutputs, sample_positions
from onebigstate.kernels.step import Carry, StepConfig, StepParams, n_write_outputs

MAX_NODES = 8192


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def unavailable_reason(device: torch.device) -> str | None:
    """Why the kernel cannot run on ``device`` here (None: it can)."""
    try:
        import triton  # noqa: F401
    except ImportError as err:
        return f"triton is not installed ({err})"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return f"the triton backend runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got {device}"


def _launch_dims(cfg: StepConfig, params: StepParams, with_chain: bool) -> dict:
    """The kernels' sizes and switches (constexpr arguments)."""
    K, M, N = cfg.k_max, cfg.m_active, cfg.n_nodes
    H, Dv = params.w_summary.shape
    O = n_write_outputs(cfg.reverse_assoc)
    return dict(N=N, K=K, M=M, H=H, DV=Dv, O=O, W=cfg.writes_per_step(with_chain), KP=_next_pow2(K),
                MP=_next_pow2(M), HP=_next_pow2(H), DVP=_next_pow2(Dv), OP=_next_pow2(O), K_MIN=cfg.k_min,
                TAU=float(cfg.k_mask_temperature), GATE_SCALE=float(cfg.gate_scale),
                DIRECT=float(cfg.circuit_direct), BOUND=float(cfg.state_bound), EPS=float(cfg.eps),
                SPREAD=bool(cfg.spread_from_active), REVERSE=bool(cfg.reverse_assoc), ROW_NORM=bool(cfg.row_norm),
                CHAIN=bool(with_chain))


def _values_at(S: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """S at flat positions [B, P] (the regulariser's sampled written entries)."""
    return S.reshape(-1)[positions.reshape(-1)].view(positions.shape)


def _forward(S: torch.Tensor, dims: dict, tensors: list[torch.Tensor], save: bool) -> dict:
    """Launch the forward kernel over the B streams; returns its outputs and (``save``) its logs."""
    from onebigstate.kernels.triton_kernels import _obs_scan_fwd

    circuit_idx, scores = tensors[0], tensors[1]
    B, T, K = circuit_idx.shape
    M, W, R, O, Dv = dims["M"], dims["W"], dims["K"] + dims["M"], dims["O"], dims["DV"]
    f = dict(dtype=scores.dtype, device=scores.device)
    i64 = dict(dtype=torch.long, device=scores.device)
    Ts = T if save else 0
    out = dict(read=torch.empty(B, T, Dv, **f), k_soft=torch.empty(B, T, **f), gates=torch.empty(B, T, O - 1, **f),
               k_hard=torch.empty(B, T, **i64), active=torch.empty(B, T, M, **i64), w=torch.empty(B, T, M, **f),
               alpha=torch.empty(B, T, K, **f), pos=torch.empty(B, T, W, **i64), vals=torch.empty(B, T, W, **f),
               fac=torch.empty(B, Ts if dims["BOUND"] > 0 else 0, W, **f),
               scale=torch.empty(B, Ts if dims["ROW_NORM"] else 0, R, **f), grid=torch.empty(B, Ts, R, M, **f))
    _obs_scan_fwd[(B,)](S, *tensors, out["read"], out["k_soft"], out["gates"], out["k_hard"], out["active"],
                        out["w"], out["alpha"], out["pos"], out["vals"], out["fac"], out["scale"], out["grid"], T,
                        NP=_next_pow2(dims["N"]), SAVE=save, **dims)
    return out


class _TritonScan(torch.autograd.Function):
    """The fused forward with the backward kernel; the state is written in place (not an input
    of the graph: the backward reads the logged grid, never the state)."""

    @staticmethod
    def forward(ctx, S, dims, n_reg_samples, *tensors):
        out = _forward(S, dims, list(tensors), save=True)
        sample = sample_positions(out["pos"], n_reg_samples)
        reg = _values_at(S, sample)
        ctx.dims = dims
        ctx.shape = S.shape
        ctx.save_for_backward(sample, *tensors, out["k_hard"], out["active"], out["w"], out["alpha"],
                              out["scale"], out["grid"], out["fac"])
        ctx.mark_non_differentiable(out["k_hard"], out["active"], out["w"], out["alpha"], out["pos"], out["vals"])
        return (out["read"], out["k_soft"], out["gates"], reg, out["k_hard"], out["active"], out["w"],
                out["alpha"], out["pos"], out["vals"])

    @staticmethod
    def backward(ctx, g_read, g_ksoft, g_gates, g_reg, *_non_differentiable):
        from onebigstate.kernels.triton_kernels import _obs_scan_bwd

        sample, *rest = ctx.saved_tensors
        tensors, (k_hard, active, w_log, alpha, scale, grid, fac) = rest[:13], rest[13:]
        scores, features = tensors[1], tensors[2]
        value, w_summary, w_out, b_out, beta_logit = tensors[8:]
        B, T, _ = scores.shape
        f = dict(dtype=scores.dtype, device=scores.device)
        G = torch.zeros(ctx.shape, **f)          # dL/dS, the regulariser's at its sampled entries first
        if sample.numel():
            G.view(-1).index_put_((sample.reshape(-1),), g_reg.reshape(-1), accumulate=True)
        d_scores, d_feats, d_V = torch.zeros_like(scores), torch.zeros_like(features), torch.zeros_like(value)
        d_Wz, d_Wo = torch.zeros(B, *w_summary.shape, **f), torch.zeros(B, *w_out.shape, **f)
        d_bo, d_beta = torch.zeros(B, *b_out.shape, **f), torch.zeros(B, **f)
        _obs_scan_bwd[(B,)](G, *tensors, k_hard, active, w_log, alpha, scale, grid, fac,
                            g_read.contiguous(), g_ksoft.contiguous(), g_gates.contiguous(),
                            d_scores, d_feats, d_V, d_Wz, d_Wo, d_bo, d_beta, T, **ctx.dims)
        beta = torch.sigmoid(beta_logit.detach())
        d_beta_logit = (d_beta.sum() * beta * (1 - beta)).reshape(beta_logit.shape)
        # (S, dims, n_reg_samples), then circuit_idx, scores, features, continuous, the carry's 4, the 5 parameters
        return (None, None, None, None, d_scores, d_feats, None, None, None, None, None,
                d_V, d_Wz.sum(0), d_Wo.sum(0), d_bo.sum(0), d_beta_logit)


def scan_triton(state, carry: Carry, inputs: ScanInputs, params: StepParams, cfg: StepConfig,
                n_reg_samples: int) -> ScanOutputs:
    """The ``triton`` backend: runs the window in one kernel launch (the backward in another) and
    writes into ``state``."""
    from onebigstate.model.state import DenseState

    device = inputs.scores.device
    why = unavailable_reason(device)
    if why:
        raise RuntimeError(f"the 'triton' scan backend cannot run: {why}")
    if not isinstance(state, DenseState):
        raise ValueError(f"the 'triton' scan backend supports the dense state store only, got "
                         f"{type(state).__name__} (use backend 'reversible' for the sparse store on CUDA)")
    if cfg.n_nodes > MAX_NODES:
        raise ValueError(f"the 'triton' scan backend holds all N activations in one program: N <= {MAX_NODES}, "
                         f"got {cfg.n_nodes}")
    dtype = inputs.scores.dtype
    params.require_dtype(dtype, "triton")
    with_chain = bool(inputs.continuous.any())
    dims = _launch_dims(cfg, params, with_chain)
    S = state.S
    if not S.is_contiguous():
        raise ValueError("the 'triton' scan backend writes into a contiguous [B, N, N] state")
    c = lambda t: t.contiguous()
    tensors = [c(inputs.circuit_idx), c(inputs.scores), c(inputs.features), c(inputs.continuous.to(dtype)),
               c(carry.active_idx), c(carry.active_w), c(carry.circuit_idx), c(carry.alpha),
               *(c(p) for p in params.tensors())]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        (read, k_soft, gates, reg_values, k_hard, active, w_log, alpha, pos, vals) = _TritonScan.apply(
            S, dims, n_reg_samples, *tensors)
    else:
        out = _forward(S, dims, [t.detach() for t in tensors], save=False)
        read, k_soft, gates, k_hard, active, w_log, alpha, pos, vals = (
            out[k] for k in ("read", "k_soft", "gates", "k_hard", "active", "w", "alpha", "pos", "vals"))
        reg_values = _values_at(S, sample_positions(pos, n_reg_samples))
    with torch.no_grad():
        state.mark_written(pos, vals != 0)
    final = Carry(active[:, -1], w_log[:, -1], inputs.circuit_idx[:, -1], alpha[:, -1])
    return ScanOutputs(read, k_soft, gates, reg_values, k_hard, active, w_log, state, final)
