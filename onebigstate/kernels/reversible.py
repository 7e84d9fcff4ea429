"""The OBS training path: in-place writes forward, state rebuilt by subtracting deltas backward.

Why it works: writes are additive, ``S_t = S_{t-1} + delta_t``. The forward pass logs what is
small (the step's chosen indices, weights and the written values, O(k^2 + m k) per step) and
keeps one copy of the final state. The backward pass walks the window in reverse, holding

    S   the state S_t, turned into S_{t-1} by S.flat[pos_t] -= vals_t, and
    G   dL/dS_t, the gradient of every later read with respect to the state,

and for each step recomputes the step's small graph with autograd: the write plan, then the
read of the rows it touched, expressed as ``S_{t-1}[rows, A_t] + (this step's writes landing
there)``. Its surrogate loss adds ``<G[pos_t], vals_t>``, so an earlier write receives the
gradient of every later read of the entries it changed. Only the active columns ``A_t`` of
the read rows matter for the gradient (the others only decide the top-m choice, which has no
gradient), so the backward pass never touches a full row.

Memory saved for backward: one copy of the state (N^2 per stream dense, the written entries
sparse) plus O(T (k^2 + m k)) logged values.
Work per step: forward O((k + m) N) for the read, backward O((k + m) m) plus the small graph.
"""
from __future__ import annotations

import torch

from onebigstate.kernels.interface import ScanInputs, ScanOutputs, sample_positions
from onebigstate.kernels.step import (Carry, StepConfig, StepParams, active_weights_and_read,
                                      add_direct, add_persist, bound_factors, choose_active, direct_at, flat_positions,
                                      persist_at, plan_writes, read_rows_and_coeffs, scale_plan, spread)


def _local_writes(read_rows: torch.Tensor, read_cols: torch.Tensor, plan) -> torch.Tensor:
    """Sum of the step's writes landing on the grid read_rows x read_cols.

    read_rows [B, R], read_cols [B, C] -> [B, R, C]: for each write block,
    (read rows matching its rows) @ its values @ (its columns matching the read columns).
    """
    dtype = plan.alpha.dtype
    total = 0
    for b_rows, b_cols, b_vals in zip(plan.block_rows, plan.block_cols, plan.block_vals):
        hit_r = (read_rows.unsqueeze(2) == b_rows.unsqueeze(1)).to(dtype)       # [B, R, Rb]
        hit_c = (b_cols.unsqueeze(2) == read_cols.unsqueeze(1)).to(dtype)       # [B, Cb, C]
        total = total + torch.bmm(torch.bmm(hit_r, b_vals), hit_c)
    return total


class _StepLogs(dict):
    """Named [B, T, ...] buffers filled one step at a time (allocated at the first step)."""

    def __init__(self, n_steps: int):
        super().__init__()
        self.n_steps = n_steps

    def put(self, name: str, t: int, value: torch.Tensor) -> None:
        if name not in self:
            self[name] = value.new_empty((value.shape[0], self.n_steps, *value.shape[1:]))
        self[name][:, t] = value


class _ReversibleScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, store, final: list, cfg: StepConfig, n_reg_samples: int, grad_enabled: bool, circuit_idx,
                continuous, carry_idx, carry_cidx, carry_w, carry_alpha, scores, features, *param_tensors):
        params = StepParams.from_tensors(list(param_tensors))
        B, T, K = circuit_idx.shape
        N, M = cfg.n_nodes, cfg.m_active
        carry = Carry(carry_idx, carry_w, carry_cidx, carry_alpha)
        with_chain = bool(continuous.any())
        # Nothing to differentiate (evaluation): keep no deltas and no final-state copy. Grad mode
        # is off inside forward, and needs_input_grad holds under no_grad too (the parameters
        # require grad), so the caller says whether a graph is being built.
        for_backward = grad_enabled and any(ctx.needs_input_grad)
        # Per-step results go into [B, T, ...] buffers made at the first step, not into lists of
        # small tensors: thousands of small survivors between the large per-step row reads pin
        # the C heap (numbers in kernels/README.md, from benchmarks/eval_memory.py).
        logs = _StepLogs(T)
        for t in range(T):
            plan = plan_writes(params, cfg, circuit_idx[:, t], scores[:, t], features[:, t],
                               continuous[:, t], carry, with_chain=with_chain)
            pos, vals = flat_positions(plan.rows, plan.cols, N), plan.vals
            if cfg.state_bound > 0:
                factors = bound_factors(vals, store.values_at(pos), cfg)
                vals = vals * factors
                if for_backward:
                    logs.put("factors", t, factors)
            store.add_(pos, vals)
            store.mark_written(pos, vals != 0)
            rows, coeff = read_rows_and_coeffs(params, cfg, circuit_idx[:, t], plan.alpha, carry)
            activation, scale = store.spread(rows, coeff, cfg.row_norm)        # [B, N], [B, R]
            if cfg.row_norm and for_backward:
                logs.put("scale", t, scale)
            activation = add_persist(add_direct(activation, circuit_idx[:, t], plan.alpha, cfg), carry, cfg)
            active_idx = choose_active(activation, cfg)
            w, r = active_weights_and_read(params, cfg, activation.gather(1, active_idx), active_idx)
            carry = Carry(active_idx, w, circuit_idx[:, t], plan.alpha)
            logs.put("read", t, r); logs.put("k_soft", t, plan.k_soft); logs.put("k_hard", t, plan.k_hard)
            logs.put("gates", t, plan.gates); logs.put("active", t, active_idx); logs.put("w", t, w)
            if for_backward:   # what only the backward pass replays
                logs.put("alpha", t, plan.alpha); logs.put("vals", t, vals)
            if n_reg_samples > 0 or for_backward:
                logs.put("pos", t, pos)
        final.append(carry)
        if n_reg_samples > 0:
            sample_pos = sample_positions(logs["pos"], n_reg_samples)
        else:
            sample_pos = circuit_idx.new_zeros((B, 0))
        reg_values = store.values_at(sample_pos)
        k_hard_t, active_t, w_t = logs["k_hard"], logs["active"], logs["w"]
        if for_backward:
            # One copy of the final state: the caller keeps mutating its own (lifelong mode).
            snapshot = store.snapshot()
            snap_keys = sorted(snapshot)
            scale_t = logs["scale"] if cfg.row_norm else w_t.new_zeros((B, 0))
            factors_t = logs["factors"] if cfg.state_bound > 0 else w_t.new_zeros((B, 0))
            ctx.save_for_backward(*[snapshot[k] for k in snap_keys], circuit_idx, continuous, carry_idx, carry_cidx,
                                  carry_w, carry_alpha, scores, features, k_hard_t, active_t, w_t,
                                  logs["alpha"], logs["vals"], logs["pos"], sample_pos, scale_t, factors_t,
                                  *param_tensors)
            ctx.store_cls, ctx.snap_keys = type(store), snap_keys
        ctx.cfg = cfg
        ctx.with_chain = with_chain
        ctx.used = False
        w_out = w_t.detach().clone()
        ctx.mark_non_differentiable(k_hard_t, active_t, w_out)
        return logs["read"], logs["k_soft"], logs["gates"], reg_values, k_hard_t, active_t, w_out

    @staticmethod
    def backward(ctx, g_read, g_k_soft, g_gates, g_reg, _g_k_hard, _g_active, _g_w):
        if ctx.used:
            raise RuntimeError("the reversible OBS scan rebuilds states in place during backward and "
                               "cannot be differentiated twice; use backend='reference' for that")
        ctx.used = True
        saved = ctx.saved_tensors
        n_snap = len(ctx.snap_keys)
        # The state S_T, rebuilt step by step into earlier states below (our own copy).
        state = ctx.store_cls.from_snapshot(dict(zip(ctx.snap_keys, saved[:n_snap])))
        (circuit_idx, continuous, carry_idx, carry_cidx, carry_w, carry_alpha, scores, features,
         k_hard, active, w_log, alpha_log, vals_log, pos_log, sample_pos, scale_log, factors_log,
         *param_tensors) = saved[n_snap:]
        cfg: StepConfig = ctx.cfg
        B, T, K = circuit_idx.shape
        N, M = cfg.n_nodes, cfg.m_active
        # G = dL/dS_t from every later read; the surrogate reads it only at this window's writes,
        # so the store may keep it there alone (sparse always, dense once N^2 is large).
        G = state.gradient_store(pos_log)
        if g_reg is not None:
            G.add_(sample_pos, g_reg)
        zeros = lambda *shape: torch.zeros(*shape, dtype=scores.dtype, device=scores.device)
        shapes = StepParams.from_tensors(param_tensors)
        g_read = g_read if g_read is not None else zeros(B, T, shapes.value.shape[1])
        g_k_soft = g_k_soft if g_k_soft is not None else zeros(B, T)
        g_gates = g_gates if g_gates is not None else zeros(B, T, shapes.w_out.shape[0] - 1)

        p_leaves = [p.detach().requires_grad_(True) for p in param_tensors]
        params = StepParams.from_tensors(p_leaves)
        p_grads = [torch.zeros_like(p) for p in param_tensors]
        d_scores, d_features = torch.zeros_like(scores), torch.zeros_like(features)
        g_w_next = zeros(B, M)        # dL/dw_t arriving from step t+1
        g_alpha_next = zeros(B, K)    # dL/dalpha_t arriving from step t+1

        for t in range(T - 1, -1, -1):
            if t > 0:
                c_idx, c_cidx = active[:, t - 1], circuit_idx[:, t - 1]
                c_w, c_alpha = w_log[:, t - 1], alpha_log[:, t - 1]
            else:
                c_idx, c_cidx, c_w, c_alpha = carry_idx, carry_cidx, carry_w, carry_alpha
            with torch.enable_grad():
                s_leaf = scores[:, t].detach().requires_grad_(True)
                f_leaf = features[:, t].detach().requires_grad_(True)
                w_leaf = c_w.detach().requires_grad_(True)
                a_leaf = c_alpha.detach().requires_grad_(True)
                carry = Carry(c_idx, w_leaf, c_cidx, a_leaf)
                plan = plan_writes(params, cfg, circuit_idx[:, t], s_leaf, f_leaf, continuous[:, t],
                                   carry, k_hard=k_hard[:, t], with_chain=ctx.with_chain)
                if cfg.state_bound > 0:     # the changes as applied (the factors are constants)
                    plan = scale_plan(plan, factors_log[:, t])
                pos = flat_positions(plan.rows, plan.cols, N)
                # S_t -> S_{t-1}: subtract exactly what the forward pass added.
                state.add_(pos, -vals_log[:, t])
                rows, coeff = read_rows_and_coeffs(params, cfg, circuit_idx[:, t], plan.alpha, carry)
                if cfg.row_norm:
                    coeff = coeff * scale_log[:, t]
                a_t = active[:, t]
                R = rows.shape[1]
                read_pos = flat_positions(rows.unsqueeze(2).expand(B, R, M), a_t.unsqueeze(1).expand(B, R, M), N)
                base = state.values_at(read_pos).requires_grad_(True)                              # [B, R, M]
                grid = base + _local_writes(rows, a_t, plan)
                activation = (spread(coeff, grid) + direct_at(a_t, circuit_idx[:, t], plan.alpha, cfg)
                              + persist_at(a_t, carry, cfg))                                         # [B, M]
                w, r = active_weights_and_read(params, cfg, activation, a_t)
                surrogate = ((g_read[:, t] * r).sum() + (g_w_next * w).sum()
                             + (g_alpha_next * plan.alpha).sum() + (g_k_soft[:, t] * plan.k_soft).sum()
                             + (g_gates[:, t] * plan.gates).sum() + (G.values_at(pos) * plan.vals).sum())
                leaves = [*p_leaves, s_leaf, f_leaf, w_leaf, a_leaf, base]
                grads = torch.autograd.grad(surrogate, leaves, allow_unused=True)
            n_p = len(p_leaves)
            for acc, g in zip(p_grads, grads[:n_p]):
                if g is not None:
                    acc += g
            d_s, d_f, d_w, d_a, d_base = grads[n_p:]
            if d_s is not None:
                d_scores[:, t] = d_s
            if d_f is not None:
                d_features[:, t] = d_f
            g_w_next = d_w if d_w is not None else zeros(B, M)
            g_alpha_next = d_a if d_a is not None else zeros(B, K)
            if d_base is not None:
                G.add_(read_pos, d_base)
        # (store, final, cfg, n_reg, grad_enabled, circuit_idx, continuous, carry_idx, carry_cidx, carry_w,
        #  carry_alpha)
        return (None,) * 11 + (d_scores, d_features, *p_grads)


def scan_reversible(store, carry: Carry, inputs: ScanInputs, params: StepParams, cfg: StepConfig,
                    n_reg_samples: int) -> ScanOutputs:
    final = []
    outs = _ReversibleScan.apply(store, final, cfg, n_reg_samples, torch.is_grad_enabled(),
                                 inputs.circuit_idx, inputs.continuous,
                                 carry.active_idx, carry.circuit_idx, carry.active_w, carry.alpha,
                                 inputs.scores, inputs.features, *params.tensors())
    # The final carry holds graph-free tensors from inside forward.
    return ScanOutputs(*outs, store, final[0].detach())
