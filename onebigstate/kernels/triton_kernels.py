"""Triton kernels of the OBS scan: a fused forward and its backward, one program per stream.

Imported only when the ``triton`` backend runs (``triton_scan.py`` wraps them). The math is
``kernels/step.py``'s and the backward is ``csrc/obs_scan_cpu.cpp``'s, step for step: the forward
logs the state on the grid each step read at its active columns, so the backward never rebuilds
the state; it keeps dL/dS in a dense buffer the size of the state and walks the window in
reverse. Triton 3.6 (the GPU machines) has no ``tanh``/``expm1``: both are written out here with
the precision the float64 tests need.
"""
import triton
import triton.language as tl


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
def _bound_factors(Sb, rows, cols, vals, mask, N: tl.constexpr, BOUND: tl.constexpr):
    """kernels/step.py bound_factors for one write block, from the state before the step."""
    before = tl.load(Sb + rows[:, None] * N + cols[None, :], mask=mask, other=0.0)
    a = tl.abs(vals)
    sgn = tl.where(vals > 0, 1.0, tl.where(vals < 0, -1.0, 0.0))
    return tl.where(a > 0, -_expm1(-a / BOUND) * (BOUND - sgn * before) / tl.where(a > 0, a, 1.0), 1.0)


@triton.jit
def _apply_block(Sb, pos_out, val_out, rows, cols, vals, mask, off, C: tl.constexpr, N: tl.constexpr, b, ri, ci):
    """S[rows, cols] += vals, and the block logged at ``off`` of the step's W writes."""
    tl.atomic_add(Sb + rows[:, None] * N + cols[None, :], vals, mask=mask)
    at = off + ri[:, None] * C + ci[None, :]
    tl.store(pos_out + at, (b * N + rows[:, None]) * N + cols[None, :], mask=mask)
    tl.store(val_out + at, vals, mask=mask)


@triton.jit
def _row_scale(row):
    return 1.0 / (1.0 + tl.sqrt(tl.sum(row * row, axis=0)))


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
def _obs_scan_fwd(S, cidx, scores, feats, cont, c_idx, c_w, c_cidx, c_alpha, V, Wz, Wo, bo, beta_logit,
                  o_read, o_ksoft, o_gates, o_khard, o_active, o_w, o_alpha, o_pos, o_vals, o_fac, o_scale, o_grid,
                  T,
                  N: tl.constexpr, K: tl.constexpr, M: tl.constexpr, H: tl.constexpr, DV: tl.constexpr,
                  O: tl.constexpr, W: tl.constexpr, KP: tl.constexpr, MP: tl.constexpr, HP: tl.constexpr,
                  DVP: tl.constexpr, OP: tl.constexpr, NP: tl.constexpr, K_MIN: tl.constexpr,
                  TAU: tl.constexpr, GATE_SCALE: tl.constexpr, DIRECT: tl.constexpr, BOUND: tl.constexpr,
                  EPS: tl.constexpr, SPREAD: tl.constexpr, REVERSE: tl.constexpr, ROW_NORM: tl.constexpr,
                  CHAIN: tl.constexpr, SAVE: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    k, km, m, mm, h, hm, d, dm, o, om = _axes(K, M, H, DV, O, KP, MP, HP, DVP, OP)
    n = tl.arange(0, NP)
    nm = n < N
    R: tl.constexpr = K + M
    OFF_CHAIN: tl.constexpr = K * K + M * K
    OFF_REV: tl.constexpr = OFF_CHAIN + (K * K if CHAIN else 0)
    Sb = S + b * N * N
    wz, wo, bov, beta = _load_weights(Wz, Wo, bo, beta_logit, h, hm, d, dm, o, om, H, DV)
    a_prev = tl.load(c_idx + b * M + m, mask=mm, other=0)
    w_prev = tl.load(c_w + b * M + m, mask=mm, other=0.0)
    i_prev = tl.load(c_cidx + b * K + k, mask=km, other=0)
    al_prev = tl.load(c_alpha + b * K + k, mask=km, other=0.0)
    kf = k.to(w_prev.dtype)
    kk = km[:, None] & km[None, :]
    mk = mm[:, None] & km[None, :]
    km_ = km[:, None] & mm[None, :]
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
            f_in = _bound_factors(Sb, I, I, v_in, kk, N, BOUND)
            f_as = _bound_factors(Sb, a_prev, I, v_as, mk, N, BOUND)
            f_ch = _bound_factors(Sb, i_prev, I, v_ch, kk, N, BOUND)
            f_rev = _bound_factors(Sb, I, a_prev, v_rev, km_, N, BOUND)
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
        _apply_block(Sb, pos_t, val_t, I, I, v_in, kk, 0, K, N, b, k, k)
        _apply_block(Sb, pos_t, val_t, a_prev, I, v_as, mk, K * K, K, N, b, m, k)
        if CHAIN:
            _apply_block(Sb, pos_t, val_t, i_prev, I, v_ch, kk, OFF_CHAIN, K, N, b, k, k)
        if REVERSE:
            _apply_block(Sb, pos_t, val_t, I, a_prev, v_rev, km_, OFF_REV, M, N, b, k, m)
        tl.debug_barrier()          # the read sees every write of the step
        # 3. spreading activation from the rows [I_t, A_{t-1}], after the writes
        act = tl.zeros([NP], dtype=w_prev.dtype)
        for r in tl.static_range(KP):
            if r < K:
                coeff = _pick(alpha, k, r) / K
                row = tl.load(Sb + _pick(I, k, r) * N + n, mask=nm, other=0.0)
                if ROW_NORM:
                    scale = _row_scale(row)
                    coeff = coeff * scale
                    if SAVE:
                        tl.store(o_scale + bt * R + r, scale)
                act += coeff * row
        for r in tl.static_range(MP):
            if r < M:
                if SPREAD or (ROW_NORM and SAVE):
                    row = tl.load(Sb + _pick(a_prev, m, r) * N + n, mask=nm, other=0.0)
                    coeff = beta * _pick(w_prev, m, r) / K
                    if ROW_NORM:
                        scale = _row_scale(row)
                        coeff = coeff * scale
                        if SAVE:
                            tl.store(o_scale + bt * R + K + r, scale)
                    if SPREAD:
                        act += coeff * row
        if DIRECT != 0.0:
            for r in tl.static_range(KP):
                if r < K:
                    act += tl.where(n == _pick(I, k, r), _pick(alpha, k, r) * (DIRECT / K), 0.0)
        # 4. A_t = top-m (M rounds of arg-max, ties to the smaller index), w_t, r_t
        cur = tl.where(nm, act, float("-inf"))
        A = tl.zeros([MP], dtype=a_prev.dtype)
        act_a = tl.zeros([MP], dtype=w_prev.dtype)
        for j in tl.static_range(MP):
            if j < M:
                best = tl.argmax(cur, axis=0, tie_break_left=True)
                A = tl.where(m == j, best, A)
                act_a = tl.where(m == j, tl.max(cur, axis=0), act_a)
                cur = tl.where(n == best, float("-inf"), cur)
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
            g_t = o_grid + bt * R * M
            tl.store(g_t + k[:, None] * M + m[None, :],
                     tl.load(Sb + I[:, None] * N + A[None, :], mask=km_, other=0.0), mask=km_)
            mmm = mm[:, None] & mm[None, :]
            tl.store(g_t + (K + m[:, None]) * M + m[None, :],
                     tl.load(Sb + a_prev[:, None] * N + A[None, :], mask=mmm, other=0.0), mask=mmm)
        # 5. the carry
        a_prev = A
        w_prev = w
        i_prev = I
        al_prev = alpha


@triton.jit
def _obs_scan_bwd(G, cidx, scores, feats, cont, c_idx, c_w, c_cidx, c_alpha, V, Wz, Wo, bo, beta_logit,
                  k_hard_log, active, w_log, alpha_log, scale_log, grid, fac_log,
                  g_read, g_ksoft, g_gates,
                  d_scores, d_feats, d_V, d_Wz, d_Wo, d_bo, d_beta,
                  T,
                  N: tl.constexpr, K: tl.constexpr, M: tl.constexpr, H: tl.constexpr, DV: tl.constexpr,
                  O: tl.constexpr, W: tl.constexpr, KP: tl.constexpr, MP: tl.constexpr, HP: tl.constexpr,
                  DVP: tl.constexpr, OP: tl.constexpr, K_MIN: tl.constexpr,
                  TAU: tl.constexpr, GATE_SCALE: tl.constexpr, DIRECT: tl.constexpr, BOUND: tl.constexpr,
                  EPS: tl.constexpr, SPREAD: tl.constexpr, REVERSE: tl.constexpr, ROW_NORM: tl.constexpr,
                  CHAIN: tl.constexpr):
    """One stream's window in reverse. G [B, N, N] holds dL/dS_t (the regulariser's gradient at
    the final state already in it); writes are additive, so dL/dS_{t-1} = dL/dS_t and G is only
    added to (by step t's read) and read (by step t's writes). The parameter gradients but V's go
    to this program's rows of d_Wz [B, H, DV], d_Wo [B, O, H], d_bo [B, O], d_beta [B]; V's are
    added into d_V [N, DV] atomically."""
    b = tl.program_id(0).to(tl.int64)
    k, km, m, mm, h, hm, d, dm, o, om = _axes(K, M, H, DV, O, KP, MP, HP, DVP, OP)
    R: tl.constexpr = K + M
    OFF_CHAIN: tl.constexpr = K * K + M * K
    OFF_REV: tl.constexpr = OFF_CHAIN + (K * K if CHAIN else 0)
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
        a = tl.sum((cI * sI)[:, None] * gI, axis=0) + tl.sum((cA * sA)[:, None] * gA, axis=0) \
            + tl.sum(alpha[:, None] * hit, axis=0) * (DIRECT / K)
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
        tl.atomic_add(Gb + I[:, None] * N + A[None, :], (cI * sI)[:, None] * da[None, :], mask=km_)
        tl.atomic_add(Gb + a_prev[:, None] * N + A[None, :], (cA * sA)[:, None] * da[None, :], mask=mmm)
        tl.debug_barrier()
        dalpha = gal_next + dcI * sI / K + tl.sum(hit * da[None, :], axis=1) * (DIRECT / K)
        dw_prev = w_prev * 0.0
        if SPREAD:
            dc = dcA * sA / K
            dw_prev += dc * beta
            gbeta += tl.sum(dc * w_prev, axis=0)
        # the writes: dL/d(planned change) = G at the entry (times the bound's factor)
        g_in = _pick(gates, o, 1)
        g_as = _pick(gates, o, 2)
        g_ch = _pick(gates, o, 3)
        g_rev = _pick(gates, o, 4)
        dv_in = tl.load(Gb + I[:, None] * N + I[None, :], mask=kk, other=0.0)
        dv_as = tl.load(Gb + a_prev[:, None] * N + I[None, :], mask=mk, other=0.0)
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
            dv_ch = tl.load(Gb + i_prev[:, None] * N + I[None, :], mask=kk, other=0.0)
            if BOUND > 0:
                dv_ch = dv_ch * tl.load(fac_log + bt * W + OFF_CHAIN + k[:, None] * K + k[None, :], mask=kk,
                                        other=0.0)
            dg_ch = tl.sum(tl.sum(dv_ch * c * al_prev[:, None] * alpha[None, :], axis=1), axis=0)
            dal_prev += tl.sum(dv_ch * alpha[None, :], axis=1) * (c * g_ch)
            dalpha += tl.sum(dv_ch * al_prev[:, None], axis=0) * (c * g_ch)
        dg_rev = dg_in * 0.0
        if REVERSE:
            dv_rev = tl.load(Gb + I[:, None] * N + a_prev[None, :], mask=km_, other=0.0)
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
