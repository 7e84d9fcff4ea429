"""The plain step-by-step OBS recurrence: the specification every fast path is tested against.

The state is updated out of place (``S_t = S_{t-1} + scatter(delta_t)``), reads gather whole
rows, and plain autograd differentiates through everything. Simple and slow: O(N^2) per step.
"""
from __future__ import annotations

import torch

from onebigstate.kernels.scan import ScanInputs, ScanOutputs, sample_positions
from onebigstate.kernels.step import (Carry, StepConfig, StepParams, active_weights_and_read,
                                      add_direct, bound_factors, choose_active, flat_positions, plan_writes,
                                      read_rows_and_coeffs, row_scale, scale_plan, spread, take)


def scan_reference(store, carry: Carry, inputs: ScanInputs, params: StepParams, cfg: StepConfig,
                   n_reg_samples: int) -> ScanOutputs:
    B, T, _ = inputs.circuit_idx.shape
    N = cfg.n_nodes
    S = store.as_dense().detach().clone()
    with_chain = bool(inputs.continuous.any())
    reads, k_soft, k_hard, gates, actives, ws, pos_log = [], [], [], [], [], [], []
    batch_rows = torch.arange(B, device=S.device).unsqueeze(1) * N
    for t in range(T):
        plan = plan_writes(params, cfg, inputs.circuit_idx[:, t], inputs.scores[:, t],
                           inputs.features[:, t], inputs.continuous[:, t], carry, with_chain=with_chain)
        pos = flat_positions(plan.rows, plan.cols, N)
        if cfg.state_bound > 0:
            plan = scale_plan(plan, bound_factors(plan.vals, take(S.reshape(-1), pos), cfg))
        S = S.reshape(-1).index_add(0, pos.reshape(-1), plan.vals.reshape(-1)).view(B, N, N)
        with torch.no_grad():
            store.mark_written(pos, plan.vals != 0)
        rows, coeff = read_rows_and_coeffs(params, cfg, inputs.circuit_idx[:, t], plan.alpha, carry)
        row_values = take(S.reshape(B * N, N), rows + batch_rows)          # [B, R, N]
        if cfg.row_norm:
            coeff = coeff * row_scale(row_values)
        activation = spread(coeff, row_values)                              # [B, N]
        activation = add_direct(activation, inputs.circuit_idx[:, t], plan.alpha, cfg)
        active_idx = choose_active(activation.detach(), cfg)
        w, r = active_weights_and_read(params, cfg, activation.gather(1, active_idx), active_idx)
        carry = Carry(active_idx, w, inputs.circuit_idx[:, t], plan.alpha)
        reads.append(r); k_soft.append(plan.k_soft); k_hard.append(plan.k_hard)
        gates.append(plan.gates); actives.append(active_idx); ws.append(w.detach()); pos_log.append(pos)
    sample = sample_positions(torch.stack(pos_log, 1), n_reg_samples)
    reg_values = take(S.reshape(-1), sample)
    store.set_dense(S.detach())
    return ScanOutputs(torch.stack(reads, 1), torch.stack(k_soft, 1), torch.stack(gates, 1),
                       reg_values, torch.stack(k_hard, 1), torch.stack(actives, 1), torch.stack(ws, 1),
                       store, carry.detach())
