"""The OBS scan as fused Triton kernels: the ``triton`` backend, forward and backward.

One program per stream walks the window's T steps inside one kernel, as ``cpu`` does in C++
(``triton_kernels.py``): the carry stays in registers, the read rows are gathered from the state
in memory a tile of nodes at a time (``BLOCK_N``), each tile's activation is merged into a running
top-m (ties to the smaller index, as ``step.choose_active``; a NaN activation counts as largest,
level with +inf, where torch.sort puts it above) and dropped, so N has no limit of the kernel's
own. With gradients, the forward also logs the state on the grid each step read at its active
columns (and ``row_norm``'s scales, the soft bound's factors); the backward kernel walks the
window in reverse from those logs and dL/dS, never rebuilding the state.

Both state stores:
- dense (``DenseState``): the writes go into ``S`` in place (``tl.atomic_add``: a step's blocks may
  land on one entry);
- sparse (``SparseState``): S_0 is read from the store's shared table or hashed inside the kernel
  by ``hash_normal``'s integer hash (the store's own choice, ``S0_TABLE_MAX_BYTES``), the stored
  changes are put into a per-stream open-addressing table at the launch, the window's writes join
  them there, and after the kernel the write log goes into the store (``SparseState.add_``, one
  call per window, as the ``cpu`` backend does). A read entry costs S_0 plus a probe of the table
  (N probes per row read). The table is sized per launch at ``TABLE_SLOTS_PER_ENTRY`` slots per
  possible entry (the stream's stored changes plus every write of the window), so it cannot fill;
  a launch that still found no slot for a write raises instead of dropping it.

dL/dS lives in a dense buffer the size of the state while that is at most
``DENSE_GRADIENT_RATIO`` times the window's write log, else (and always for the sparse store) by
slot: one number per distinct entry the window wrote, the slots of the write log and of the read
grid found by ``torch.searchsorted`` before the backward launch (no N x N buffer).

The math is ``kernels/step.py``'s step for step, tested against ``reference`` in float64 (values,
final state, written entries, carry, gradients of every parameter; the sparse store's keys and
values) by Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1``, ``tests/test_triton_scan.py``,
``tests/test_triton_tiles.py``, ``tests/test_triton_sparse.py``), at tiles of a few nodes so that
several tiles and a partial last one are exercised.

Not run on a GPU yet: the kernels compile for sm_90 with this machine's Triton (``triton.compile``
to a cubin, no device needed), but no session with a device has run ``benchmarks/gpu_check.sh``,
so whether they compile under the GPU machines' Triton 3.6, whether they are right there and how
fast they are is unknown (the tile sizes below are guesses, not tuned); ``auto`` keeps running
``reversible`` on CUDA until that check passes.

What it does not do, and says so instead of running something else: a state store other than
the dense and the sparse one (by ``StateStore.kind``; the column-sharded store runs its own scan
and never gets here); the chunked scan mode (``scan.py`` refuses it for this backend); mixed
dtypes. Like every backend it sees the stores only through ``kernels/interface.py``.
"""
from __future__ import annotations

import os

import torch

from onebigstate.kernels.interface import ScanInputs, ScanOutputs, s0_seed_words, sample_indices, sample_positions
from onebigstate.kernels.step import Carry, StepConfig, StepParams, n_write_outputs

# The K + M read rows are loaded as one [rows, BLOCK_N] block: BLOCK_N is the largest power of two
# with (K + M, padded) x BLOCK_N at most this many elements (fewer for the sparse store, whose
# lanes also hash and probe), capped at 1024 and at N, and the forward runs FORWARD_WARPS warps.
# Chosen from the compiler alone (Triton 3.9, sm_90, float32: no register spills at these sizes,
# a little with S_0 hashed); not measured on a GPU.
TILE_ELEMENTS = 4096
SPARSE_TILE_ELEMENTS = 2048
MAX_TILE_NODES = 1024
FORWARD_WARPS = 8
# Tests set a tile size here (a few nodes: several tiles and a partial last one at small N).
TILE_NODES: int | None = None
# Slots of the sparse store's per-stream table per entry it may have to hold (load <= 1/2).
TABLE_SLOTS_PER_ENTRY = 2
# dL/dS in a dense [B, N, N] buffer while B N^2 <= this x the window's write log, else by slot.
DENSE_GRADIENT_RATIO = 32
_FILL_BLOCK = 256


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


def tile_nodes(n_nodes: int, k_max: int, m_active: int, sparse: bool) -> int:
    """BLOCK_N, the nodes of one tile (``TILE_NODES`` when set)."""
    if TILE_NODES is not None:
        return _next_pow2(TILE_NODES)
    budget = SPARSE_TILE_ELEMENTS if sparse else TILE_ELEMENTS
    rows = _next_pow2(k_max + m_active)
    block = max(16, 1 << max(0, (budget // rows).bit_length() - 1))
    return min(block, MAX_TILE_NODES, _next_pow2(n_nodes))


def _launch_dims(cfg: StepConfig, params: StepParams, with_chain: bool) -> dict:
    """The kernels' sizes and switches (constexpr arguments) shared by forward and backward."""
    K, M, N = cfg.k_max, cfg.m_active, cfg.n_nodes
    H, Dv = params.w_summary.shape
    O = n_write_outputs(cfg.reverse_assoc)
    return dict(N=N, K=K, M=M, H=H, DV=Dv, O=O, W=cfg.writes_per_step(with_chain), KP=_next_pow2(K),
                MP=_next_pow2(M), HP=_next_pow2(H), DVP=_next_pow2(Dv), OP=_next_pow2(O), K_MIN=cfg.k_min,
                TAU=float(cfg.k_mask_temperature), GATE_SCALE=float(cfg.gate_scale),
                DIRECT=float(cfg.circuit_direct), PERSIST=float(cfg.active_persist), BOUND=float(cfg.state_bound),
                EPS=float(cfg.eps),
                SPREAD=bool(cfg.spread_from_active), REVERSE=bool(cfg.reverse_assoc), ROW_NORM=bool(cfg.row_norm),
                CHAIN=bool(with_chain))


class _DenseTarget:
    """A dense store's [B, N, N] tensor, written in place by the forward kernel and handed back to
    the store (``set_dense``: for ``DenseState`` the same tensor, no copy)."""

    sparse = False

    def __init__(self, state, dtype: torch.dtype):
        S = state.as_dense()
        if not S.is_contiguous():
            raise ValueError("the 'triton' scan backend writes into a contiguous [B, N, N] state")
        if S.dtype != dtype:
            raise ValueError(f"the 'triton' scan backend needs the state in the scores' dtype {dtype}, got {S.dtype}")
        self.state, self.S = state, S

    def kernel_args(self) -> tuple[list, dict]:
        dummy = self.S.new_zeros(1)
        return [self.S, dummy.long(), dummy, dummy.long()], dict(S0_MODE=0, STD=0.0)

    def tcap(self) -> int:
        return 1

    def finish(self, pos: torch.Tensor, vals: torch.Tensor, err: torch.Tensor) -> None:
        """The kernel wrote into ``S``: it is the state now."""
        self.state.set_dense(self.S)


class _SparseTarget:
    """A ``SparseState`` as the forward kernel reads it: S_0 (table, hash or zero) plus the stored
    changes copied into per-stream open-addressing tables with room for the window's writes; the
    write log goes into the store after the kernel (``finish``)."""

    sparse = True

    def __init__(self, state, dtype: torch.dtype, n_steps: int, writes_per_step: int):
        if state.dtype != dtype:
            raise ValueError(f"the 'triton' scan backend needs the state in the scores' dtype {dtype}, got "
                             f"{state.dtype}")
        self.state = state
        base = state.base_view()
        B, N = state.batch, state.n_nodes
        device = base.runs[0][0].device
        most_stored = int(state.entries_written().max()) if B else 0
        self._tcap = _next_pow2(max(16, TABLE_SLOTS_PER_ENTRY * (most_stored + n_steps * writes_per_step)))
        from onebigstate.kernels.triton_kernels import EMPTY_KEY, SENTINEL_KEY
        self.keys = torch.full((B, self._tcap + 1), EMPTY_KEY, dtype=torch.long, device=device)
        self.keys[:, -1] = SENTINEL_KEY
        self.vals = torch.zeros((B, self._tcap + 1), dtype=dtype, device=device)
        self.err = torch.zeros(B, dtype=torch.int32, device=device)
        for run_keys, run_vals in base.runs:
            self._fill(run_keys, run_vals.to(dtype), N)
        if base.s0_table is not None:
            self.s0, self.s0_mode = base.s0_table.to(dtype).contiguous(), 1
        else:
            self.s0, self.s0_mode = self.vals.new_zeros(1), (2 if base.s0_std != 0 else 0)
        # S_0 = float32(z) * float32(std), then the dtype (sparse_state.s0_values)
        self.std = float(torch.tensor(base.s0_std, dtype=torch.float32))
        self.hash_words = torch.tensor(s0_seed_words(base.s0_seed), dtype=torch.long, device=device)

    def _fill(self, keys: torch.Tensor, vals: torch.Tensor, N: int) -> None:
        from onebigstate.kernels.triton_kernels import _table_fill

        n = keys.numel()
        if n == 0:
            return
        _table_fill[(-(-n // _FILL_BLOCK),)](self.keys, self.vals, keys.contiguous(), vals.contiguous(), n,
                                             self._tcap, self.err, NN=N * N, BLOCK=_FILL_BLOCK)

    def kernel_args(self) -> tuple[list, dict]:
        return [self.vals, self.keys, self.s0, self.hash_words], dict(S0_MODE=self.s0_mode, STD=self.std)

    def tcap(self) -> int:
        return self._tcap

    def finish(self, pos: torch.Tensor, vals: torch.Tensor, err: torch.Tensor) -> None:
        """Refuse a launch that lost a write; else the window's writes go into the store."""
        lost = int(self.err.sum()) + int(err.sum())
        if lost:
            raise RuntimeError(f"the 'triton' scan backend's sparse table ({self._tcap} slots per stream) had no "
                               f"slot for {lost} writes (none were applied); raise "
                               f"onebigstate.kernels.triton_scan.TABLE_SLOTS_PER_ENTRY "
                               f"(now {TABLE_SLOTS_PER_ENTRY}) and report it: the table is sized not to fill")
        with torch.no_grad():
            self.state.add_(pos, vals)


def _forward(target, dims: dict, tensors: list[torch.Tensor], save: bool) -> dict:
    """Launch the forward kernel over the B streams, then apply its writes to the store; returns
    its outputs and (``save``) its logs."""
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
               scale=torch.empty(B, Ts if dims["ROW_NORM"] else 0, R, **f), grid=torch.empty(B, Ts, R, M, **f),
               err=torch.zeros(B, dtype=torch.int32, device=scores.device))
    store_args, store_dims = target.kernel_args()
    block = tile_nodes(dims["N"], dims["K"], dims["M"], target.sparse)
    _obs_scan_fwd[(B,)](*store_args, *tensors, out["read"], out["k_soft"], out["gates"], out["k_hard"],
                        out["active"], out["w"], out["alpha"], out["pos"], out["vals"], out["fac"], out["scale"],
                        out["grid"], out["err"], T, target.tcap(), RP=_next_pow2(R), BLOCK_N=block, SAVE=save,
                        SPARSE=target.sparse, num_warps=FORWARD_WARPS, **store_dims, **dims)
    target.finish(out["pos"], out["vals"], out["err"])
    return out


def _gradient_slots(pos: torch.Tensor, circuit_idx: torch.Tensor, active: torch.Tensor, carry_idx: torch.Tensor,
                    n_nodes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dL/dS by slot: the window's distinct written positions (sorted, every stream's), the slot of
    every logged write [B, T, W] and of every entry of the read grids [B, T, R, M] (-1: an entry
    the window never wrote, whose gradient no earlier write reads)."""
    keys = torch.unique(pos.reshape(-1))
    wslot = torch.searchsorted(keys, pos)
    prev_active = torch.cat([carry_idx.unsqueeze(1), active[:, :-1]], 1)               # A_{t-1} [B, T, M]
    rows = torch.cat([circuit_idx, prev_active], 2)                                      # [B, T, R]
    stream = torch.arange(pos.shape[0], device=pos.device).view(-1, 1, 1, 1)
    grid_pos = (stream * n_nodes + rows.unsqueeze(3)) * n_nodes + active.unsqueeze(2)  # [B, T, R, M]
    at = torch.searchsorted(keys, grid_pos).clamp(max=keys.numel() - 1)
    gslot = torch.where(keys[at] == grid_pos, at, torch.full_like(at, -1))
    return keys, wslot.contiguous(), gslot.contiguous()


def _use_slots(target, dims: dict, B: int, T: int) -> bool:
    """dL/dS by slot (always for the sparse store), or in a dense [B, N, N] buffer while that is small."""
    return target.sparse or B * dims["N"] ** 2 > DENSE_GRADIENT_RATIO * B * T * dims["W"]


class _TritonScan(torch.autograd.Function):
    """The fused forward with the backward kernel; the store is updated inside the forward (it is
    not an input of the graph: the backward reads the logged grid, never the state)."""

    @staticmethod
    def forward(ctx, target, dims, n_reg_samples, *tensors):
        out = _forward(target, dims, list(tensors), save=True)
        B, T, W = out["pos"].shape
        pick = sample_indices(T * W, n_reg_samples, out["pos"].device)
        sample = out["pos"].reshape(B, -1)[:, pick]
        reg = target.state.values_at(sample)
        ctx.dims = dims
        ctx.slots = _use_slots(target, dims, B, T)
        ctx.shape = (B, dims["N"], dims["N"])
        ctx.save_for_backward(pick, *tensors, out["k_hard"], out["active"], out["w"], out["alpha"],
                              out["scale"], out["grid"], out["fac"], out["pos"])
        ctx.mark_non_differentiable(out["k_hard"], out["active"], out["w"], out["alpha"], out["pos"], out["vals"])
        return (out["read"], out["k_soft"], out["gates"], reg, out["k_hard"], out["active"], out["w"],
                out["alpha"], out["pos"], out["vals"])

    @staticmethod
    def backward(ctx, g_read, g_ksoft, g_gates, g_reg, *_non_differentiable):
        from onebigstate.kernels.triton_kernels import _obs_scan_bwd

        pick, *rest = ctx.saved_tensors
        tensors, (k_hard, active, w_log, alpha, scale, grid, fac, pos) = rest[:13], rest[13:]
        circuit_idx, scores, features, carry_idx = tensors[0], tensors[1], tensors[2], tensors[4]
        value, w_summary, w_out, b_out, beta_logit = tensors[8:]
        B, T, _ = scores.shape
        f = dict(dtype=scores.dtype, device=scores.device)
        g_reg_flat = g_reg.reshape(-1)
        if ctx.slots:
            keys, wslot, gslot = _gradient_slots(pos, circuit_idx, active, carry_idx, ctx.dims["N"])
            G = torch.zeros(keys.numel(), **f)   # dL/dS by slot, the regulariser's at its sampled entries first
            if pick.numel():
                G.index_put_((wslot.reshape(B, -1)[:, pick].reshape(-1),), g_reg_flat, accumulate=True)
        else:
            wslot = gslot = pos.new_zeros(1)
            G = torch.zeros(ctx.shape, **f)      # dL/dS, the regulariser's at its sampled entries first
            if pick.numel():
                G.view(-1).index_put_((pos.reshape(B, -1)[:, pick].reshape(-1),), g_reg_flat, accumulate=True)
        d_scores, d_feats, d_V = torch.zeros_like(scores), torch.zeros_like(features), torch.zeros_like(value)
        d_Wz, d_Wo = torch.zeros(B, *w_summary.shape, **f), torch.zeros(B, *w_out.shape, **f)
        d_bo, d_beta = torch.zeros(B, *b_out.shape, **f), torch.zeros(B, **f)
        _obs_scan_bwd[(B,)](G, wslot, gslot, *tensors, k_hard, active, w_log, alpha, scale, grid, fac,
                            g_read.contiguous(), g_ksoft.contiguous(), g_gates.contiguous(),
                            d_scores, d_feats, d_V, d_Wz, d_Wo, d_bo, d_beta, T, SLOTS=ctx.slots, **ctx.dims)
        beta = torch.sigmoid(beta_logit.detach())
        d_beta_logit = (d_beta.sum() * beta * (1 - beta)).reshape(beta_logit.shape)
        # (target, dims, n_reg_samples), then circuit_idx, scores, features, continuous, the carry's 4, the 5 parameters
        return (None, None, None, None, d_scores, d_feats, None, None, None, None, None,
                d_V, d_Wz.sum(0), d_Wo.sum(0), d_bo.sum(0), d_beta_logit)


def _target(state, dtype: torch.dtype, n_steps: int, writes_per_step: int):
    """The store as the kernel reads and writes it, by its registered kind (kernels/interface.py);
    any store but dense and sparse is refused."""
    kind = getattr(state, "kind", "")
    if kind == "dense":
        return _DenseTarget(state, dtype)
    if kind == "sparse":
        return _SparseTarget(state, dtype, n_steps, writes_per_step)
    raise ValueError(f"the 'triton' scan backend runs the dense and the sparse state store, got "
                     f"{type(state).__name__} (kind '{kind}')")


def scan_triton(state, carry: Carry, inputs: ScanInputs, params: StepParams, cfg: StepConfig,
                n_reg_samples: int) -> ScanOutputs:
    """The ``triton`` backend: runs the window in one kernel launch (the backward in another) and
    applies its writes to ``state``."""
    device = inputs.scores.device
    why = unavailable_reason(device)
    if why:
        raise RuntimeError(f"the 'triton' scan backend cannot run: {why}")
    dtype = inputs.scores.dtype
    params.require_dtype(dtype, "triton")
    with_chain = bool(inputs.continuous.any())
    B, T, _ = inputs.circuit_idx.shape
    target = _target(state, dtype, T, cfg.writes_per_step(with_chain))
    dims = _launch_dims(cfg, params, with_chain)
    c = lambda t: t.contiguous()
    tensors = [c(inputs.circuit_idx), c(inputs.scores), c(inputs.features), c(inputs.continuous.to(dtype)),
               c(carry.active_idx), c(carry.active_w), c(carry.circuit_idx), c(carry.alpha),
               *(c(p) for p in params.tensors())]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        (read, k_soft, gates, reg_values, k_hard, active, w_log, alpha, pos, vals) = _TritonScan.apply(
            target, dims, n_reg_samples, *tensors)
    else:
        out = _forward(target, dims, [t.detach() for t in tensors], save=False)
        read, k_soft, gates, k_hard, active, w_log, alpha, pos, vals = (
            out[k] for k in ("read", "k_soft", "gates", "k_hard", "active", "w", "alpha", "pos", "vals"))
        reg_values = state.values_at(sample_positions(pos, n_reg_samples))
    with torch.no_grad():
        state.mark_written(pos, vals != 0)
    final = Carry(active[:, -1], w_log[:, -1], inputs.circuit_idx[:, -1], alpha[:, -1])
    return ScanOutputs(read, k_soft, gates, reg_values, k_hard, active, w_log, state, final)
