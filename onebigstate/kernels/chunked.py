"""Chunk-parallel OBS: the write module, the top-m choice and the read-out of C steps at once.

In sequential mode step t is handed the carry of step t-1 (active set ``A``, weights ``w``,
circuit ``I`` and its weights ``alpha``). In chunked mode the window is cut into chunks, and a
chunk is computed in *sweeps*. Sweep j hands step t the carry that sweep j-1 computed for step
t-1; sweep 1 hands every step the carry at the chunk's start; the chunk's first step always gets
the exact carry. Within a sweep every step is a function of its handed carry and of the state,
so the write module (node count, gates, circuit weights), the top-m choice and the read-out run
for all C steps at once. What stays exact in every sweep is the state: each step writes, then
reads the rows it reads, against the chunk-start state plus the exact causal sum of the writes
of the chunk's earlier steps (a key and its query inside one chunk still meet). Writes are
additive, so the chunk's sum does not depend on their order. Only the last sweep's writes stay.

After j sweeps the first j steps of a chunk are exact, so C sweeps give the sequential model
exactly; ``sweeps = 0`` (the exact variant) sweeps until the active sets, node counts and carry
weights stop changing, at most C times. The approximation (sweeps < C) is the chain of carries
inside a chunk: kernels/README.md, "Chunked mode", has the math.

Two implementations, one model:

- :func:`scan_chunked_reference`: the specification. The reference step (``reference.py``) in a
  loop, handed the sweep's carries; out-of-place state, plain autograd (the gradient of every
  sweep, unrolled).
- :func:`scan_chunked`: the chunk-parallel path. Each sweep runs the write module, the top-m and
  the read-out as one batch of B x C steps; the only per-step work left is adding the step's
  writes into the state and gathering the rows it reads (a handful of tensor ops per step
  instead of about 70). Its backward is reversible like ``reversible.py``: it logs, per sweep,
  the carries, discrete choices, written values and the grid ``S_t[rows_t, A_t]`` each step
  read, rebuilds each sweep's small graph in parallel, and moves ``dL/dS`` between steps at
  written entries only. Memory kept for backward: O(T sweeps (W + R M)) per stream, no copy of S.

Chunk boundaries are the same for every stream of a batch (one batch of B x C steps). The gate
(:func:`gate_bounds`) cuts where any stream would need a cut.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from onebigstate.kernels.interface import ScanInputs, ScanOutputs, WriteSetGradient, sample_positions
from onebigstate.kernels.step import (Carry, StepConfig, StepParams, active_weights_and_read, add_direct,
                                      add_persist, bound_factors, choose_active, direct_at, flat_positions,
                                      persist_at, plan_writes,
                                      read_rows_and_coeffs, scale_plan, spread)

GATES = ("none", "rule")


@dataclass(frozen=True)
class ChunkSpec:
    """How a window is cut and swept (the layer's ``scan_mode: chunked`` settings)."""

    max_chunk: int = 16     # C, longest chunk
    sweeps: int = 2         # sweeps per chunk (capped at the chunk's length); 0: until the carries stop changing
    gate: str = "none"      # none: chunks of max_chunk; rule: gate_bounds cuts them shorter

    def __post_init__(self):
        if self.max_chunk < 1:
            raise ValueError(f"max_chunk must be >= 1, got {self.max_chunk}")
        if self.sweeps < 0:
            raise ValueError(f"chunk_sweeps must be >= 0 (0: sweep until exact), got {self.sweeps}")
        if self.gate not in GATES:
            raise ValueError(f"chunk_gate must be one of {GATES}, got '{self.gate}'")

    @classmethod
    def from_config(cls, config) -> "ChunkSpec | None":
        """The chunked settings of a layer config, or None in sequential mode."""
        if getattr(config, "scan_mode", "sequential") == "sequential":
            return None
        return cls(config.max_chunk, config.chunk_sweeps, config.chunk_gate)

    def sweeps_for(self, length: int) -> int:
        return length if self.sweeps == 0 else min(self.sweeps, length)


def gate_bounds(inputs: ScanInputs, cfg: StepConfig, max_chunk: int) -> list[tuple[int, int]]:
    """The rule gate: chunks of at most ``max_chunk`` steps, cut before step t when

    - *re-read* (a token, ``continuous == 0``): one of its sure circuit nodes (its first k_min
      candidates, which every circuit uses; its first candidate when k_min is 0) is a sure node
      of an earlier circuit of the chunk:
      the step reads rows the chunk wrote, where the approximate carries matter most (a query
      of a key stored in the same chunk);
    - *novel* (a continuous input: a frame, a sound): its sure nodes share none with the
      previous step's. The scene changed, and the carries before say little about those after.
      Frames of one scene share nodes step after step, and chunks run through them: that is
      where the carries change slowly and the chunk's approximation holds.

    Rows written through the active set (``S[A_{t-1}, I_t]``) are not known before the scan and
    are not checked. The cuts are the union over the batch's streams. Returns [(t0, t1), ...].
    """
    B, T, _ = inputs.circuit_idx.shape
    core = inputs.circuit_idx[:, :, :cfg.sure_slots]                       # [B, T, k_min or 1]
    overlap_prev = (core[:, 1:].unsqueeze(3) == core[:, :-1].unsqueeze(2)).any(3).any(2)   # [B, T-1]
    novel = ((inputs.continuous[:, 1:] > 0) & ~overlap_prev).any(0).tolist()
    token = inputs.continuous == 0                                          # [B, T]
    seen = torch.zeros(B, cfg.n_nodes, dtype=torch.bool, device=core.device)
    rows = torch.arange(B, device=core.device).unsqueeze(1)
    bounds, start = [], 0
    seen[rows, core[:, 0]] = True
    for t in range(1, T):
        reread = bool((seen[rows, core[:, t]].any(1) & token[:, t]).any())
        if t - start >= max_chunk or reread or novel[t - 1]:
            bounds.append((start, t))
            start = t
            seen.zero_()
        seen[rows, core[:, t]] = True
    bounds.append((start, T))
    return bounds


def chunk_bounds(inputs: ScanInputs, cfg: StepConfig, spec: ChunkSpec) -> list[tuple[int, int]]:
    T = inputs.circuit_idx.shape[1]
    if spec.gate == "rule":
        return gate_bounds(inputs, cfg, spec.max_chunk)
    return [(t0, min(t0 + spec.max_chunk, T)) for t0 in range(0, T, spec.max_chunk)]


def _stack_carries(carries: list[Carry]) -> Carry:
    """Carries of a chunk's steps as one Carry of [B, L, ...] tensors."""
    return Carry(*[torch.stack([getattr(c, f.name) for c in carries], 1) for f in fields(Carry)])


def handed_carries(carry0: Carry, previous: Carry | None, length: int) -> Carry:
    """The carries a sweep hands a chunk's ``length`` steps ([B, L, ...]): ``carry0`` to the
    first step, and to step t the previous sweep's carry of step t-1 (``previous`` [B, L, ...]);
    with no previous sweep, ``carry0`` to every step."""
    out = []
    for f in fields(Carry):
        c0 = getattr(carry0, f.name).unsqueeze(1)
        if previous is None:
            out.append(c0.expand(-1, length, *c0.shape[2:]))
        else:
            out.append(torch.cat([c0, getattr(previous, f.name)[:, :length - 1]], 1))
    return Carry(*out)


def carries_settled(a: Carry, b: Carry, k_a: torch.Tensor, k_b: torch.Tensor) -> bool:
    """The exact variant's stop: the same active sets and node counts, and weights equal to a few
    rounding errors (what further sweeps could still change is below the dtype's resolution)."""
    if not (torch.equal(a.active_idx, b.active_idx) and torch.equal(k_a, k_b)):
        return False
    tol = 64 * torch.finfo(a.active_w.dtype).eps * a.active_w.shape[-1]
    return bool((a.active_w - b.active_w).abs().max() <= tol and (a.alpha - b.alpha).abs().max() <= tol)


# ---- the specification ------------------------------------------------------------------------

def scan_chunked_reference(store, carry: Carry, inputs: ScanInputs, params: StepParams, cfg: StepConfig,
                           n_reg_samples: int, spec: ChunkSpec) -> ScanOutputs:
    """Chunked mode by the reference step in a loop, handed each sweep's carries."""
    from onebigstate.kernels.reference import finish_reference, reference_step

    S = store.as_dense().detach().clone()
    with_chain = bool(inputs.continuous.any())
    steps, carries, lengths, sweeps_used = [], [], [], []
    for t0, t1 in chunk_bounds(inputs, cfg, spec):
        L = t1 - t0
        previous, prev_k, n = None, None, spec.sweeps_for(L)
        for j in range(n):
            handed = handed_carries(carry, previous, L)
            S_j, outs, cs = S, [], []
            for i in range(L):
                c_in = Carry(*[getattr(handed, f.name)[:, i] for f in fields(Carry)])
                S_j, c_out, res = reference_step(S_j, c_in, inputs, t0 + i, params, cfg, with_chain)
                outs.append(res); cs.append(c_out)
            now, k_now = _stack_carries(cs), torch.stack([r.k_hard for r in outs], 1)
            done = j == n - 1 or (spec.sweeps == 0 and previous is not None
                                   and carries_settled(now, previous, k_now, prev_k))
            previous, prev_k = now, k_now
            if done:
                break
        S = S_j
        with torch.no_grad():
            for res in outs:
                store.mark_written(res.pos, res.vals != 0)
        steps += outs; carries += cs; lengths.append(L); sweeps_used.append(j + 1)
        carry = cs[-1]
    out = finish_reference(store, S, steps, carries, n_reg_samples)
    out.chunk_lengths, out.chunk_sweeps = lengths, sweeps_used
    return out


# ---- the chunk-parallel path ------------------------------------------------------------------

def _flat(x: torch.Tensor) -> torch.Tensor:
    """[B, L, ...] -> [B*L, ...]."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _flat_carry(c: Carry) -> Carry:
    return Carry(*[_flat(getattr(c, f.name)) for f in fields(Carry)])


def _chunk(circuit_idx, scores, features, continuous, t0: int, t1: int) -> ScanInputs:
    """The inputs of steps t0..t1-1 as [B, L, ...] slices."""
    return ScanInputs(circuit_idx[:, t0:t1], scores[:, t0:t1], features[:, t0:t1], continuous[:, t0:t1])


def _plan(params: StepParams, cfg: StepConfig, ch: ScanInputs, handed: Carry, with_chain: bool,
          k_hard: torch.Tensor | None = None):
    """The write plans and read coefficients of a chunk's B x L steps in one batch.
    Returns (plan over B*L, pos [B, L, W], rows [B, L, R], coeff [B, L, R])."""
    B, L = ch.circuit_idx.shape[:2]
    N = cfg.n_nodes
    hc = _flat_carry(handed)
    plan = plan_writes(params, cfg, _flat(ch.circuit_idx), _flat(ch.scores), _flat(ch.features),
                       _flat(ch.continuous), hc, k_hard=None if k_hard is None else _flat(k_hard),
                       with_chain=with_chain)
    pos = flat_positions(plan.rows.view(B, -1), plan.cols.view(B, -1), N).view(B, L, -1)
    rows, coeff = read_rows_and_coeffs(params, cfg, _flat(ch.circuit_idx), plan.alpha, hc)
    return plan, pos, rows.view(B, L, -1), coeff.view(B, L, -1)


@dataclass
class _Sweep:
    """What one sweep over a chunk computed ([B, L, ...]) and logged for the backward pass."""

    read: torch.Tensor
    k_soft: torch.Tensor
    gates: torch.Tensor
    k_hard: torch.Tensor
    carries: Carry          # the carries it computed (A_t, w_t, I_t, alpha_t)
    pos: torch.Tensor       # [B, L, W] written positions
    vals: torch.Tensor      # [B, L, W] applied changes
    factors: torch.Tensor | None = None  # [B, L, W] state_bound's factors
    scale: torch.Tensor | None = None    # [B, L, R] row_norm's scales
    grid: torch.Tensor | None = None     # [B, L, R, M] S_t[rows_t, A_t], read after the step's writes
    grid_pos: torch.Tensor | None = None  # [B, L, R, M] flat positions of that grid
    rows: torch.Tensor | None = None     # [B, L, R]


def _sweep(store, params: StepParams, cfg: StepConfig, ch: ScanInputs, handed: Carry, with_chain: bool) -> _Sweep:
    """One sweep, writes left in ``store``: batch the plans, then per step write and spread."""
    B, L = ch.circuit_idx.shape[:2]
    N = cfg.n_nodes
    plan, pos, rows, coeff = _plan(params, cfg, ch, handed, with_chain)
    vals = plan.vals.view(B, L, -1).clone()
    factors = torch.empty_like(vals) if cfg.state_bound > 0 else None
    scale = torch.empty_like(coeff) if cfg.row_norm else None
    act = coeff.new_empty(B, L, N)
    for i in range(L):
        if factors is not None:
            factors[:, i] = bound_factors(vals[:, i], store.values_at(pos[:, i]), cfg)
            vals[:, i] *= factors[:, i]
        store.add_(pos[:, i], vals[:, i])
        a, s = store.spread(rows[:, i], coeff[:, i], cfg.row_norm)
        act[:, i] = a
        if scale is not None:
            scale[:, i] = s
    act = add_direct(act.view(B * L, N), _flat(ch.circuit_idx), plan.alpha, cfg)
    act = add_persist(act, _flat_carry(handed), cfg)
    active = choose_active(act, cfg)
    w, r = active_weights_and_read(params, cfg, act.gather(1, active), active)
    view = lambda x: x.view(B, L, *x.shape[1:])
    carries = Carry(view(active), view(w), ch.circuit_idx, view(plan.alpha))
    return _Sweep(view(r), view(plan.k_soft), view(plan.gates), view(plan.k_hard), carries, pos, vals,
                  factors, scale, rows=rows)


def _walk_back(store, sw: _Sweep, cfg: StepConfig) -> None:
    """Undo a sweep's writes step by step from the last, logging each step's grid on the way."""
    B, L, R = sw.rows.shape
    M = cfg.m_active
    sw.grid_pos = flat_positions(sw.rows.view(B, L * R, 1).expand(B, L * R, M),
                                 sw.carries.active_idx.unsqueeze(2).expand(B, L, R, M).reshape(B, L * R, M),
                                 cfg.n_nodes).view(B, L, R, M)
    sw.grid = torch.empty(sw.grid_pos.shape, dtype=sw.vals.dtype, device=sw.vals.device)
    for i in range(L - 1, -1, -1):
        sw.grid[:, i] = store.values_at(sw.grid_pos[:, i])
        store.add_(sw.pos[:, i], -sw.vals[:, i])


class _ChunkedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, store, info: dict, cfg: StepConfig, spec: ChunkSpec, bounds: list, n_reg_samples: int,
                grad_enabled: bool, circuit_idx, continuous, carry_idx, carry_cidx, carry_w, carry_alpha,
                scores, features, *param_tensors):
        params = StepParams.from_tensors(list(param_tensors))
        B, T, K = circuit_idx.shape
        carry = Carry(carry_idx, carry_w, carry_cidx, carry_alpha)
        with_chain = bool(continuous.any())
        for_backward = grad_enabled and any(ctx.needs_input_grad)
        out = {k: [] for k in ("read", "k_soft", "gates", "k_hard", "active", "w", "pos")}
        chunks, sweeps_used = [], []
        for t0, t1 in bounds:
            ch = _chunk(circuit_idx, scores, features, continuous, t0, t1)
            L, n = t1 - t0, spec.sweeps_for(t1 - t0)
            done_sweeps: list[_Sweep] = []
            for j in range(n):
                previous = done_sweeps[-1] if done_sweeps else None
                handed = handed_carries(carry, previous.carries if previous else None, L)
                sw = _sweep(store, params, cfg, ch, handed, with_chain)
                done = j == n - 1 or (spec.sweeps == 0 and previous is not None and
                                      carries_settled(sw.carries, previous.carries, sw.k_hard, previous.k_hard))
                if for_backward:
                    _walk_back(store, sw, cfg)
                    if done:
                        store.add_(sw.pos, sw.vals)
                elif not done:
                    store.add_(sw.pos, -sw.vals)
                done_sweeps.append(sw)
                if done:
                    break
            final = done_sweeps[-1]
            store.mark_written(final.pos, final.vals != 0)
            for k, v in (("read", final.read), ("k_soft", final.k_soft), ("gates", final.gates),
                         ("k_hard", final.k_hard), ("active", final.carries.active_idx),
                         ("w", final.carries.active_w), ("pos", final.pos)):
                out[k].append(v)
            carry = Carry(*[getattr(final.carries, f.name)[:, -1] for f in fields(Carry)])
            chunks.append((t0, t1, done_sweeps if for_backward else None))
            sweeps_used.append(len(done_sweeps))
        cat = {k: torch.cat(v, 1) for k, v in out.items()}
        sample_pos = sample_positions(cat["pos"], n_reg_samples) if n_reg_samples > 0 else circuit_idx.new_zeros((B, 0))
        reg_values = store.values_at(sample_pos)
        info.update(carry=carry, lengths=[t1 - t0 for t0, t1 in bounds], sweeps=sweeps_used)
        ctx.cfg, ctx.with_chain, ctx.used = cfg, with_chain, False
        if for_backward:
            ctx.chunks = chunks
            ctx.grad_store = store.gradient_store(cat["pos"])
            ctx.save_for_backward(circuit_idx, continuous, carry_idx, carry_cidx, carry_w, carry_alpha, scores,
                                  features, sample_pos, *param_tensors)
        w_out = cat["w"].detach().clone()
        ctx.mark_non_differentiable(cat["k_hard"], cat["active"], w_out)
        return cat["read"], cat["k_soft"], cat["gates"], reg_values, cat["k_hard"], cat["active"], w_out

    @staticmethod
    def backward(ctx, g_read, g_k_soft, g_gates, g_reg, _g_k_hard, _g_active, _g_w):

        if ctx.used:
            raise RuntimeError("the chunked OBS scan cannot be differentiated twice; use backend='reference'")
        ctx.used = True
        (circuit_idx, continuous, carry_idx, carry_cidx, carry_w, carry_alpha, scores, features, sample_pos,
         *param_tensors) = ctx.saved_tensors
        cfg: StepConfig = ctx.cfg
        B, T, K = circuit_idx.shape
        M = cfg.m_active
        zeros = lambda *shape: torch.zeros(*shape, dtype=scores.dtype, device=scores.device)
        shapes = StepParams.from_tensors(param_tensors)
        g_read = g_read if g_read is not None else zeros(B, T, shapes.value.shape[1])
        g_k_soft = g_k_soft if g_k_soft is not None else zeros(B, T)
        g_gates = g_gates if g_gates is not None else zeros(B, T, shapes.w_out.shape[0] - 1)
        G = ctx.grad_store
        if g_reg is not None:
            G.add_(sample_pos, g_reg)
        p_leaves = [p.detach().requires_grad_(True) for p in param_tensors]
        params = StepParams.from_tensors(p_leaves)
        p_grads = [torch.zeros_like(p) for p in param_tensors]
        d_scores, d_features = torch.zeros_like(scores), torch.zeros_like(features)
        g_carry_w, g_carry_a = zeros(B, M), zeros(B, K)      # dL/d(final carry of the chunk)
        carry0s = _chunk_start_carries(ctx.chunks, Carry(carry_idx, carry_w, carry_cidx, carry_alpha))
        for (t0, t1, sweeps), carry0 in zip(reversed(ctx.chunks), reversed(carry0s)):
            L = t1 - t0
            ch = _chunk(circuit_idx, scores, features, continuous, t0, t1)
            g_w_out, g_a_out = zeros(B, L, M), zeros(B, L, K)
            g_w_out[:, -1], g_a_out[:, -1] = g_carry_w, g_carry_a
            g_carry_w, g_carry_a = zeros(B, M), zeros(B, K)
            for j in range(len(sweeps) - 1, -1, -1):
                sw, last = sweeps[j], j == len(sweeps) - 1
                handed = handed_carries(carry0, sweeps[j - 1].carries if j > 0 else None, L)
                with torch.enable_grad():
                    w_in = handed.active_w.detach().requires_grad_(True)
                    a_in = handed.alpha.detach().requires_grad_(True)
                    s_leaf = ch.scores.detach().requires_grad_(True)
                    f_leaf = ch.features.detach().requires_grad_(True)
                    grid = sw.grid.detach().requires_grad_(True)
                    leaf_chunk = ScanInputs(ch.circuit_idx, s_leaf, f_leaf, ch.continuous)
                    plan, pos, rows, coeff = _plan(params, cfg, leaf_chunk,
                                                   Carry(handed.active_idx, w_in, handed.circuit_idx, a_in),
                                                   ctx.with_chain, k_hard=sw.k_hard)
                    if cfg.state_bound > 0:
                        plan = scale_plan(plan, _flat(sw.factors))
                    coeff = _flat(coeff)
                    if cfg.row_norm:
                        coeff = coeff * _flat(sw.scale)
                    active = _flat(sw.carries.active_idx)
                    activation = (spread(coeff, _flat(grid)) + direct_at(active, _flat(ch.circuit_idx), plan.alpha, cfg)
                                  + persist_at(active, _flat_carry(Carry(handed.active_idx, w_in, handed.circuit_idx,
                                                                         a_in)), cfg))
                    w, r = active_weights_and_read(params, cfg, activation, active)
                    main = (_flat(g_w_out) * w).sum() + (_flat(g_a_out) * plan.alpha).sum()
                    if last:
                        main = main + (_flat(g_read[:, t0:t1]) * r).sum() \
                            + (_flat(g_k_soft[:, t0:t1]) * plan.k_soft).sum() \
                            + (_flat(g_gates[:, t0:t1]) * plan.gates).sum()
                    d_grid, = torch.autograd.grad(main, grid, retain_graph=True)
                    # dL/d(the step's writes): every read of the entry at or after the step
                    # (this sweep's; for the last sweep, also every later chunk's, already in G)
                    Gj = G if last else WriteSetGradient(sw.pos, sw.vals.dtype)
                    read_pos = sw.grid_pos
                    d_vals = torch.empty_like(sw.vals)
                    for i in range(L - 1, -1, -1):
                        Gj.add_(read_pos[:, i], d_grid[:, i])
                        d_vals[:, i] = Gj.values_at(pos[:, i])
                    if not last:            # its reads of the chunk-start state reach earlier writes
                        G.add_(read_pos, d_grid)
                    surrogate = main + (_flat(d_vals) * plan.vals).sum()
                    grads = torch.autograd.grad(surrogate, [*p_leaves, s_leaf, f_leaf, w_in, a_in], allow_unused=True)
                n_p = len(p_leaves)
                for acc, g in zip(p_grads, grads[:n_p]):
                    if g is not None:
                        acc += g
                d_s, d_f, d_w, d_a = [g if g is not None else torch.zeros_like(x)
                                      for g, x in zip(grads[n_p:], (s_leaf, f_leaf, w_in, a_in))]
                d_scores[:, t0:t1] += d_s
                d_features[:, t0:t1] += d_f
                if j > 0:        # step i was handed sweep j-1's carry of step i-1; step 0 the chunk's start
                    g_w_out, g_a_out = zeros(B, L, M), zeros(B, L, K)
                    g_w_out[:, :-1], g_a_out[:, :-1] = d_w[:, 1:], d_a[:, 1:]
                    g_carry_w += d_w[:, 0]
                    g_carry_a += d_a[:, 0]
                else:            # the first sweep handed every step the chunk's start carry
                    g_carry_w += d_w.sum(1)
                    g_carry_a += d_a.sum(1)
        # (store, info, cfg, spec, bounds, n_reg, grad_enabled, circuit_idx, continuous, carry x4)
        return (None,) * 13 + (d_scores, d_features, *p_grads)


def _chunk_start_carries(chunks: list, carry: Carry) -> list[Carry]:
    """The exact carry at each chunk's start: the window's, then each chunk's last sweep's last step."""
    out = [carry]
    for _, _, sweeps in chunks[:-1]:
        c = sweeps[-1].carries
        out.append(Carry(*[getattr(c, f.name)[:, -1] for f in fields(Carry)]))
    return out


def scan_chunked(store, carry: Carry, inputs: ScanInputs, params: StepParams, cfg: StepConfig,
                 n_reg_samples: int, spec: ChunkSpec) -> ScanOutputs:
    bounds = chunk_bounds(inputs, cfg, spec)
    info: dict = {}
    outs = _ChunkedScan.apply(store, info, cfg, spec, bounds, n_reg_samples, torch.is_grad_enabled(),
                              inputs.circuit_idx, inputs.continuous, carry.active_idx, carry.circuit_idx,
                              carry.active_w, carry.alpha, inputs.scores, inputs.features, *params.tensors())
    out = ScanOutputs(*outs, store, info["carry"].detach())
    out.chunk_lengths, out.chunk_sweeps = info["lengths"], info["sweeps"]
    return out
