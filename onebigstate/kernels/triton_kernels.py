"""Triton kernels of the OBS scan: a fused forward and its backward, one program per stream.

Imported only when the ``triton`` backend runs (``triton_scan.py`` wraps them). The math is
``kernels/step.py``'s and the backward is ``csrc/obs_scan_cpu.cpp``'s, step for step: the forward
logs the state on the grid each step read at its active columns, so the backward never rebuilds
the state; it keeps dL/dS either in a dense buffer the size of the state or by *slot* (one number
per distinct entry the window wrote, the slots looked up before the launch) and walks the window
in reverse.

The N nodes are processed a tile of ``BLOCK_N`` at a time: the K + M read rows [I_t; A_{t-1}]
are loaded as one ``[RP, BLOCK_N]`` block, the tile's activation is merged into a running top-m
kept in order (ties to the smaller index, as ``step.choose_active``) and dropped, so no program
holds all N activations and N has no limit of its own. (Inside the loops, work is written out
rather than split into small helpers: under Triton's interpreter each helper call costs about a
millisecond, and the tests run there.)

Two state stores (constexpr ``SPARSE``):
- dense: the stream's ``[N, N]`` slice of ``S``, written in place;
- sparse (``model/sparse_state.py``): ``S = S_0 + changes``, with ``S_0`` zero, read from the
  shared ``[N, N]`` table, or hashed here by the integer hash of ``hash_normal`` (``S0_MODE`` 0,
  1, 2), and the changes in a per-stream open-addressing table (int64 key ``row * N + col``,
  linear probing, empty slots ``-1``, one extra slot at the end that is never empty). The table
  holds the store's changes at the window's start (``_table_fill``) and gathers the window's
  writes; a new key takes its slot by compare-and-swap, so the lanes of one block may insert at
  once.

Triton 3.6 (the GPU machines) has no ``tanh``/``expm1``: both are written out here with the
precision the float64 tests need.
"""
import triton
import triton.language as tl

EMPTY_KEY = -1          # a free slot of the sparse table (keys are >= 0)
SENTINEL_KEY = -2       # the key of each stream's extra slot: never free, so a finished lane's
#                         compare-and-swap there is a no-op (tl.atomic_cas takes no mask)
# (kernels read module globals only as constexpr)
EMPTY = tl.constexpr(EMPTY_KEY)
SENTINEL = tl.constexpr(SENTINEL_KEY)
NO_NODE = tl.constexpr(1 << 62)   # the node index of an empty place of the running top-m


@triton.jit
def _tanh(x):
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _expm1(x):
    # exp(x) - 1 without cancellation near 0 (|x| < 1e-3: the series to x^5)
    series = x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0)))))
    return tl.where(tl.abs(x) < 1e-3, series, tl.exp(x) - 1.0)


@triton.jit
def _pick(vec, idx, j):
    """vec[j] of a small vector (j a scalar)."""
    return tl.sum(tl.where(idx == j, vec, tl.zeros_like(vec)), axis=0)


# ---- the sparse store: S_0 by hashing, the changes in an open-addressing table --------------------
@triton.jit
def _mix32(x):
    """interface.mix32 on uint32 values: there ``(y * 0x45D9F3B) & (2^32 - 1)`` in int64, here
    the same number as a uint32 product that wraps (half the registers of int64 arithmetic)."""
    x = ((x >> 16) ^ x) * 73244475
    x = ((x >> 16) ^ x) * 73244475
    return (x >> 16) ^ x


@triton.jit
def _s0(S0, hw, rows, cols, mask, N: tl.constexpr, S0_MODE: tl.constexpr, STD: tl.constexpr):
    """S_0 at (rows, cols) (index blocks that broadcast) of the sparse store: 0 (mode 0), the
    shared table (1), or hashed (2) as sparse_state.s0_values does: hash_normal in float64 (two
    hashed uniforms, then Box-Muller), times ``STD`` (the float32 std) in float32, then the dtype.
    ``hw`` holds the seed's two words (interface.s0_seed_words, below 2^32)."""
    if S0_MODE == 1:
        out = tl.load(S0 + rows * N + cols, mask=mask, other=0.0)
    elif S0_MODE == 2:
        # rows and cols are below 2^32: (x ^ word) & (2^32 - 1) is the low half, a uint32
        ra = _mix32((rows ^ tl.load(hw)).to(tl.uint32))
        rb = _mix32((rows ^ tl.load(hw + 1)).to(tl.uint32))
        c = cols.to(tl.uint32)
        u1 = (_mix32(ra ^ c).to(tl.float64) + 0.5) * 2.3283064365386963e-10     # 2^-32: in (0, 1), the log stays finite
        u2 = _mix32(rb ^ c).to(tl.float64) * 2.3283064365386963e-10
        z = (tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(6.283185307179586 * u2)).to(tl.float32)
        out = tl.where(mask, (z * STD).to(S0.dtype.element_ty), 0.0)
    else:
        out = tl.where(mask, 0.0, 0.0).to(S0.dtype.element_ty)
    return out


@triton.jit
def _home_slot(key, tcap):
    """Where a key's probe starts (tcap a power of two): _mix32 of the xor of the key's two 32-bit
    halves, written out (a call costs Triton's interpreter about a millisecond)."""
    x = (key ^ (key >> 32)).to(tl.uint32)
    x = ((x >> 16) ^ x) * 73244475
    x = ((x >> 16) ^ x) * 73244475
    return (((x >> 16) ^ x) & (tcap - 1)).to(tl.int64)


@triton.jit
def _find(TKb, key, mask, tcap):
    """The slot holding ``key`` in a stream's table, or -1 (absent, or a lane outside ``mask``).
    A probe ends at the key or at a free slot (at most tcap probes: a full table has none)."""
    slot = _home_slot(key, tcap)
    got = key * 0 - 1
    pending = mask
    tries = 0
    while (tl.sum(pending.to(tl.int32)) > 0) & (tries < tcap):
        cur = tl.load(TKb + slot, mask=pending, other=EMPTY)
        got = tl.where(pending & (cur == key), slot, got)
        pending = pending & (cur != key) & (cur != EMPTY)
        slot = (slot + 1) & (tcap - 1)
        tries += 1
    return got


@triton.jit
def _claim(TKb, key, live, tcap):
    """The slot of every live lane's key, taking a free one (compare-and-swap) for a key not in
    the table yet; other lanes get -1. Also returns how many live lanes found no slot after
    probing the whole table (a full table: the launcher sizes it so that this stays 0)."""
    slot = _home_slot(key, tcap)
    got = key * 0 - 1
    pending = live
    tries = 0
    while (tl.sum(pending.to(tl.int32)) > 0) & (tries < tcap):
        at = tl.where(pending, slot, tcap)
        old = tl.atomic_cas(TKb + at, key * 0 + EMPTY, tl.where(pending, key, SENTINEL))
        here = pending & ((old == EMPTY) | (old == key))
        got = tl.where(here, slot, got)
        pending = pending & ~here
        slot = (slot + 1) & (tcap - 1)
        tries += 1
    return got, tl.sum(pending.to(tl.int32))


@triton.jit
def _table_fill(TK, TV, keys, vals, n, tcap, err, NN: tl.constexpr, BLOCK: tl.constexpr):
    """Put stored changes (global sorted keys ``(b N + i) N + j`` and their values, ``n`` of them)
    into the per-stream tables [B, tcap + 1]; lanes that found no slot are counted in ``err[0]``."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = i < n
    key = tl.load(keys + i, mask=live, other=0)
    b = key // NN
    base = b * (tcap + 1)
    slot, lost = _claim(TK + base, key - b * NN, live, tcap)
    tl.store(TV + base + slot, tl.load(vals + i, mask=live, other=0.0), mask=live & (slot >= 0))
    tl.atomic_add(err, lost)


@triton.jit
def _state_at(Sb, TKb, tcap, S0, hw, rows, cols, mask, N: tl.constexpr, SPARSE: tl.constexpr,
              S0_MODE: tl.constexpr, STD: tl.constexpr):
    """The stream's S at (rows, cols) (broadcasting index blocks), 0 outside ``mask``: the dense
    slice ``Sb``, or S_0 plus the sparse table's change (``Sb`` its values, ``TKb`` its keys)."""
    if SPARSE:
        slot = _find(TKb, rows * N + cols, mask, tcap)
        out = _s0(S0, hw, rows, cols, mask, N, S0_MODE, STD) + tl.load(Sb + slot, mask=slot >= 0, other=0.0)
    else:
        out = tl.load(Sb + rows * N + cols, mask=mask, other=0.0)
    return out


@triton.jit
def _apply_block(Sb, TKb, tcap, pos_out, val_out, rows, cols, vals, mask, off, C: tl.constexpr,
                 N: tl.constexpr, b, ri, ci, SPARSE: tl.constexpr):
    """S[rows, cols] += vals (``tl.atomic_add``: a step's blocks may land on one entry), and the
    block logged at ``off`` of the step's W writes. Returns the lanes the sparse table had no
    room for (0 by construction; dense: always 0)."""
    if SPARSE:
        live = mask & (vals != 0.0)          # a zero change stores nothing, as SparseState.add_
        slot, lost = _claim(TKb, rows[:, None] * N + cols[None, :], live, tcap)
        tl.atomic_add(Sb + slot, vals, mask=live & (slot >= 0))
    else:
        tl.atomic_add(Sb + rows[:, None] * N + cols[None, :], vals, mask=mask)
        lost = 0
    at = off + ri[:, None] * C + ci[None, :]
    tl.store(pos_out + at, (b * N + rows[:, None]) * N + cols[None, :], mask=mask)
    tl.store(val_out + at, vals, mask=mask)
    return lost


# ---- the step's pieces ---------------------------------------------------------------------------
@triton.jit
def _plan(V, wz, wo, bov, sc, u, a_prev, w_prev, kf, km, mm, hm, d, dm, o, k_replay,
          K: tl.constexpr, DV: tl.constexpr, K_MIN: tl.constexpr, TAU: tl.constexpr, GATE_SCALE: tl.constexpr):
    """kernels/step.py plan_writes for one stream: the summary z_{t-1}, the write module's hidden
    vector and outputs, k_t (``k_replay`` >= 0 replays a logged one), the straight-through mask,
    the softmax of the scores, the circuit weights alpha and the gates (``gates[o]``, o >= 1)."""
    vrows = tl.load(V + a_prev[:, None] * DV + d[None, :], mask=mm[:, None] & dm[None, :], other=0.0)
    z = tl.sum(w_prev[:, None] * vrows, axis=0) / K
    pre = u + tl.sum(wz * z[None, :], axis=1)
    hid = tl.where(hm, 0.5 * pre * (1.0 + tl.math.erf(pre * 0.7071067811865476)), 0.0)
    out = tl.sum(wo * hid[None, :], axis=1) + bov
    sig0 = tl.sigmoid(_pick(out, o, 0))
    k_soft = K_MIN + (K - K_MIN) * sig0
    k_hard = tl.minimum(tl.maximum(tl.math.floor(k_soft + 0.5), K_MIN), K)
    k_hard = tl.where(k_replay >= 0, k_replay + 0.0 * k_soft, k_hard)
    gates = GATE_SCALE * _tanh(out)
    soft = tl.sigmoid((k_soft - kf - 0.5) * TAU)
    mask = (tl.where(kf < k_hard, 1.0, 0.0) + soft) - soft
    e = tl.where(km, tl.exp(sc - tl.max(sc, axis=0)), 0.0)
    p = e / tl.sum(e, axis=0)
    alpha = tl.where(km, mask * p * K, 0.0)
    return vrows, z, pre, hid, sig0, k_soft, k_hard, gates, soft, mask, p, alpha


@triton.jit
def _bound_factors(before, vals, BOUND: tl.constexpr):
    """kernels/step.py bound_factors for one write block, from the state before the step."""
    a = tl.abs(vals)
    sgn = tl.where(vals > 0, 1.0, tl.where(vals < 0, -1.0, 0.0))
    return tl.where(a > 0, -_expm1(-a / BOUND) * (BOUND - sgn * before) / tl.where(a > 0, a, 1.0), 1.0)


@triton.jit
def _place(r, src, j, jm, at):
    """A vector over ``r`` holding src[j] at r = at + j (for j in ``jm``), 0 elsewhere."""
    hit = (r[:, None] == at + j[None, :]) & jm[None, :]
    return tl.sum(tl.where(hit, src[None, :], tl.zeros_like(src)[None, :]), axis=1)


@triton.jit
def _row_sq_norms(Sb, TKb, tcap, S0, hw, rows, read, N: tl.constexpr, BLOCK_N: tl.constexpr, SPARSE: tl.constexpr,
                  S0_MODE: tl.constexpr, STD: tl.constexpr):
    """Squared L2 norms of the read rows ``rows`` [RP] where ``read``, tile by tile (``row_norm``:
    a pass of its own, the scales weight the rows before the spread)."""
    sq = tl.zeros(rows.shape, dtype=S0.dtype.element_ty)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        vals = _state_at(Sb, TKb, tcap, S0, hw, rows[:, None], cols[None, :], read[:, None] & (cols < N)[None, :],
                         N, SPARSE, S0_MODE, STD)
        sq += tl.sum(vals * vals, axis=1)
    return sq


@triton.jit
def _activation_tile(Sb, TKb, tcap, S0, hw, rows, coef, rm, I, alpha, km, cols, cm, a_prev, w_prev, mm,
                     N: tl.constexpr, K: tl.constexpr, DIRECT: tl.constexpr, PERSIST: tl.constexpr,
                     SPARSE: tl.constexpr, S0_MODE: tl.constexpr, STD: tl.constexpr):
    """The spreading activation at the nodes ``cols`` [BLOCK_N]: the read rows [I_t; A_{t-1}]
    [RP] weighted by their coefficients (rows of coefficient 0, unused circuit slots, are not
    read), plus ``circuit_direct``'s term and ``active_persist``'s (A_{t-1} with its weights)."""
    vals = _state_at(Sb, TKb, tcap, S0, hw, rows[:, None], cols[None, :], (rm & (coef != 0.0))[:, None] & cm[None, :],
                     N, SPARSE, S0_MODE, STD)
    act = tl.sum(coef[:, None] * vals, axis=0)
    if DIRECT != 0.0:
        hit = (I[:, None] == cols[None, :]) & km[:, None]
        act += tl.sum(tl.where(hit, alpha[:, None], 0.0), axis=0) * (DIRECT / K)
    if PERSIST != 0.0:
        kept = (a_prev[:, None] == cols[None, :]) & mm[:, None]
        act += tl.sum(tl.where(kept, w_prev[:, None], 0.0), axis=0) * (PERSIST / K)
    return act


@triton.jit
def _merge_tile(act, cols, cm, top_v, top_i, m, mm, M: tl.constexpr):
    """Merge one tile's activations into the running top-m, kept in order: values top_v and node
    indices top_i [MP], largest first, ties to the smaller index, empty places (-inf, NO_NODE)
    last.

    Tiles come in increasing node order, so a tile's node goes after every kept node of a value
    >= its own. The tile's nodes that beat the last place are taken best first (ties to the
    smaller index), at most m of them; NaN counts as largest, as in torch.sort. (Written out, no
    helper calls inside the loop: each call costs Triton's interpreter about a millisecond.)"""
    key = tl.where(act != act, float("inf"), act)
    last = m == M - 1
    last_v = tl.sum(tl.where(last, top_v, 0.0), axis=0)
    last_i = tl.sum(tl.where(last, top_i, 0), axis=0)
    left = cm & ((last_i == NO_NODE) | (key > last_v))
    below = m[None, :] == m[:, None] - 1          # [MP, MP]: place j takes place j - 1's entry
    for _ in range(tl.minimum(tl.sum(left.to(tl.int32), axis=0), M)):
        best = tl.max(tl.where(left, key, float("-inf")), axis=0)
        node = tl.min(tl.where(left & (key == best), cols, NO_NODE), axis=0)
        place = tl.sum((mm & (top_i != NO_NODE) & (top_v >= best)).to(tl.int32), axis=0)
        # the kept ones from `place` on move down one (the last drops out); place M: no room
        down_v = tl.sum(tl.where(below, top_v[None, :], 0.0), axis=1)
        down_i = tl.sum(tl.where(below, top_i[None, :], 0), axis=1)
        top_v = tl.where(m < place, top_v, tl.where(m == place, best, down_v))
        top_i = tl.where(m < place, top_i, tl.where(m == place, node, down_i))
        left = left & (cols != node)
    return top_v, top_i


@triton.jit
def _axes(K: tl.constexpr, M: tl.constexpr, H: tl.constexpr, DV: tl.constexpr, O: tl.constexpr,
          KP: tl.constexpr, MP: tl.constexpr, HP: tl.constexpr, DVP: tl.constexpr, OP: tl.constexpr):
    """The small axes (circuit slots, active nodes, write-module width, value width, write-module
    outputs), padded to powers of two, and their masks."""
    k = tl.arange(0, KP)
    m = tl.arange(0, MP)
    h = tl.arange(0, HP)
    d = tl.arange(0, DVP)
    o = tl.arange(0, OP)
    return k, k < K, m, m < M, h, h < H, d, d < DV, o, o < O


@triton.jit
def _load_weights(Wz, Wo, bo, beta_logit, h, hm, d, dm, o, om, H: tl.constexpr, DV: tl.constexpr):
    """The write module's W_z [H, DV], W_o [O, H], b_o [O] as padded tiles, and beta = sigmoid(logit)."""
    wz = tl.load(Wz + h[:, None] * DV + d[None, :], mask=hm[:, None] & dm[None, :], other=0.0)
    wo = tl.load(Wo + o[:, None] * H + h[None, :], mask=om[:, None] & hm[None, :], other=0.0)
    bov = tl.load(bo + o, mask=om, other=0.0)
    return wz, wo, bov, tl.sigmoid(tl.load(beta_logit))


@triton.jit
def _obs_scan_fwd(S, TK, S0, hw, cidx, scores, feats, cont, c_idx, c_w, c_cidx, c_alpha, V, Wz, Wo, bo, beta_logit,
                  o_read, o_ksoft, o_gates, o_khard, o_active, o_w, o_alpha, o_pos, o_vals, o_fac, o_scale, o_grid,
                  o_err, T, tcap,
                  N: tl.constexpr, K: tl.constexpr, M: tl.constexpr, H: tl.constexpr, DV: tl.constexpr,
                  O: tl.constexpr, W: tl.constexpr, KP: tl.constexpr, MP: tl.constexpr, HP: tl.constexpr,
                  DVP: tl.constexpr, OP: tl.constexpr, RP: tl.constexpr, BLOCK_N: tl.constexpr, K_MIN: tl.constexpr,
                  TAU: tl.constexpr, GATE_SCALE: tl.constexpr, DIRECT: tl.constexpr, PERSIST: tl.constexpr,
                  BOUND: tl.constexpr,
                  EPS: tl.constexpr, SPREAD: tl.constexpr, REVERSE: tl.constexpr, ROW_NORM: tl.constexpr,
                  CHAIN: tl.constexpr, SAVE: tl.constexpr, SPARSE: tl.constexpr, S0_MODE: tl.constexpr,
                  STD: tl.constexpr):
    """One stream's window forward. Dense: ``S`` [B, N, N], written in place (TK, S0, hw unused).
    Sparse: ``S`` / ``TK`` the table's values / keys [B, tcap + 1], S_0 from ``S0`` ([N, N]) or
    hashed with the seed words ``hw``; ``o_err[b]`` counts writes the table had no room for."""
    b = tl.program_id(0).to(tl.int64)
    k, km, m, mm, h, hm, d, dm, o, om = _axes(K, M, H, DV, O, KP, MP, HP, DVP, OP)
    R: tl.constexpr = K + M
    r = tl.arange(0, RP)                  # the read rows [I_t; A_{t-1}], padded
    rm = r < R
    OFF_CHAIN: tl.constexpr = K * K + M * K
    OFF_REV: tl.constexpr = OFF_CHAIN + (K * K if CHAIN else 0)
    if SPARSE:
        Sb = S + b * (tcap + 1)
        TKb = TK + b * (tcap + 1)
    else:
        Sb = S + b * N * N
        TKb = TK
    wz, wo, bov, beta = _load_weights(Wz, Wo, bo, beta_logit, h, hm, d, dm, o, om, H, DV)
    a_prev = tl.load(c_idx + b * M + m, mask=mm, other=0)
    w_prev = tl.load(c_w + b * M + m, mask=mm, other=0.0)
    i_prev = tl.load(c_cidx + b * K + k, mask=km, other=0)
    al_prev = tl.load(c_alpha + b * K + k, mask=km, other=0.0)
    kf = k.to(w_prev.dtype)
    kk = km[:, None] & km[None, :]
    mk = mm[:, None] & km[None, :]
    km_ = km[:, None] & mm[None, :]
    lost = 0
    for t in range(T):
        bt = b * T + t
        I = tl.load(cidx + bt * K + k, mask=km, other=0)
        sc = tl.load(scores + bt * K + k, mask=km, other=float("-inf"))
        u = tl.load(feats + bt * H + h, mask=hm, other=0.0)
        c = tl.load(cont + bt)
        # 1. the write module
        _v, _z, _pre, _hid, _s0, k_soft, k_hard, gates, _soft, _mask, _p, alpha = _plan(
            V, wz, wo, bov, sc, u, a_prev, w_prev, kf, km, mm, hm, d, dm, o, -1.0, K, DV, K_MIN, TAU, GATE_SCALE)
        # 2. the writes, in WritePlan's order (intra, assoc, chain, reverse)
        v_in = (_pick(gates, o, 1) * alpha[:, None]) * alpha[None, :]
        v_as = (_pick(gates, o, 2) * w_prev[:, None]) * alpha[None, :]
        v_ch = ((c * _pick(gates, o, 3)) * al_prev[:, None]) * alpha[None, :]
        v_rev = (_pick(gates, o, 4) * alpha[:, None]) * w_prev[None, :]
        fac_t = o_fac + bt * W
        if BOUND > 0:
            # every factor from S_{t-1}: all of the step's reads before any of its writes
            f_in = _bound_factors(_state_at(Sb, TKb, tcap, S0, hw, I[:, None], I[None, :], kk, N, SPARSE, S0_MODE,
                                            STD), v_in, BOUND)
            f_as = _bound_factors(_state_at(Sb, TKb, tcap, S0, hw, a_prev[:, None], I[None, :], mk, N, SPARSE,
                                            S0_MODE, STD), v_as, BOUND)
            f_ch = _bound_factors(_state_at(Sb, TKb, tcap, S0, hw, i_prev[:, None], I[None, :], kk, N, SPARSE,
                                            S0_MODE, STD), v_ch, BOUND)
            f_rev = _bound_factors(_state_at(Sb, TKb, tcap, S0, hw, I[:, None], a_prev[None, :], km_, N, SPARSE,
                                             S0_MODE, STD), v_rev, BOUND)
            v_in = v_in * f_in
            v_as = v_as * f_as
            v_ch = v_ch * f_ch
            v_rev = v_rev * f_rev
            if SAVE:
                tl.store(fac_t + k[:, None] * K + k[None, :], f_in, mask=kk)
                tl.store(fac_t + K * K + m[:, None] * K + k[None, :], f_as, mask=mk)
                if CHAIN:
                    tl.store(fac_t + OFF_CHAIN + k[:, None] * K + k[None, :], f_ch, mask=kk)
                if REVERSE:
                    tl.store(fac_t + OFF_REV + k[:, None] * M + m[None, :], f_rev, mask=km_)
            tl.debug_barrier()
        pos_t = o_pos + bt * W
        val_t = o_vals + bt * W
        lost += _apply_block(Sb, TKb, tcap, pos_t, val_t, I, I, v_in, kk, 0, K, N, b, k, k, SPARSE)
        lost += _apply_block(Sb, TKb, tcap, pos_t, val_t, a_prev, I, v_as, mk, K * K, K, N, b, m, k, SPARSE)
        if CHAIN:
            lost += _apply_block(Sb, TKb, tcap, pos_t, val_t, i_prev, I, v_ch, kk, OFF_CHAIN, K, N, b, k, k, SPARSE)
        if REVERSE:
            lost += _apply_block(Sb, TKb, tcap, pos_t, val_t, I, a_prev, v_rev, km_, OFF_REV, M, N, b, k, m, SPARSE)
        tl.debug_barrier()          # the read sees every write of the step
        # 3. spreading activation from the rows [I_t; A_{t-1}] (one block of R), after the writes
        rows = _place(r, I, k, km, 0) + _place(r, a_prev, m, mm, K)
        if SPREAD:
            coef = _place(r, alpha / K, k, km, 0) + _place(r, beta * w_prev / K, m, mm, K)
        else:
            coef = _place(r, alpha / K, k, km, 0)
        if ROW_NORM:
            if SPREAD or SAVE:
                read = rm           # the A_{t-1} rows' scales are logged even without spreading
            else:
                read = r < K
            scale = 1.0 / (1.0 + tl.sqrt(_row_sq_norms(Sb, TKb, tcap, S0, hw, rows, read, N, BLOCK_N, SPARSE, S0_MODE,
                                                       STD)))
            coef = coef * scale
            if SAVE:
                tl.store(o_scale + bt * R + r, scale, mask=rm)
        # 4. A_t = top-m over the tiles, w_t, r_t
        top_v = tl.full([MP], float("-inf"), w_prev.dtype)
        top_i = tl.full([MP], NO_NODE, tl.int64)
        for n0 in range(0, N, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
            cm = cols < N
            act = _activation_tile(Sb, TKb, tcap, S0, hw, rows, coef, rm, I, alpha, km, cols, cm, a_prev, w_prev, mm,
                                   N, K, DIRECT, PERSIST, SPARSE, S0_MODE, STD)
            top_v, top_i = _merge_tile(act, cols, cm, top_v, top_i, m, mm, M)
        A = tl.where(mm, top_i, 0)
        act_a = top_v
        pos_w = tl.where(mm, tl.maximum(act_a, 0.0), 0.0)
        w = pos_w / (tl.sum(pos_w, axis=0) + EPS) * K
        vA = tl.load(V + A[:, None] * DV + d[None, :], mask=mm[:, None] & dm[None, :], other=0.0)
        rd = tl.sum(w[:, None] * vA, axis=0) / K
        tl.store(o_read + bt * DV + d, rd, mask=dm)
        tl.store(o_ksoft + bt, k_soft)
        tl.store(o_khard + bt, k_hard.to(tl.int64))
        tl.store(o_gates + bt * (O - 1) + (o - 1), gates, mask=(o >= 1) & om)
        tl.store(o_active + bt * M + m, A, mask=mm)
        tl.store(o_w + bt * M + m, w, mask=mm)
        tl.store(o_alpha + bt * K + k, alpha, mask=km)
        if SAVE:
            # what the backward needs of the state: its values on the grid [I_t; A_{t-1}] x A_t
            rmm = rm[:, None] & mm[None, :]
            grid_t = _state_at(Sb, TKb, tcap, S0, hw, rows[:, None], A[None, :], rmm, N, SPARSE, S0_MODE, STD)
            tl.store(o_grid + bt * R * M + r[:, None] * M + m[None, :], grid_t, mask=rmm)
        # 5. the carry
        a_prev = A
        w_prev = w
        i_prev = I
        al_prev = alpha
        tl.debug_barrier()          # the next step's writes come after every read of this one
    if SPARSE:
        tl.store(o_err + b, lost)


@triton.jit
def _g_block(Gb, wslot, at, rows, cols, mask, N: tl.constexpr, SLOTS: tl.constexpr):
    """Where dL/dS of a write block (rows x cols) lives: the dense buffer's entries, or the slots
    logged for the block's place ``at`` in the window's write log."""
    if SLOTS:
        ptrs = Gb + tl.load(wslot + at, mask=mask, other=0)
    else:
        ptrs = Gb + rows[:, None] * N + cols[None, :]
    return ptrs


@triton.jit
def _g_add_grid(Gb, gslot, at, rows, cols, vals, mask, N: tl.constexpr, SLOTS: tl.constexpr):
    """dL/dS += vals on a grid block of the step's read (rows x A_t). By slot, an entry the window
    never wrote (slot -1) is skipped: no earlier step reads dL/dS there."""
    if SLOTS:
        slot = tl.load(gslot + at, mask=mask, other=-1)
        tl.atomic_add(Gb + slot, vals, mask=mask & (slot >= 0))
    else:
        tl.atomic_add(Gb + rows[:, None] * N + cols[None, :], vals, mask=mask)


@triton.jit
def _obs_scan_bwd(G, wslot, gslot, cidx, scores, feats, cont, c_idx, c_w, c_cidx, c_alpha, V, Wz, Wo, bo, beta_logit,
                  k_hard_log, active, w_log, alpha_log, scale_log, grid, fac_log,
                  g_read, g_ksoft, g_gates,
                  d_scores, d_feats, d_V, d_Wz, d_Wo, d_bo, d_beta,
                  T,
                  N: tl.constexpr, K: tl.constexpr, M: tl.constexpr, H: tl.constexpr, DV: tl.constexpr,
                  O: tl.constexpr, W: tl.constexpr, KP: tl.constexpr, MP: tl.constexpr, HP: tl.constexpr,
                  DVP: tl.constexpr, OP: tl.constexpr, K_MIN: tl.constexpr,
                  TAU: tl.constexpr, GATE_SCALE: tl.constexpr, DIRECT: tl.constexpr, PERSIST: tl.constexpr,
                  BOUND: tl.constexpr,
                  EPS: tl.constexpr, SPREAD: tl.constexpr, REVERSE: tl.constexpr, ROW_NORM: tl.constexpr,
                  CHAIN: tl.constexpr, SLOTS: tl.constexpr):
    """One stream's window in reverse. G holds dL/dS_t (the regulariser's gradient at the final
    state already in it): dense, [B, N, N]; or by slot (``SLOTS``), one value per distinct entry
    the window wrote, with ``wslot`` [B, T, W] the slot of every logged write and ``gslot``
    [B, T, R, M] that of every grid entry (-1: not written). Writes are additive, so dL/dS_{t-1}
    = dL/dS_t and G is only added to (by step t's read) and read (by step t's writes). The
    parameter gradients but V's go to this program's rows of d_Wz [B, H, DV], d_Wo [B, O, H],
    d_bo [B, O], d_beta [B]; V's are added into d_V [N, DV] atomically."""
    b = tl.program_id(0).to(tl.int64)
    k, km, m, mm, h, hm, d, dm, o, om = _axes(K, M, H, DV, O, KP, MP, HP, DVP, OP)
    R: tl.constexpr = K + M
    OFF_CHAIN: tl.constexpr = K * K + M * K
    OFF_REV: tl.constexpr = OFF_CHAIN + (K * K if CHAIN else 0)
    if SLOTS:
        Gb = G
    else:
        Gb = G + b * N * N
    hd = hm[:, None] & dm[None, :]
    oh = om[:, None] & hm[None, :]
    kk = km[:, None] & km[None, :]
    mk = mm[:, None] & km[None, :]
    km_ = km[:, None] & mm[None, :]
    mmm = mm[:, None] & mm[None, :]
    md = mm[:, None] & dm[None, :]
    wz, wo, bov, beta = _load_weights(Wz, Wo, bo, beta_logit, h, hm, d, dm, o, om, H, DV)
    kf = k.to(wz.dtype)
    gwz = tl.zeros([HP, DVP], dtype=wz.dtype)
    gwo = tl.zeros([OP, HP], dtype=wz.dtype)
    gbo = tl.zeros([OP], dtype=wz.dtype)
    gbeta = tl.sum(tl.zeros([OP], dtype=wz.dtype), axis=0)
    gw_next = tl.zeros([MP], dtype=wz.dtype)
    gal_next = tl.zeros([KP], dtype=wz.dtype)
    for tt in range(T):
        t = T - 1 - tt
        bt = b * T + t
        if t > 0:
            a_prev = tl.load(active + (bt - 1) * M + m, mask=mm, other=0)
            w_prev = tl.load(w_log + (bt - 1) * M + m, mask=mm, other=0.0)
            i_prev = tl.load(cidx + (bt - 1) * K + k, mask=km, other=0)
            al_prev = tl.load(alpha_log + (bt - 1) * K + k, mask=km, other=0.0)
        else:
            a_prev = tl.load(c_idx + b * M + m, mask=mm, other=0)
            w_prev = tl.load(c_w + b * M + m, mask=mm, other=0.0)
            i_prev = tl.load(c_cidx + b * K + k, mask=km, other=0)
            al_prev = tl.load(c_alpha + b * K + k, mask=km, other=0.0)
        I = tl.load(cidx + bt * K + k, mask=km, other=0)
        sc = tl.load(scores + bt * K + k, mask=km, other=float("-inf"))
        u = tl.load(feats + bt * H + h, mask=hm, other=0.0)
        c = tl.load(cont + bt)
        kh = tl.load(k_hard_log + bt).to(wz.dtype)
        vrows, z, pre, hid, sig0, k_soft, k_hard, gates, soft, mask, p, alpha = _plan(
            V, wz, wo, bov, sc, u, a_prev, w_prev, kf, km, mm, hm, d, dm, o, kh, K, DV, K_MIN, TAU, GATE_SCALE)
        # the read: activation at A_t rebuilt from the logged grid
        A = tl.load(active + bt * M + m, mask=mm, other=0)
        cI = alpha / K
        if SPREAD:
            cA = beta * w_prev / K
        else:
            cA = w_prev * 0.0
        if ROW_NORM:
            sI = tl.load(scale_log + bt * R + k, mask=km, other=0.0)
            sA = tl.load(scale_log + bt * R + K + m, mask=mm, other=0.0)
        else:
            sI = tl.where(km, 1.0, 0.0)
            sA = tl.where(mm, 1.0, 0.0)
        gI = tl.load(grid + bt * R * M + k[:, None] * M + m[None, :], mask=km_, other=0.0)       # [KP, MP]
        gA = tl.load(grid + bt * R * M + (K + m[:, None]) * M + m[None, :], mask=mmm, other=0.0)  # [MP, MP]
        hit = tl.where((I[:, None] == A[None, :]) & km_, 1.0, 0.0)                               # [KP, MP]
        kept = tl.where((a_prev[:, None] == A[None, :]) & mmm, 1.0, 0.0)                          # [MP, MP]
        a = tl.sum((cI * sI)[:, None] * gI, axis=0) + tl.sum((cA * sA)[:, None] * gA, axis=0) \
            + tl.sum(alpha[:, None] * hit, axis=0) * (DIRECT / K) \
            + tl.sum(w_prev[:, None] * kept, axis=0) * (PERSIST / K)
        pos_a = tl.where(mm, tl.maximum(a, 0.0), 0.0)
        D = tl.sum(pos_a, axis=0) + EPS
        w = pos_a / D * K
        # r_t = sum_j w_j V[A_j] / K
        gr = tl.load(g_read + bt * DV + d, mask=dm, other=0.0)
        vA = tl.load(V + A[:, None] * DV + d[None, :], mask=md, other=0.0)
        tl.atomic_add(d_V + A[:, None] * DV + d[None, :], w[:, None] * gr[None, :] / K, mask=md)
        dw = gw_next + tl.sum(vA * gr[None, :], axis=1) / K
        # w_t = relu(a) / (sum relu(a) + eps) * K
        dotw = tl.sum(dw * pos_a, axis=0)
        da = tl.where((a > 0) & mm, dw * K / D - dotw * K / (D * D), 0.0)
        # to the coefficients, and to dL/dS_t on the grid
        dcI = tl.sum(gI * da[None, :], axis=1)
        dcA = tl.sum(gA * da[None, :], axis=1)
        g_at = bt * R * M
        _g_add_grid(Gb, gslot, g_at + k[:, None] * M + m[None, :], I, A, (cI * sI)[:, None] * da[None, :], km_,
                    N, SLOTS)
        _g_add_grid(Gb, gslot, g_at + (K + m[:, None]) * M + m[None, :], a_prev, A, (cA * sA)[:, None] * da[None, :],
                    mmm, N, SLOTS)
        tl.debug_barrier()
        dalpha = gal_next + dcI * sI / K + tl.sum(hit * da[None, :], axis=1) * (DIRECT / K)
        dw_prev = tl.sum(kept * da[None, :], axis=1) * (PERSIST / K)
        if SPREAD:
            dc = dcA * sA / K
            dw_prev += dc * beta
            gbeta += tl.sum(dc * w_prev, axis=0)
        # the writes: dL/d(planned change) = G at the entry (times the bound's factor)
        g_in = _pick(gates, o, 1)
        g_as = _pick(gates, o, 2)
        g_ch = _pick(gates, o, 3)
        g_rev = _pick(gates, o, 4)
        w_at = bt * W
        dv_in = tl.load(_g_block(Gb, wslot, w_at + k[:, None] * K + k[None, :], I, I, kk, N, SLOTS), mask=kk,
                        other=0.0)
        dv_as = tl.load(_g_block(Gb, wslot, w_at + K * K + m[:, None] * K + k[None, :], a_prev, I, mk, N, SLOTS),
                        mask=mk, other=0.0)
        if BOUND > 0:
            dv_in = dv_in * tl.load(fac_log + bt * W + k[:, None] * K + k[None, :], mask=kk, other=0.0)
            dv_as = dv_as * tl.load(fac_log + bt * W + K * K + m[:, None] * K + k[None, :], mask=mk, other=0.0)
        dg_in = tl.sum(tl.sum(dv_in * alpha[:, None] * alpha[None, :], axis=1), axis=0)
        dalpha += tl.sum(dv_in * alpha[None, :], axis=1) * g_in + tl.sum(dv_in * alpha[:, None], axis=0) * g_in
        dg_as = tl.sum(tl.sum(dv_as * w_prev[:, None] * alpha[None, :], axis=1), axis=0)
        dw_prev += tl.sum(dv_as * alpha[None, :], axis=1) * g_as
        dalpha += tl.sum(dv_as * w_prev[:, None], axis=0) * g_as
        dg_ch = dg_in * 0.0
        dal_prev = al_prev * 0.0
        if CHAIN:
            dv_ch = tl.load(_g_block(Gb, wslot, w_at + OFF_CHAIN + k[:, None] * K + k[None, :], i_prev, I, kk, N,
                                     SLOTS), mask=kk, other=0.0)
            if BOUND > 0:
                dv_ch = dv_ch * tl.load(fac_log + bt * W + OFF_CHAIN + k[:, None] * K + k[None, :], mask=kk,
                                        other=0.0)
            dg_ch = tl.sum(tl.sum(dv_ch * c * al_prev[:, None] * alpha[None, :], axis=1), axis=0)
            dal_prev += tl.sum(dv_ch * alpha[None, :], axis=1) * (c * g_ch)
            dalpha += tl.sum(dv_ch * al_prev[:, None], axis=0) * (c * g_ch)
        dg_rev = dg_in * 0.0
        if REVERSE:
            dv_rev = tl.load(_g_block(Gb, wslot, w_at + OFF_REV + k[:, None] * M + m[None, :], I, a_prev, km_, N,
                                      SLOTS), mask=km_, other=0.0)
            if BOUND > 0:
                dv_rev = dv_rev * tl.load(fac_log + bt * W + OFF_REV + k[:, None] * M + m[None, :], mask=km_,
                                          other=0.0)
            dg_rev = tl.sum(tl.sum(dv_rev * alpha[:, None] * w_prev[None, :], axis=1), axis=0)
            dalpha += tl.sum(dv_rev * w_prev[None, :], axis=1) * g_rev
            dw_prev += tl.sum(dv_rev * alpha[:, None], axis=0) * g_rev
        # gates = gate_scale tanh(out[1:])
        gg = tl.load(g_gates + bt * (O - 1) + (o - 1), mask=(o >= 1) & om, other=0.0)
        dg = gg + tl.where(o == 1, dg_in, 0.0) + tl.where(o == 2, dg_as, 0.0) + tl.where(o == 3, dg_ch, 0.0) \
            + tl.where(o == 4, dg_rev, 0.0)
        th = gates / GATE_SCALE
        dout = tl.where((o >= 1) & om, dg * GATE_SCALE * (1.0 - th * th), 0.0)
        # alpha = mask * softmax(scores) * K, the mask straight-through to k_soft
        dmask = dalpha * p * K
        dp = dalpha * mask * K
        pdp = tl.sum(tl.where(km, dp * p, 0.0), axis=0)
        dk = tl.load(g_ksoft + bt) + tl.sum(tl.where(km, dmask * soft * (1.0 - soft) * TAU, 0.0), axis=0)
        tl.store(d_scores + bt * K + k, p * (dp - pdp), mask=km)
        dout += tl.where(o == 0, dk * (K - K_MIN) * sig0 * (1.0 - sig0), 0.0)
        # out = W_o hid + b_o; hid = gelu(u + W_z z)
        gbo += dout
        gwo += dout[:, None] * hid[None, :]
        dhid = tl.sum(wo * dout[:, None], axis=0)
        cdf = 0.5 * (1.0 + tl.math.erf(pre * 0.7071067811865476))
        pdf = tl.exp(-0.5 * pre * pre) * 0.3989422804014327
        dpre = tl.where(hm, dhid * (cdf + pre * pdf), 0.0)
        tl.store(d_feats + bt * H + h, dpre, mask=hm)
        gwz += dpre[:, None] * z[None, :]
        dz = tl.sum(wz * dpre[:, None], axis=0)
        # z = sum_j w_{t-1,j} V[A_{t-1,j}] / K
        tl.atomic_add(d_V + a_prev[:, None] * DV + d[None, :], w_prev[:, None] * dz[None, :] / K, mask=md)
        dw_prev += tl.sum(vrows * dz[None, :], axis=1) / K
        gw_next = dw_prev
        gal_next = dal_prev
        tl.debug_barrier()
    tl.store(d_Wz + b * H * DV + h[:, None] * DV + d[None, :], gwz, mask=hd)
    tl.store(d_Wo + b * O * H + o[:, None] * H + h[None, :], gwo, mask=oh)
    tl.store(d_bo + b * O + o, gbo, mask=om)
    tl.store(d_beta + b, gbeta)
