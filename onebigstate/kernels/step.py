"""The math of one OBS step, shared by every backend.

Axis letters used in this module (per batch of streams):

    B  streams            N  nodes             K  k_max (circuit slots)
    M  m (active nodes)   H  write-module width  Dv value width
    W  write entries per step = K*K (intra) + M*K (active -> circuit) + K*K (chain)
    R  rows read per step = K (new circuit) + M (previously active)

One step, given the state ``S_{t-1}`` and the carry ``(A_{t-1}, w_{t-1}, I_{t-1}, alpha_{t-1})``:

1. the write module reads the step's features (``u_t``, precomputed from the input) and the
   summary ``z_{t-1}`` of the active nodes, and outputs the node count ``k_t`` and three
   signed gates (intra-circuit, active->circuit, previous-circuit->circuit chain);
2. the circuit ``I_t`` is the top-``k_t`` of the address scores; its weights ``alpha_t``
   come from those scores, masked to ``k_t`` slots (straight-through, so ``k_t`` is learned);
3. writes: ``S[I_t, I_t] += g_in alpha alpha^T``, ``S[A_{t-1}, I_t] += g_as w alpha^T``,
   ``S[I_{t-1}, I_t] += c_t g_ch alpha_{t-1} alpha^T`` (only for continuous inputs);
4. read after the writes, by spreading activation from the circuit's rows and (gated by
   ``beta``) the previously active rows (with ``row_norm``, each row divided by 1 + its L2
   norm, so a row worn by heavy traffic weighs about as much as a fresh one) plus, with
   ``circuit_direct``, the circuit's own weights (the circuit counts as active directly) and,
   with ``active_persist``, ``A_{t-1}``'s own weights (what was active stays active);
   ``A_t`` = top-``m``; ``w_t`` = ReLU(act) normalised to sum to K; the read vector ``r_t`` is the
   ``w_t``-weighted mean of the value embeddings.

Every function here is pure: tensors in, tensors out. The backends differ only in how they
store ``S`` and how gradients reach earlier writes.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

# Write-module outputs: k logit, then the gates (intra, assoc, chain[, reverse assoc]).
N_WRITE_OUTPUTS = 4


def n_write_outputs(reverse_assoc: bool) -> int:
    return N_WRITE_OUTPUTS + int(reverse_assoc)


@dataclass(frozen=True)
class StepConfig:
    """Static sizes and switches of the recurrence (the op's non-tensor arguments)."""

    n_nodes: int
    k_min: int
    k_max: int
    m_active: int
    gate_scale: float = 1.0
    k_mask_temperature: float = 4.0
    spread_from_active: bool = True
    reverse_assoc: bool = False
    row_norm: bool = False
    circuit_direct: float = 0.0
    active_persist: float = 0.0
    state_bound: float = 0.0
    eps: float = 1e-6

    @classmethod
    def from_config(cls, config) -> "StepConfig":
        """The recurrence's part of a layer config (any object with these fields by name, such
        as ``OBSConfig``): the one place where the layer's settings become the op's."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)})

    @property
    def sure_slots(self) -> int:
        """The circuit slots that stand for a step's address: the first k_min, which every circuit
        uses (the first one when k_min is 0). Node loads and the chunk gate count these."""
        return max(self.k_min, 1)

    def writes_per_step(self, with_chain: bool) -> int:
        """W, entries a step writes per stream: intra K^2, assoc M K, chain K^2 (windows with
        continuous inputs), reverse K M (``reverse_assoc``)."""
        K, M = self.k_max, self.m_active
        return K * K + M * K + (K * K if with_chain else 0) + (K * M if self.reverse_assoc else 0)


@dataclass
class StepParams:
    """Parameters used inside the recurrence (everything else is applied outside, in parallel)."""

    value: torch.Tensor        # [N, Dv]  V, value embedding of every node
    w_summary: torch.Tensor    # [H, Dv]  write module: summary of active nodes -> hidden
    w_out: torch.Tensor        # [4 or 5, H]  write module: hidden -> (k logit, g_in, g_as, g_ch[, g_rev])
    b_out: torch.Tensor        # [4 or 5]
    beta_logit: torch.Tensor   # []       gate of spreading from the previously active rows

    def tensors(self) -> list[torch.Tensor]:
        return [self.value, self.w_summary, self.w_out, self.b_out, self.beta_logit]

    def require_dtype(self, dtype: torch.dtype, backend: str) -> None:
        """A compiled backend computes in one dtype: every parameter must be in ``dtype`` (the scores')."""
        for name, t in zip(("value", "w_summary", "w_out", "b_out", "beta_logit"), self.tensors()):
            if t.dtype != dtype:
                raise ValueError(f"the '{backend}' scan backend needs every tensor in one dtype; {name} is "
                                 f"{t.dtype}, the scores {dtype}")

    @staticmethod
    def from_tensors(ts: list[torch.Tensor]) -> "StepParams":
        return StepParams(*ts)


@dataclass
class Carry:
    """What one step hands to the next (all per stream)."""

    active_idx: torch.Tensor   # [B, M] long   A_{t-1}
    active_w: torch.Tensor     # [B, M]        w_{t-1}
    circuit_idx: torch.Tensor  # [B, K] long   I_{t-1}
    alpha: torch.Tensor        # [B, K]        alpha_{t-1}

    @staticmethod
    def empty(batch: int, cfg: StepConfig, dtype: torch.dtype, device: torch.device) -> "Carry":
        z = dict(dtype=dtype, device=device)
        zi = dict(dtype=torch.long, device=device)
        return Carry(torch.zeros(batch, cfg.m_active, **zi), torch.zeros(batch, cfg.m_active, **z),
                     torch.zeros(batch, cfg.k_max, **zi), torch.zeros(batch, cfg.k_max, **z))

    def detach(self) -> "Carry":
        return Carry(self.active_idx, self.active_w.detach(), self.circuit_idx, self.alpha.detach())

    def clone(self) -> "Carry":
        return Carry(self.active_idx.clone(), self.active_w.clone(), self.circuit_idx.clone(), self.alpha.clone())

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The carry under its names, for a state store's checkpoint tensors."""
        return dict(active_idx=self.active_idx, active_w=self.active_w, circuit_idx=self.circuit_idx,
                    alpha=self.alpha)

    @staticmethod
    def from_tensors(t: dict[str, torch.Tensor]) -> "Carry | None":
        """The carry stored by :meth:`to_tensors` among a store's tensors, or None if there is none."""
        if "active_idx" not in t:
            return None
        return Carry(t["active_idx"], t["active_w"], t["circuit_idx"], t["alpha"])


@dataclass
class WritePlan:
    """The step's writes as dense blocks ``S[rows_i, cols_i] += vals_i``: intra (I_t x I_t),
    assoc (A_{t-1} x I_t), chain (I_{t-1} x I_t, only in windows with continuous inputs) and,
    with ``reverse_assoc``, the reverse association (I_t x A_{t-1})."""

    k_soft: torch.Tensor   # [B]     continuous node count in [k_min, k_max]
    k_hard: torch.Tensor   # [B] long  nodes actually used this step
    alpha: torch.Tensor    # [B, K]  circuit weights (zero beyond k_hard)
    gates: torch.Tensor    # [B, 3 or 4]  signed (g_in, g_as, g_ch[, g_rev])
    block_rows: tuple[torch.Tensor, ...]  # each [B, Rb] long
    block_cols: tuple[torch.Tensor, ...]  # each [B, Cb] long
    block_vals: tuple[torch.Tensor, ...]  # each [B, Rb, Cb]

    @property
    def rows(self) -> torch.Tensor:
        """Row of every written entry [B, W] long."""
        return torch.cat([r.unsqueeze(2).expand(-1, -1, c.shape[1]).reshape(r.shape[0], -1)
                          for r, c in zip(self.block_rows, self.block_cols)], 1)

    @property
    def cols(self) -> torch.Tensor:
        """Column of every written entry [B, W] long."""
        return torch.cat([c.unsqueeze(1).expand(-1, r.shape[1], -1).reshape(r.shape[0], -1)
                          for r, c in zip(self.block_rows, self.block_cols)], 1)

    @property
    def vals(self) -> torch.Tensor:
        """Signed change of every written entry [B, W]."""
        return torch.cat([v.reshape(v.shape[0], -1) for v in self.block_vals], 1)


def bound_factors(vals: torch.Tensor, before: torch.Tensor, cfg: StepConfig) -> torch.Tensor:
    """The soft bound's factor of every write, detached: [B, W].

    vals [B, W] the planned changes ``v``, before [B, W] the entries' values ``s`` before the
    step's writes (``S_{t-1}``; an entry written twice in a step uses that value both times).
    With ``c = cfg.state_bound``, a write moves its entry towards ``sign(v) c`` by the fraction
    ``1 - exp(-|v| / c)``: the applied change is ``(1 - e^{-|v|/c}) (sign(v) c - s) = v * factor``.
    A small write adds about ``v (1 - sign(v) s / c)``; no single write carries an entry past
    ``+-c``, and an entry beyond it (several writes of one step landing on it) is pulled back by
    the next write. The factor is a constant of the step for the gradient (like ``row_scale``),
    so writes stay additive for the backward: it subtracts the applied changes and scales the
    gradient of each planned change by its factor. ``v = 0`` gets factor 1 (no change either way).
    """
    c = cfg.state_bound
    v, s = vals.detach(), before.detach()
    a = v.abs()
    moved = -torch.expm1(-a / c) * (c - torch.sign(v) * s) / torch.where(a > 0, a, torch.ones_like(a))
    return torch.where(a > 0, moved, torch.ones_like(a))


def scale_plan(plan: WritePlan, factors: torch.Tensor) -> WritePlan:
    """``plan`` with every planned change multiplied by its factor (factors [B, W], in
    :attr:`WritePlan.vals` order): the changes the step actually applies."""
    blocks, start = [], 0
    for v in plan.block_vals:
        n = v.shape[1] * v.shape[2]
        blocks.append(v * factors[:, start:start + n].view_as(v))
        start += n
    return WritePlan(plan.k_soft, plan.k_hard, plan.alpha, plan.gates, plan.block_rows, plan.block_cols,
                     tuple(blocks))


def take(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """table[idx] along dim 0 via index_select (several times faster than advanced indexing
    on CPU, and its backward is an index_add): idx [...] -> [..., *table.shape[1:]]."""
    return table.index_select(0, idx.reshape(-1)).view(*idx.shape, *table.shape[1:])


def active_summary(p: StepParams, carry: Carry, cfg: StepConfig) -> torch.Tensor:
    """z_{t-1} = sum_j w_j V[A_j] / K, the write module's view of the active nodes.  [B, Dv]"""
    v = take(p.value, carry.active_idx)                            # [B, M, Dv]
    return (carry.active_w.unsqueeze(-1) * v).sum(1) / cfg.k_max


def plan_writes(p: StepParams, cfg: StepConfig, circuit_idx: torch.Tensor, scores: torch.Tensor,
                features: torch.Tensor, continuous: torch.Tensor, carry: Carry,
                k_hard: torch.Tensor | None = None, with_chain: bool = True) -> WritePlan:
    """The write module: how many nodes, which pairs, by how much.

    circuit_idx [B, K] long, top-K nodes by address score (descending); scores [B, K];
    features [B, H] the write module's input projection of the step's features;
    continuous [B] (1 for continuous inputs, which also chain to the previous circuit).
    ``k_hard`` replays a logged node count (backward passes must not re-round).
    ``with_chain=False`` drops the chain block (all its values would be zero: no continuous input).
    """
    hidden = F.gelu(features + active_summary(p, carry, cfg) @ p.w_summary.T)   # [B, H]
    out = hidden @ p.w_out.T + p.b_out                                           # [B, 4]
    span = cfg.k_max - cfg.k_min
    k_soft = cfg.k_min + span * torch.sigmoid(out[:, 0])
    if k_hard is None:
        k_hard = torch.round(k_soft.detach()).long().clamp(cfg.k_min, cfg.k_max)
    ranks = torch.arange(cfg.k_max, device=scores.device, dtype=scores.dtype)
    soft = torch.sigmoid((k_soft.unsqueeze(1) - ranks - 0.5) * cfg.k_mask_temperature)
    hard = (ranks.unsqueeze(0) < k_hard.unsqueeze(1)).to(scores.dtype)
    # Straight-through: the forward uses exactly k_hard nodes, gradients reach k_soft.
    mask = hard + soft - soft.detach()
    alpha = mask * torch.softmax(scores, dim=-1) * cfg.k_max                      # [B, K]
    gates = cfg.gate_scale * torch.tanh(out[:, 1:])                              # [B, 3 or 4]
    g_in, g_as, g_ch = gates[:, 0], gates[:, 1], gates[:, 2]

    a_col = alpha.unsqueeze(1)                                                   # [B, 1, K]
    intra = g_in[:, None, None] * alpha.unsqueeze(2) * a_col                     # [B, K, K]
    assoc = g_as[:, None, None] * carry.active_w.unsqueeze(2) * a_col            # [B, M, K]
    rows, cols, vals = [circuit_idx, carry.active_idx], [circuit_idx, circuit_idx], [intra, assoc]
    if with_chain:
        chain = (continuous * g_ch)[:, None, None] * carry.alpha.unsqueeze(2) * a_col  # [B, K, K]
        rows.append(carry.circuit_idx); cols.append(circuit_idx); vals.append(chain)
    if cfg.reverse_assoc:
        # the new circuit wired back to what was active: a cue heard later reads its own
        # rows and finds what was active when it first arrived
        g_rev = gates[:, 3]
        reverse = g_rev[:, None, None] * alpha.unsqueeze(2) * carry.active_w.unsqueeze(1)  # [B, K, M]
        rows.append(circuit_idx); cols.append(carry.active_idx); vals.append(reverse)
    return WritePlan(k_soft, k_hard, alpha, gates, tuple(rows), tuple(cols), tuple(vals))


def read_rows_and_coeffs(p: StepParams, cfg: StepConfig, circuit_idx: torch.Tensor, alpha: torch.Tensor,
                         carry: Carry) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows to spread from and their coefficients: ([B, R] long, [B, R]).

    With ``cfg.row_norm`` the caller multiplies the coefficients by :func:`row_scale` of the
    rows it gathered (after this step's writes)."""
    rows = torch.cat([circuit_idx, carry.active_idx], dim=1)
    if cfg.spread_from_active:
        beta = torch.sigmoid(p.beta_logit)
        prev = beta * carry.active_w
    else:
        prev = torch.zeros_like(carry.active_w)
    coeff = torch.cat([alpha, prev], dim=1) / cfg.k_max
    return rows, coeff


def row_scale(row_values: torch.Tensor) -> torch.Tensor:
    """1 / (1 + ||row||_2) per read row, detached: [B, R, N] -> [B, R].

    Writes are additive, so a node on many circuits grows a row whose size is proportional to
    its traffic (|S_ij| ~ 10^5 after 100,000 tokens, ``docs/results/retention_probe.md``) and
    drowns the rows of a cue seen once. Dividing each row by its size makes the spread a mix of
    row *directions*. A constant of the step (no gradient), so the reversible backward only
    replays the logged scales and still never touches a whole row.
    """
    return 1.0 / (1.0 + row_values.detach().norm(dim=-1))


def spread(coeff: torch.Tensor, row_values: torch.Tensor) -> torch.Tensor:
    """Spreading activation: coeff [B, R] times row values [B, R, C] -> activation [B, C]."""
    return torch.bmm(coeff.unsqueeze(1), row_values).squeeze(1)


def add_direct(activation: torch.Tensor, circuit_idx: torch.Tensor, alpha: torch.Tensor,
               cfg: StepConfig) -> torch.Tensor:
    """The circuit counted as active directly: node ``I_t[k]`` gains ``circuit_direct * alpha_k / K``.

    activation [B, N], circuit_idx [B, K] long, alpha [B, K] -> [B, N]. Without it a circuit is
    active only through its own fresh intra-circuit writes, and a write module that learns a
    negative intra gate for a key (``g_in`` -> -1) pushes that key's circuit out of ``A_t``: the
    value after it is wired to unrelated rows, and the top-m choice passes no gradient back to
    the gate, so the key stays dead (``docs/results/dead_keys.md``). The direct term keeps the
    circuit's nodes in the running whatever ``g_in`` is, and is differentiable in ``alpha``.
    """
    if cfg.circuit_direct == 0.0:
        return activation
    return activation.scatter_add(1, circuit_idx, alpha * (cfg.circuit_direct / cfg.k_max))


def direct_at(active_idx: torch.Tensor, circuit_idx: torch.Tensor, alpha: torch.Tensor,
              cfg: StepConfig) -> torch.Tensor:
    """:func:`add_direct`'s term read at the chosen nodes only: [B, M] (for backward passes that
    rebuild the activation at ``A_t`` alone, never over all N nodes)."""
    if cfg.circuit_direct == 0.0:
        return alpha.new_zeros(active_idx.shape)
    hit = (circuit_idx.unsqueeze(2) == active_idx.unsqueeze(1)).to(alpha.dtype)      # [B, K, M]
    return (alpha.unsqueeze(2) * hit).sum(1) * (cfg.circuit_direct / cfg.k_max)


def add_persist(activation: torch.Tensor, carry: Carry, cfg: StepConfig) -> torch.Tensor:
    """The active nodes stay active: node ``A_{t-1}[j]`` gains ``active_persist * w_{t-1,j} / K``.

    activation [B, N] -> [B, N]. Without it the previously active nodes enter ``A_t`` only through
    the gated spread, which reaches what their rows point to, not the nodes themselves: one step of
    an input about nothing (silence between a view and its name) replaces the view's nodes with its
    own circuit, and the name is then wired to silence (``docs/results/write_cost.md``). The weights
    ``w`` sum to K, so ``active_persist`` 1 gives the carried set the total of ``circuit_direct`` 1.
    """
    if cfg.active_persist == 0.0:
        return activation
    return activation.scatter_add(1, carry.active_idx, carry.active_w * (cfg.active_persist / cfg.k_max))


def persist_at(active_idx: torch.Tensor, carry: Carry, cfg: StepConfig) -> torch.Tensor:
    """:func:`add_persist`'s term read at the chosen nodes only: [B, M]."""
    if cfg.active_persist == 0.0:
        return carry.active_w.new_zeros(active_idx.shape)
    hit = (carry.active_idx.unsqueeze(2) == active_idx.unsqueeze(1)).to(carry.active_w.dtype)   # [B, M, M]
    return (carry.active_w.unsqueeze(2) * hit).sum(1) * (cfg.active_persist / cfg.k_max)


def choose_active(activation: torch.Tensor, cfg: StepConfig) -> torch.Tensor:
    """A_t: indices of the top-m activations [B, N] -> [B, M] long, largest first, ties to the
    smaller index (NaN counts as largest), as the compiled and Triton backends choose.

    Ties are common, not a corner case: with ``state_bound`` many entries sit exactly at +-c,
    and nodes whose read columns are all saturated get equal activations. ``torch.topk`` leaves
    the order of ties unspecified, and its choice differed from the other backends' on a state
    that had lived 10^7 tokens (``docs/results/bounded_state.md``); a stable sort does not."""
    return torch.sort(activation, dim=-1, descending=True, stable=True).indices[:, :cfg.m_active]


def active_weights_and_read(p: StepParams, cfg: StepConfig, act_at_active: torch.Tensor,
                            active_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w_t = ReLU(act) / sum * K, and the read vector r_t = sum_j w_j V[A_j] / K.

    The proportional (ReLU) weighting matters: a softmax over raw activations collapses the
    active set onto one or two nodes and nothing is learned (see SPEC.md's early lessons).
    Returns (w [B, M], r [B, Dv]).
    """
    pos = F.relu(act_at_active)
    w = pos / (pos.sum(-1, keepdim=True) + cfg.eps) * cfg.k_max
    r = (w.unsqueeze(-1) * take(p.value, active_idx)).sum(1) / cfg.k_max
    return w, r


def flat_positions(rows: torch.Tensor, cols: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Flat index into a [B, N, N] state for entries (b, rows[b, ...], cols[b, ...])."""
    b = torch.arange(rows.shape[0], device=rows.device).view(-1, *([1] * (rows.dim() - 1)))
    return (b * n_nodes + rows) * n_nodes + cols
