"""The plain step-by-step OBS recurrence: the specification every fast path is tested against.

The state is updated out of place (``S_t = S_{t-1} + scatter(delta_t)``), reads gather whole
rows, and plain autograd differentiates through everything. Simple and slow: O(N^2) per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from onebigstate.kernels.interface import ScanInputs, ScanOutputs, sample_positions
from onebigstate.kernels.step import (Carry, StepConfig, StepParams, active_weights_and_read,
                                      add_direct, add_persist, bound_factors, choose_active, flat_positions,
                                      plan_writes,
                                      read_rows_and_coeffs, row_scale, scale_plan, spread, take)


@dataclass
class StepResult:
    """What one reference step returns besides the new state and carry."""

    read: torch.Tensor      # [B, Dv]
    k_soft: torch.Tensor    # [B]
    k_hard: torch.Tensor    # [B] long
    gates: torch.Tensor     # [B, 3 or 4]
    pos: torch.Tensor       # [B, W] long, the flat positions written
    vals: torch.Tensor      # [B, W], the changes applied there


def reference_step(S: torch.Tensor, carry: Carry, inputs: ScanInputs, t: int, params: StepParams,
                   cfg: StepConfig, with_chain: bool) -> tuple[torch.Tensor, Carry, StepResult]:
    """One step of the recurrence on a dense state S [B, N, N], out of place:
    ``(S_t, carry_t, results)`` from ``S_{t-1}`` and ``carry_{t-1}`` (the carry the step is handed;
    the chunked mode's specification hands it another one, ``kernels/chunked.py``)."""
    B, N = S.shape[0], cfg.n_nodes
    plan = plan_writes(params, cfg, inputs.circuit_idx[:, t], inputs.scores[:, t], inputs.features[:, t],
                       inputs.continuous[:, t], carry, with_chain=with_chain)
    pos = flat_positions(plan.rows, plan.cols, N)
    if cfg.state_bound > 0:
        plan = scale_plan(plan, bound_factors(plan.vals, take(S.reshape(-1), pos), cfg))
    S = S.reshape(-1).index_add(0, pos.reshape(-1), plan.vals.reshape(-1)).view(B, N, N)
    rows, coeff = read_rows_and_coeffs(params, cfg, inputs.circuit_idx[:, t], plan.alpha, carry)
    batch_rows = torch.arange(B, device=S.device).unsqueeze(1) * N
    row_values = take(S.reshape(B * N, N), rows + batch_rows)          # [B, R, N]
    if cfg.row_norm:
        coeff = coeff * row_scale(row_values)
    activation = spread(coeff, row_values)                              # [B, N]
    activation = add_direct(activation, inputs.circuit_idx[:, t], plan.alpha, cfg)
    activation = add_persist(activation, carry, cfg)
    active_idx = choose_active(activation.detach(), cfg)
    w, r = active_weights_and_read(params, cfg, activation.gather(1, active_idx), active_idx)
    carry = Carry(active_idx, w, inputs.circuit_idx[:, t], plan.alpha)
    return S, carry, StepResult(r, plan.k_soft, plan.k_hard, plan.gates, pos, plan.vals)


def scan_reference(store, carry: Carry, inputs: ScanInputs, params: StepParams, cfg: StepConfig,
                   n_reg_samples: int) -> ScanOutputs:
    S = store.as_dense().detach().clone()
    with_chain = bool(inputs.continuous.any())
    steps, carries = [], []
    for t in range(inputs.circuit_idx.shape[1]):
        S, carry, res = reference_step(S, carry, inputs, t, params, cfg, with_chain)
        with torch.no_grad():
            store.mark_written(res.pos, res.vals != 0)
        steps.append(res); carries.append(carry)
    return finish_reference(store, S, steps, carries, n_reg_samples)


def finish_reference(store, S: torch.Tensor, steps: list[StepResult], carries: list[Carry],
                     n_reg_samples: int) -> ScanOutputs:
    """Stack the steps' results into the op's outputs and store the final state."""
    sample = sample_positions(torch.stack([s.pos for s in steps], 1), n_reg_samples)
    reg_values = take(S.reshape(-1), sample)
    store.set_dense(S.detach())
    return stack_outputs(store, steps, carries, reg_values)


def stack_outputs(store, steps: list[StepResult], carries: list[Carry], reg_values: torch.Tensor) -> ScanOutputs:
    """The op's outputs [B, T, ...] from each step's results and carry (the store already final)."""
    stack = lambda xs: torch.stack(xs, 1)
    return ScanOutputs(stack([s.read for s in steps]), stack([s.k_soft for s in steps]),
                       stack([s.gates for s in steps]), reg_values, stack([s.k_hard for s in steps]),
                       stack([c.active_idx for c in carries]), stack([c.active_w.detach() for c in carries]),
                       store, carries[-1].detach())
