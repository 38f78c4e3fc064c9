"""Expected rates of the model arrays: scalar (normfactor, lumi, normsys) and additive (histosys)
interpolation, per-bin factors, and the one model pass that gives rates, their Jacobian and second
derivatives (layout of ``A``: :mod:`nextstat.engine.numba_core`).
"""

from __future__ import annotations

import math

import numpy as np

from nextstat.engine.compiled.codes import HS_CODE0, HS_CODE2, MODE_BLOCKS, MODE_HESS2, MODE_JAC, MODE_RATES, SC_CODE1, SC_LINEAR
from nextstat.engine.jit import kernel, leaf
from nextstat.engine.layout import (BLK_B0, BLK_NB, BLK_OFF, HS_CODE, HS_DN, HS_DOFF, HS_PAR, HS_PTR, HS_UP,
    NOM, N_BINS, PB_PAR, PB_PTR, SC_COEF, SC_KIND, SC_LHI, SC_LLO, SC_PAR, SC_PTR)


@leaf
def scalar_factor(kind, x, lhi, llo, coef, t, deriv=True):
    """Factor f(x) and its first two derivatives for the scalar multiplicative term ``t``
    (``lhi``, ``llo``: log of its hi and lo factors; ``coef[t]``: its code4 polynomial). The
    derivatives are 0 without ``deriv``, which skips them in the polynomial.

    code1 (pyhf interpolators/code1.py): hi^x for x > 0, lo^-x otherwise.
    code4 (pyhf interpolators/code4.py, alpha0 = 1): exponential for |x| >= 1, else the
    6th-order polynomial 1 + sum_i a_i x^i.
    """
    if kind == SC_LINEAR:
        return x, 1.0, 0.0
    if x >= 1.0 or (kind == SC_CODE1 and x > 0.0):
        f = math.exp(lhi * x)
        return f, lhi * f, lhi * lhi * f
    if x <= -1.0 or kind == SC_CODE1:
        f = math.exp(-llo * x)
        return f, -llo * f, llo * llo * f
    a1 = coef[t, 0]
    a2 = coef[t, 1]
    a3 = coef[t, 2]
    a4 = coef[t, 3]
    a5 = coef[t, 4]
    a6 = coef[t, 5]
    f = 1.0 + x * (a1 + x * (a2 + x * (a3 + x * (a4 + x * (a5 + x * a6)))))
    if not deriv:
        return f, 0.0, 0.0
    f1 = a1 + x * (2.0 * a2 + x * (3.0 * a3 + x * (4.0 * a4 + x * (5.0 * a5 + x * 6.0 * a6))))
    f2 = 2.0 * a2 + x * (6.0 * a3 + x * (12.0 * a4 + x * (20.0 * a5 + x * 30.0 * a6)))
    return f, f1, f2


@leaf
def histo_coeffs(code, x, out, k):
    """Coefficients ``c = out[k]`` of an additive histosys delta, which is linear in the bin's
    variations: ``delta = c[0] up + c[1] dn``, ``d delta / dx = c[2] up + c[3] dn``,
    ``d^2 delta / dx^2 = c[4] up + c[5] dn`` with ``up = hi - nom``, ``dn = nom - lo``.
    One evaluation per term serves all its bins (a row of a 2-D buffer: no array view is
    created in the hot loop).

    code0: piecewise linear. code2: pyhf 0.7.6's quadratic ``a x^2 + b x`` with
    ``a = (up - dn) / 2``, ``b = (up + dn) / 2`` inside ``|x| <= 1``; outside its extrapolation is
    ``(x - 1)(b + 2a)`` for x > 1 and ``x (b - 2a)`` for x < -1 (pyhf interpolators/code2.py).
    code4p: ``x (up + dn) / 2 + (up - dn) / 16 * x^2 (15 - 10 x^2 + 3 x^4)`` inside, linear
    outside (pyhf interpolators/code4p.py).
    """
    for i in range(6):
        out[k, i] = 0.0
    if code == HS_CODE0:
        if x > 0.0:
            out[k, 0] = x
            out[k, 2] = 1.0
        else:
            out[k, 1] = x
            out[k, 3] = 1.0
        return
    if code == HS_CODE2:
        if x > 1.0:
            out[k, 0] = 1.5 * (x - 1.0)
            out[k, 1] = -0.5 * (x - 1.0)
            out[k, 2] = 1.5
            out[k, 3] = -0.5
        elif x >= -1.0:
            out[k, 0] = 0.5 * x * x + 0.5 * x
            out[k, 1] = -0.5 * x * x + 0.5 * x
            out[k, 2] = x + 0.5
            out[k, 3] = -x + 0.5
            out[k, 4] = 1.0
            out[k, 5] = -1.0
        else:
            out[k, 0] = -0.5 * x
            out[k, 1] = 1.5 * x
            out[k, 2] = -0.5
            out[k, 3] = 1.5
        return
    if x > 1.0:
        out[k, 0] = x
        out[k, 2] = 1.0
        return
    if x < -1.0:
        out[k, 1] = x
        out[k, 3] = 1.0
        return
    x2 = x * x
    q0 = 0.0625 * x2 * (15.0 + x2 * (-10.0 + 3.0 * x2))
    q1 = 0.0625 * x * (30.0 + x2 * (-40.0 + 18.0 * x2))
    q2 = 0.0625 * (30.0 + x2 * (-120.0 + 90.0 * x2))
    out[k, 0] = 0.5 * x + q0
    out[k, 1] = 0.5 * x - q0
    out[k, 2] = 0.5 + q1
    out[k, 3] = 0.5 - q1
    out[k, 4] = q2
    out[k, 5] = -q2


@leaf
def _excl1(pnz, nz, f):
    """Product of all factors but one (value f), from the product of non-zero factors ``pnz``
    and the count of zero factors ``nz``; exact when factors vanish (e.g. mu = 0)."""
    if f == 0.0:
        return pnz if nz == 1 else 0.0
    return pnz / f if nz == 0 else 0.0


@leaf
def _excl2(pnz, nz, fa, fb):
    """Product of all factors but two (values fa, fb); see :func:`_excl1`."""
    rest = nz - (1 if fa == 0.0 else 0) - (1 if fb == 0.0 else 0)
    if rest > 0:
        return 0.0
    den = (1.0 if fa == 0.0 else fa) * (1.0 if fb == 0.0 else fb)
    return pnz / den


@leaf
def _sym_add(H, a, b, v):
    """Add v to H[a, b] and H[b, a], storing into the lower triangle only (the caller mirrors
    it): 2 v on the diagonal when a == b."""
    if a > b:
        H[a, b] += v
    elif b > a:
        H[b, a] += v
    else:
        H[a, a] += 2.0 * v


@kernel
def _block_sizes(A):
    """Largest block's bin count, scalar-term count and histosys-term count (each >= 1)."""
    blk_nb, sc_ptr, hs_ptr = A[BLK_NB], A[SC_PTR], A[HS_PTR]
    maxnb = 1
    maxk = 1
    maxh = 1
    for i in range(blk_nb.shape[0]):
        maxnb = max(maxnb, blk_nb[i])
        maxk = max(maxk, sc_ptr[i + 1] - sc_ptr[i])
        maxh = max(maxh, hs_ptr[i + 1] - hs_ptr[i])
    return maxnb, maxk, maxh


@kernel
def pass_scratch(A):
    """Scratch buffers for :func:`model_pass`, sized for the model's largest block; allocate
    once per fit and reuse (a small model's pass is otherwise mostly allocation)."""
    maxnb, maxk, maxh = _block_sizes(A)
    return (np.empty((maxh, 6)), np.empty((3, maxnb)), np.empty(maxnb, dtype=np.int64), np.empty((4, maxk)))


@kernel
def _point_buffers(F, o, B, P):
    """(nu (B,), J (B, P), g (P,), dcon (P,), r (B,), w (B,)) as views of F from offset o."""
    J = F[o + B:o + B + B * P].reshape(B, P)
    o2 = o + B + B * P
    return F[o:o + B], J, F[o2:o2 + P], F[o2 + P:o2 + 2 * P], F[o2 + 2 * P:o2 + 2 * P + B], \
        F[o2 + 2 * P + B:o2 + 2 * P + 2 * B]


@leaf
def model_pass(theta, r, A, mode, out, J, H, S):
    """One pass over all blocks (``S``: :func:`pass_scratch`).

    mode MODE_RATES: out[b] += nu_b; MODE_JAC: also J[b, p] += d nu_b / d theta_p;
    MODE_HESS2: H += sum_b r_b d^2 nu_b / d theta d theta^T, into the lower triangle of H
    only (the caller mirrors it); MODE_BLOCKS: out[flat] = nu per block.
    """
    blk_b0 = A[BLK_B0]
    blk_nb = A[BLK_NB]
    blk_off = A[BLK_OFF]
    nom = A[NOM]
    sc_ptr = A[SC_PTR]
    sc_par = A[SC_PAR]
    sc_kind = A[SC_KIND]
    sc_lhi = A[SC_LHI]
    sc_llo = A[SC_LLO]
    sc_coef = A[SC_COEF]
    hs_ptr = A[HS_PTR]
    hs_par = A[HS_PAR]
    hs_code = A[HS_CODE]
    hs_doff = A[HS_DOFF]
    hs_up = A[HS_UP]
    hs_dn = A[HS_DN]
    pb_ptr = A[PB_PTR]
    pb_par = A[PB_PAR]
    nblk = blk_b0.shape[0]
    hc, bins, Gz, fk = S  # histo_coeffs of the block's histosys terms; per-bin and per-term rows
    base = bins[0]
    G = bins[1]
    Gp = bins[2]
    f0 = fk[0]
    f1 = fk[1]
    f2 = fk[2]
    fx = fk[3]  # product of the other scalar factors times f1
    deriv = mode == MODE_JAC or mode == MODE_HESS2

    for blk in range(nblk):
        b0 = blk_b0[blk]
        nb = blk_nb[blk]
        off = blk_off[blk]
        k0 = sc_ptr[blk]
        nk = sc_ptr[blk + 1] - k0
        nz = 0
        pnz = 1.0
        for k in range(nk):
            t = k0 + k
            a, b, c = scalar_factor(sc_kind[t], theta[sc_par[t]], sc_lhi[t], sc_llo[t], sc_coef, t, deriv)
            f0[k] = a
            f1[k] = b
            f2[k] = c
            if a == 0.0:
                nz += 1
            else:
                pnz *= a
        F = pnz if nz == 0 else 0.0
        if deriv:
            for k in range(nk):
                fx[k] = _excl1(pnz, nz, f0[k]) * f1[k]
        h0 = hs_ptr[blk]
        h1 = hs_ptr[blk + 1]
        for j in range(nb):
            base[j] = nom[off + j]
        for h in range(h0, h1):
            histo_coeffs(hs_code[h], theta[hs_par[h]], hc, h - h0)
            cu = hc[h - h0, 0]
            cd = hc[h - h0, 1]
            o = hs_doff[h]
            for j in range(nb):
                base[j] += cu * hs_up[o + j] + cd * hs_dn[o + j]
        for j in range(nb):
            gz = 0
            gp = 1.0
            for q in range(pb_ptr[off + j], pb_ptr[off + j + 1]):
                v = theta[pb_par[q]]
                if v == 0.0:
                    gz += 1
                else:
                    gp *= v
            Gz[j] = gz
            Gp[j] = gp
            G[j] = gp if gz == 0 else 0.0

        if mode == MODE_BLOCKS:
            for j in range(nb):
                out[off + j] = base[j] * F * G[j]
            continue
        if mode == MODE_RATES or mode == MODE_JAC:
            for j in range(nb):
                out[b0 + j] += base[j] * F * G[j]
        if mode == MODE_JAC:
            for k in range(nk):
                if fx[k] != 0.0:
                    p = sc_par[k0 + k]
                    for j in range(nb):
                        J[b0 + j, p] += base[j] * G[j] * fx[k]
            for h in range(h0, h1):
                p = hs_par[h]
                cu = hc[h - h0, 2] * F
                cd = hc[h - h0, 3] * F
                o = hs_doff[h]
                for j in range(nb):
                    J[b0 + j, p] += (cu * hs_up[o + j] + cd * hs_dn[o + j]) * G[j]
            for j in range(nb):
                for q in range(pb_ptr[off + j], pb_ptr[off + j + 1]):
                    p = pb_par[q]
                    J[b0 + j, p] += base[j] * F * _excl1(Gp[j], Gz[j], theta[p])
        if mode == MODE_HESS2:
            R1 = 0.0
            for j in range(nb):
                R1 += r[b0 + j] * base[j] * G[j]
            # scalar x scalar: R1 * prod_{i != k, l} f_i * f1_k * f1_l, which without vanishing
            # factors is (R1 * F) * u_k * u_l with u = f1 / f0 (one multiply per pair)
            for k in range(nk):
                pk = sc_par[k0 + k]
                if f2[k] != 0.0:
                    H[pk, pk] += R1 * _excl1(pnz, nz, f0[k]) * f2[k]
            if nz == 0:
                c = R1 * F
                for k in range(nk):  # f1, f2 are free to reuse from here on
                    f2[k] = f1[k] / f0[k]
                    f1[k] = c * f2[k]
                # terms are in parameter order (model build): pair (l, k < l) goes to row p_l
                for l in range(1, nk):
                    vl = f1[l]
                    if vl == 0.0:
                        continue
                    pl = sc_par[k0 + l]
                    for k in range(l):
                        _sym_add(H, pl, sc_par[k0 + k], vl * f2[k])
            else:
                for k in range(nk):
                    pk = sc_par[k0 + k]
                    for l in range(k + 1, nk):
                        v = R1 * _excl2(pnz, nz, f0[k], f0[l]) * f1[k] * f1[l]
                        if v != 0.0:
                            _sym_add(H, pk, sc_par[k0 + l], v)
            # histosys x (histosys itself, scalar)
            for h in range(h0, h1):
                ph = hs_par[h]
                S1 = 0.0
                S2 = 0.0
                c2 = hc[h - h0, 2]
                c3 = hc[h - h0, 3]
                c4 = hc[h - h0, 4]
                c5 = hc[h - h0, 5]
                o = hs_doff[h]
                for j in range(nb):
                    rg = r[b0 + j] * G[j]
                    S1 += rg * (c2 * hs_up[o + j] + c3 * hs_dn[o + j])
                    S2 += rg * (c4 * hs_up[o + j] + c5 * hs_dn[o + j])
                H[ph, ph] += S2 * F
                for k in range(nk):
                    if fx[k] != 0.0:
                        _sym_add(H, ph, sc_par[k0 + k], S1 * fx[k])
            # per-bin x (scalar, histosys, per-bin)
            for j in range(nb):
                rj = r[b0 + j]
                if rj == 0.0:
                    continue
                q0 = pb_ptr[off + j]
                q1 = pb_ptr[off + j + 1]
                for q in range(q0, q1):
                    pq = pb_par[q]
                    Gq = _excl1(Gp[j], Gz[j], theta[pq])
                    for k in range(nk):
                        if fx[k] != 0.0:
                            _sym_add(H, pq, sc_par[k0 + k], rj * base[j] * Gq * fx[k])
                    for h in range(h0, h1):
                        o = hs_doff[h] + j
                        d1 = hc[h - h0, 2] * hs_up[o] + hc[h - h0, 3] * hs_dn[o]
                        _sym_add(H, pq, hs_par[h], rj * d1 * F * Gq)
                    for q2 in range(q + 1, q1):
                        pq2 = pb_par[q2]
                        v = rj * base[j] * F * _excl2(Gp[j], Gz[j], theta[pq], theta[pq2])
                        _sym_add(H, pq, pq2, v)


@kernel
def expected_main(theta, A):
    """Expected main-bin rates, shape (n_bins,)."""
    nu = np.zeros(A[N_BINS])
    model_pass(theta, nu, A, MODE_RATES, nu, np.empty((0, 0)), np.empty((0, 0)), pass_scratch(A))
    return nu


@kernel
def expected_blocks(theta, A):
    """Expected yields of every (channel, sample) block, flat (aligned with ``A.nom``)."""
    out = np.zeros(A[NOM].shape[0])
    model_pass(theta, out, A, MODE_BLOCKS, out, np.empty((0, 0)), np.empty((0, 0)), pass_scratch(A))
    return out


@kernel
def _rates_jac(theta, A):
    nb = A[N_BINS]
    P = theta.shape[0]
    nu = np.zeros(nb)
    J = np.zeros((nb, P))
    model_pass(theta, nu, A, MODE_JAC, nu, J, J, pass_scratch(A))
    return nu, J
