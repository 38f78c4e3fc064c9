"""Numba-compiled CPU core: expected rates, NLL, analytic gradient and Hessian, bounded Newton fit.

All kernels take the flat model arrays built once by :class:`nextstat.model.Model` (a tuple ``A``
of the rate arrays and a tuple ``AUX`` of the constraint arrays), never Python objects, so they
compile once per process type signature and are cached on disk (``cache=True``).

Layout of ``A`` (``blk`` = a (channel, sample) block, ``flat`` = per-block-bin storage)::

    blk_b0, blk_nb, blk_off     first global bin, bin count, flat offset of each block
    nom                         nominal yields, flat
    sc_ptr, sc_par, sc_kind,    scalar multiplicative terms per block (CSR): normfactor/lumi
    sc_lhi, sc_llo, sc_coef     (linear), normsys code1/code4 with log(hi), log(lo) and the code4
                                polynomial (n, 6)
    hs_ptr, hs_par, hs_code,    additive histosys terms per block (CSR), deltas up = hi - nom,
    hs_doff, hs_up, hs_dn       dn = nom - lo stored flat from hs_doff
    pb_ptr, pb_par              per-bin multiplicative terms (staterror, shapesys, shapefactor)
                                indexed by flat bin (CSR)
    n_bins

The likelihood is pyhf's (arXiv:1007.1727 eq. 5; pyhf ``Model.logpdf``): Poisson terms with
``xlogy(n, nu) - nu - lgamma(n + 1)`` for the main bins, Gaussian constraints
``N(a | theta, sigma)`` and Poisson constraints ``Pois(a | tau * gamma)`` for the auxiliary data.
"""

from __future__ import annotations

import math

import os

import llvmlite.binding as llvm
import numpy as np
from numba import types
from numba.extending import get_cython_function_address

from nextstat.engine.jit import kernel, leaf

# scipy.special.gammaln, bound into compiled code by symbol name (so kernels stay cacheable):
# the function pyhf uses, so that terms such as gammaln(1.9e11) in shapesys constraints of
# published workspaces (about 5e12, where one ulp is 1e-3) round exactly as in pyhf.
llvm.add_symbol("nextstat_scipy_gammaln",
                get_cython_function_address("scipy.special.cython_special", "gammaln"))
_gammaln = types.ExternalFunction("nextstat_scipy_gammaln", types.float64(types.float64))


def _limit_blas_threads() -> None:
    """Compiled kernels call SciPy's BLAS/LAPACK on small matrices (at most a few hundred rows),
    where OpenBLAS threads only add synchronisation: on a loaded 2-core machine they made a
    249-parameter fit 100x slower. Pin SciPy's OpenBLAS (not NumPy's) to
    ``$NEXTSTAT_BLAS_THREADS`` threads (default 1)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    n = int(os.environ.get("NEXTSTAT_BLAS_THREADS", "1"))
    import scipy.linalg  # noqa: F401 - loads SciPy's BLAS so that it can be found

    scipy_blas = [lib for lib in ThreadpoolController().lib_controllers
                  if "scipy" in os.path.basename(lib.filepath) and "64_" not in os.path.basename(lib.filepath)]
    for lib in scipy_blas:
        lib.set_num_threads(n)


_limit_blas_threads()

SC_LINEAR, SC_CODE1, SC_CODE4 = 0, 1, 2
HS_CODE0, HS_CODE2, HS_CODE4P = 0, 2, 4
AUX_GAUSS, AUX_POISSON = 0, 1

MODE_RATES, MODE_JAC, MODE_HESS2, MODE_BLOCKS = 0, 1, 2, 3
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)

FIT_CONVERGED, FIT_MAXITER, FIT_LINESEARCH, FIT_NONFINITE = 0, 1, 2, 3
# the fit met its convergence criteria on a non-finite NLL, parameter or error
FIT_NONFINITE_RESULT = 4

# below these sizes plain loops beat a BLAS/LAPACK call (whose fixed cost is ~1 us)
_SMALL_DENSE = 24  # Cholesky order, and dense Gauss-Newton solves
_SMALL_GRAM = 20000  # bins x params^2 for J^T diag(w) J
_EXACT_EDM = 1e-2  # EDM below which a slow Gauss-Newton fit switches to the exact Hessian



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
    blk_nb, sc_ptr, hs_ptr = A[1], A[4], A[10]
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


@kernel
def _workspace(A, P):
    """Every buffer a fit needs, as views of two allocations (an allocation costs ~0.1 us, a
    small model's Newton iteration ~1 us): the :func:`pass_scratch` tuple; rates, Jacobian,
    gradient, constraint curvature, residual and weights at the current point and at a trial
    point; the trial point, selected gradient, step and full-length step; a (P, P) matrix for
    small dense solves (0 x 0 above ``_SMALL_DENSE``); an index buffer (P,)."""
    B = A[18]
    maxnb, maxk, maxh = _block_sizes(A)
    nm = P * P if P <= _SMALL_DENSE else 0
    F = np.zeros(6 * maxh + 3 * maxnb + 4 * maxk + 2 * (3 * B + B * P + 2 * P) + 4 * P + nm)
    I = np.empty(maxnb + P, dtype=np.int64)
    o = 0
    hc = F[o:o + 6 * maxh].reshape(maxh, 6)
    o += 6 * maxh
    bins = F[o:o + 3 * maxnb].reshape(3, maxnb)
    o += 3 * maxnb
    fk = F[o:o + 4 * maxk].reshape(4, maxk)
    o += 4 * maxk
    S = (hc, bins, I[:maxnb], fk)
    cur = _point_buffers(F, o, B, P)
    o += 3 * B + B * P + 2 * P
    nxt = _point_buffers(F, o, B, P)
    o += 3 * B + B * P + 2 * P
    trial = F[o:o + P]
    gsel = F[o + P:o + 2 * P]
    xw = F[o + 2 * P:o + 3 * P]
    dfull = F[o + 3 * P:o + 4 * P]
    o += 4 * P
    Mw = F[o:o + nm].reshape(P if nm > 0 else 0, P if nm > 0 else 0)
    return S, cur, nxt, trial, gsel, xw, dfull, Mw, I[maxnb:]


@leaf
def model_pass(theta, r, A, mode, out, J, H, S):
    """One pass over all blocks (``S``: :func:`pass_scratch`).

    mode MODE_RATES: out[b] += nu_b; MODE_JAC: also J[b, p] += d nu_b / d theta_p;
    MODE_HESS2: H += sum_b r_b d^2 nu_b / d theta d theta^T, into the lower triangle of H
    only (the caller mirrors it); MODE_BLOCKS: out[flat] = nu per block.
    """
    (blk_b0, blk_nb, blk_off, nom, sc_ptr, sc_par, sc_kind, sc_lhi, sc_llo, sc_coef,
     hs_ptr, hs_par, hs_code, hs_doff, hs_up, hs_dn, pb_ptr, pb_par, n_bins) = A
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
    nu = np.zeros(A[18])
    model_pass(theta, nu, A, MODE_RATES, nu, np.empty((0, 0)), np.empty((0, 0)), pass_scratch(A))
    return nu


@kernel
def expected_blocks(theta, A):
    """Expected yields of every (channel, sample) block, flat (aligned with ``A.nom``)."""
    out = np.zeros(A[3].shape[0])
    model_pass(theta, out, A, MODE_BLOCKS, out, np.empty((0, 0)), np.empty((0, 0)), pass_scratch(A))
    return out


@leaf
def _poisson_nll(nu, n):
    """-sum_b [xlogy(n_b, nu_b) - nu_b - gammaln(n_b + 1)]; +inf where nu_b <= 0 < n_b.

    Evaluated in pyhf's order of operations (``poisson_logpdf``)."""
    s = 0.0
    for b in range(nu.shape[0]):
        if n[b] == 0.0:
            s += nu[b]
        elif nu[b] <= 0.0:
            return np.inf
        else:
            s -= n[b] * math.log(nu[b]) - nu[b] - _gammaln(n[b] + 1.0)
    return s


@leaf
def constraint_nll(theta, aux, AUX):
    """Constraint part of the NLL in pyhf's form (all constants included)."""
    par, kind, sigma, tau = AUX
    s = 0.0
    for i in range(par.shape[0]):
        x = theta[par[i]]
        a = aux[i]
        if kind[i] == AUX_GAUSS:
            # pyhf's normal_logpdf: -log(sigma sqrt(2 pi)) - ((x - mu) / (sqrt(2) sigma))^2
            y = (a - x) / (_SQRT2 * sigma[i])
            s -= -math.log(sigma[i] * _SQRT2PI) - y * y
        else:
            rate = x * tau[i]
            if a == 0.0:
                s += rate
            elif rate <= 0.0:
                return np.inf
            else:
                s -= a * math.log(rate) - rate - _gammaln(a + 1.0)
    return s


@kernel
def nll(theta, data, A, AUX):
    """Negative log-likelihood (scalar) for data = main + auxiliary."""
    nb = A[18]
    nu = expected_main(theta, A)
    s = _poisson_nll(nu, data[:nb])
    if not np.isfinite(s):
        return np.inf
    return s + constraint_nll(theta, data[nb:], AUX)


@leaf
def dev_term(lam, n):
    """``lam - n - n ln(lam / n)``: a Poisson NLL term minus its saturated (theta-free) value,
    via ``log1p`` near ``lam = n`` so that huge counts (shapesys ``tau`` ~ 1e11) keep full
    precision; ``lam`` where ``n = 0``, ``+inf`` where ``lam <= 0 < n``."""
    if n == 0.0:
        return lam
    if lam <= 0.0:
        return np.inf
    x = (lam - n) / n
    if abs(x) < 0.5:
        return n * (x - math.log1p(x))
    return lam - n - n * math.log(lam / n)


@kernel
def constraint_dev(theta, aux, AUX):
    """Constraint NLL minus its theta-free constant: ``z^2 / 2`` (Gaussian) and
    :func:`dev_term` (Poisson). Differences between two points equal those of
    :func:`constraint_nll` without its rounding noise (gammaln(1e11) ~ 2.4e12)."""
    return _constraint_terms(theta, aux, AUX, np.empty(0), np.empty(0), False)


@leaf
def _constraint_terms(theta, aux, AUX, g, dcon, want):
    """:func:`constraint_dev`; with ``want`` also adds its gradient to ``g`` (P,) and its
    curvature (the Hessian is diagonal) to ``dcon`` (P,)."""
    par, kind, sigma, tau = AUX
    s = 0.0
    for i in range(par.shape[0]):
        p = par[i]
        x = theta[p]
        a = aux[i]
        if kind[i] == AUX_GAUSS:
            z = (x - a) / sigma[i]
            s += 0.5 * z * z
            if want:
                g[p] += z / sigma[i]
                dcon[p] += 1.0 / (sigma[i] * sigma[i])
        else:
            s += dev_term(x * tau[i], a)
            if want:
                if a == 0.0:
                    g[p] += tau[i]
                elif x != 0.0:
                    g[p] += tau[i] - a / x
                    dcon[p] += a / (x * x)
    return s


@leaf
def _eval(theta, data, A, AUX, S, nu, J, g, dcon, r, w, jac):
    """:func:`nll_dev` at ``theta`` into preallocated buffers (``S``: :func:`pass_scratch`):
    the rates ``nu`` (B,); with ``jac`` also the Jacobian ``J`` (B, P), gradient ``g`` (P,),
    constraint curvature ``dcon`` (P,), residual ``r = 1 - n / nu`` and Gauss-Newton weights
    ``w = n / nu^2`` (B,). Returns +inf where the NLL is undefined (the buffers then partly
    written)."""
    nb = A[18]
    nu[:] = 0.0
    if jac:
        J[:, :] = 0.0
        model_pass(theta, nu, A, MODE_JAC, nu, J, J, S)
    else:
        model_pass(theta, nu, A, MODE_RATES, nu, J, J, S)
    f = 0.0
    for b in range(nb):
        f += dev_term(nu[b], data[b])
    if not f < np.inf:
        return np.inf
    if jac:
        P = theta.shape[0]
        g[:] = 0.0
        dcon[:] = 0.0
        for b in range(nb):
            n = data[b]
            if n == 0.0:  # the term is nu itself (also where nu = 0: an empty bin)
                rb = 1.0
                w[b] = 0.0
            else:
                rb = 1.0 - n / nu[b]
                w[b] = n / (nu[b] * nu[b])
            r[b] = rb
            if rb != 0.0:
                for p in range(P):
                    g[p] += J[b, p] * rb
    return f + _constraint_terms(theta, data[nb:], AUX, g, dcon, jac)


@kernel
def nll_dev(theta, data, A, AUX):
    """NLL minus a theta-independent constant (the saturated likelihood), computed without the
    cancellation of pyhf's form. The fit compares these values: with a shapesys constraint of
    tau ~ 1e11 the pyhf-form NLL carries rounding noise of ~1e-3, this form ~1e-12."""
    e = np.empty(0)
    return _eval(theta, data, A, AUX, pass_scratch(A), np.empty(A[18]), np.empty((0, 0)), e, e, e, e, False)


@kernel
def _rates_jac(theta, A):
    nb = A[18]
    P = theta.shape[0]
    nu = np.zeros(nb)
    J = np.zeros((nb, P))
    model_pass(theta, nu, A, MODE_JAC, nu, J, J, pass_scratch(A))
    return nu, J


@leaf
def _pyhf_nll(theta, data, A, AUX, nu):
    """pyhf's NLL (:func:`nll`) from the rates ``nu`` at ``theta``."""
    nb = A[18]
    f = _poisson_nll(nu, data[:nb])
    if not f < np.inf:
        return np.inf
    return f + constraint_nll(theta, data[nb:], AUX)


@kernel
def _grad_parts(theta, data, A, AUX):
    """(nll, gradient, Jacobian J (B, P), Gauss-Newton weights w = n / nu^2 (B,),
    residual r = 1 - n / nu (B,), constraint curvature (P,)); nll = inf where undefined."""
    nb = A[18]
    P = theta.shape[0]
    nu = np.empty(nb)
    J = np.empty((nb, P))
    g = np.zeros(P)
    dcon = np.zeros(P)
    r = np.zeros(nb)
    w = np.zeros(nb)
    if not _eval(theta, data, A, AUX, pass_scratch(A), nu, J, g, dcon, r, w, True) < np.inf:
        return np.inf, np.zeros(P), J, np.zeros(nb), np.zeros(nb), np.zeros(P)
    return _pyhf_nll(theta, data, A, AUX, nu), g, J, w, r, dcon


@leaf
def _gram_into(J, w, sel, M):
    """Lower triangle of ``J_s^T diag(w) J_s`` over the columns ``sel`` into the leading
    m x m block of ``M`` (plain loops, for small problems; the upper triangle is not written)."""
    m = sel.shape[0]
    for a in range(m):
        for c in range(a + 1):
            M[a, c] = 0.0
    for b in range(J.shape[0]):
        wb = w[b]
        if wb == 0.0:
            continue
        for a in range(m):
            v = J[b, sel[a]] * wb
            if v != 0.0:
                for c in range(a + 1):
                    M[a, c] += v * J[b, sel[c]]


@kernel
def _gram_lower(J, w, sel):
    """:func:`_gram_into` into a new (m, m) array whose strict upper triangle is 0."""
    m = sel.shape[0]
    M = np.zeros((m, m))
    _gram_into(J, w, sel, M)
    return M


@kernel
def submatrix(H, sel):
    """``H[sel][:, sel]`` as a new C-order array."""
    m = sel.shape[0]
    Hs = np.empty((m, m))
    for a in range(m):
        for b in range(m):
            Hs[a, b] = H[sel[a], sel[b]]
    return Hs


@kernel
def _hess_lower(theta, J, w, r, dcon, A, exact, S, H):
    """Lower triangle of the Gauss-Newton matrix J^T diag(w) J plus the (diagonal) constraint
    curvature, with ``exact`` also sum_b r_b d^2 nu_b (the exact Hessian), into ``H`` (P, P);
    the strict upper triangle is left as it was. The Gram part is loops for small problems,
    else one BLAS ``dsyrk`` (which writes one triangle)."""
    B, P = J.shape
    if B * P * P <= _SMALL_GRAM:
        _gram_into(J, w, np.arange(P), H)
    else:
        Jw = np.empty((B, P))
        for b in range(B):
            sw = math.sqrt(w[b])
            for p in range(P):
                Jw[b, p] = J[b, p] * sw
        _syrk_lower(Jw, H)
    if exact:
        model_pass(theta, r, A, MODE_HESS2, w, J, H, S)
    for i in range(P):
        H[i, i] += dcon[i]


@kernel
def _hessian(theta, J, w, r, dcon, A, exact, S):
    """Gauss-Newton matrix J^T diag(w) J plus the (diagonal) constraint curvature; with
    ``exact`` also sum_b r_b d^2 nu_b, which makes it the exact Hessian. Full symmetric (P, P)."""
    P = J.shape[1]
    H = np.empty((P, P))
    _hess_lower(theta, J, w, r, dcon, A, exact, S, H)
    for i in range(P):
        for j in range(i):
            H[j, i] = H[i, j]
    return H


@leaf
def _mask_lower(H, keep):
    """Take the parameters with ``keep[i]`` False out of the system held in H's lower triangle:
    their rows and columns become those of the identity (the solution there is the right-hand
    side, the inverse there is 1), so no smaller copy of H is needed."""
    P = H.shape[0]
    for i in range(P):
        if keep[i]:
            continue
        for j in range(i):
            H[i, j] = 0.0
        for k in range(i + 1, P):
            H[k, i] = 0.0
        H[i, i] = 1.0


@kernel
def _factor_inplace(H):
    """Cholesky factor of the symmetric matrix in H's lower triangle, in place (lower, C order;
    the strict upper triangle is not used and left as it was). Returns ok."""
    n = H.shape[0]
    if n <= _SMALL_DENSE:
        return _chol_inplace(H, n)
    return _potrf(H) == 0


@kernel
def nll_grad(theta, data, A, AUX):
    """(nll, gradient) with the analytic Jacobian of the expected rates."""
    f, g, _, _, _, _ = _grad_parts(theta, data, A, AUX)
    return f, g


@kernel
def nll_grad_hess(theta, data, A, AUX, exact):
    """(nll, gradient, Hessian). ``exact=False`` gives the Gauss-Newton matrix
    J^T diag(n / nu^2) J (plus the exact constraint Hessian), which is positive semi-definite;
    ``exact=True`` adds sum_b (1 - n_b / nu_b) d^2 nu_b, the exact Hessian."""
    f, g, J, w, r, dcon = _grad_parts(theta, data, A, AUX)
    if not np.isfinite(f):
        P = theta.shape[0]
        return np.inf, g, np.zeros((P, P))
    return f, g, _hessian(theta, J, w, r, dcon, A, exact, pass_scratch(A))


# LAPACK's SPD inverse (dpotrf + dpotri) from SciPy, bound by symbol name as gammaln above;
# Fortran int32 arguments are passed by address (int64 values: the x86-64 / aarch64 ABIs pass
# pointers and 64-bit integers alike).
for _name in ("dpotrf", "dpotri"):
    llvm.add_symbol(f"nextstat_{_name}", get_cython_function_address("scipy.linalg.cython_lapack", _name))
_I = types.intp
_dpotrf = types.ExternalFunction("nextstat_dpotrf", types.void(_I, _I, _I, _I, _I))
_dpotri = types.ExternalFunction("nextstat_dpotri", types.void(_I, _I, _I, _I, _I))
# BLAS dsyrk (C := alpha A A^T + beta C, one triangle) for the Gauss-Newton Gram matrix
llvm.add_symbol("nextstat_dsyrk", get_cython_function_address("scipy.linalg.cython_blas", "dsyrk"))
_dsyrk = types.ExternalFunction("nextstat_dsyrk", types.void(_I, _I, _I, _I, _I, _I, _I, _I, _I, _I))

# Raw-pointer calls and buffer lifetime. Numba frees a local array right after its last use in
# the code, and taking ``x.ctypes.data`` is such a use: an array whose address is passed to
# BLAS/LAPACK but that is not used after the call may be freed (and its memory reused) while
# the routine still reads it. So every buffer of a raw call is either an argument of the small
# wrapper below (the caller holds it until the wrapper returns) or is read after the call
# (``_after``), which keeps it alive until then. Never pass ``x[k:].ctypes.data`` of a
# temporary view; offset the parent's address instead.


@kernel
def _after(chars, ints, reals):
    """A value read from each argument after a raw call: keeps these buffers alive through
    the call (see above). Returns ints[-1] (the routine's ``info`` where it has one)."""
    if chars[0] == 0 or not np.isfinite(reals[0]):
        return -1
    return ints[ints.shape[0] - 1]


@kernel
def _syrk_lower(Jw, H):
    """Lower triangle of ``H = Jw^T Jw`` (BLAS ``dsyrk``) for C-order ``Jw`` (B, P) and
    ``H`` (P, P); H's strict upper triangle is left as it was. Fortran sees Jw as Jw^T
    (P x B, ld P) and H as H^T, whose upper triangle is H's lower one."""
    B, P = Jw.shape
    chars = np.array([85, 78], dtype=np.uint8)  # "U", "N"
    ints = np.array([P, B, 0], dtype=np.int32)  # N, K (also LDA, LDC = N)
    reals = np.array([1.0, 0.0])  # alpha, beta
    c, i, r = chars.ctypes.data, ints.ctypes.data, reals.ctypes.data
    _dsyrk(c, c + 1, i, i + 4, r, Jw.ctypes.data, i, r + 8, H.ctypes.data, i)
    _after(chars, ints, reals)


@kernel
def _lapack_spd(routine, a):
    """LAPACK ``dpotrf`` (routine 0) or ``dpotri`` (1) with UPLO "U" on the C-order square
    matrix ``a`` in place: Fortran's upper triangle is C's lower one. Returns LAPACK's info
    (0: success; > 0: not positive definite)."""
    n = a.shape[0]
    chars = np.array([85], dtype=np.uint8)  # "U"
    ints = np.array([n, 0], dtype=np.int32)  # N (also LDA), INFO
    reals = np.zeros(1)
    c, i = chars.ctypes.data, ints.ctypes.data
    if routine == 0:
        _dpotrf(c, i, a.ctypes.data, i, i + 4)
    else:
        _dpotri(c, i, a.ctypes.data, i, i + 4)
    return _after(chars, ints, reals)


@kernel
def _potrf(a):
    """In-place lower Cholesky factor (C order) of the symmetric matrix in ``a``'s lower
    triangle (LAPACK ``dpotrf``); returns info."""
    return _lapack_spd(0, a)


@kernel
def _potri(a):
    """In-place inverse from the lower Cholesky factor in ``a`` (LAPACK ``dpotri``); the
    result is in the lower triangle. Returns info."""
    return _lapack_spd(1, a)


@leaf
def _chol_inplace(M, n):
    """Cholesky factor of the leading n x n block of ``M`` in place: reads and overwrites its
    lower triangle (the upper is untouched). Plain loops, for small matrices. Returns ok."""
    for j in range(n):
        s = M[j, j]
        for k in range(j):
            s -= M[j, k] * M[j, k]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        M[j, j] = d
        for i in range(j + 1, n):
            t = M[i, j]
            for k in range(j):
                t -= M[i, k] * M[j, k]
            M[i, j] = t / d
    return True


@kernel
def _chol(M):
    """Cholesky factor of a symmetric matrix; (ok, L) with L lower, C order. Plain loops for
    small matrices (a LAPACK call costs more than the arithmetic there), LAPACK otherwise."""
    n = M.shape[0]
    if n == 0:
        return True, M.copy()
    if n <= _SMALL_DENSE:
        L = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1):
                L[i, j] = M[i, j]
        if not _chol_inplace(L, n):
            return False, M
        return True, L
    # LAPACK in place: C-order lower L is Fortran-order upper U = L^T
    L = M.copy()
    if _potrf(L) != 0:
        return False, M
    for i in range(n):
        for j in range(i + 1, n):
            L[i, j] = 0.0
    return True, L


@leaf
def _lower_solve(L, x, n):
    """Solve L y = x in place over the leading n x n block of L (lower triangular, C order)."""
    for i in range(n):
        t = x[i]
        for k in range(i):
            t -= L[i, k] * x[k]
        x[i] = t / L[i, i]


@leaf
def _upper_solve(L, x, n):
    """Solve L^T y = x in place over the leading n x n block of L (lower triangular, C order)."""
    for i in range(n - 1, -1, -1):
        t = x[i]
        for k in range(i + 1, n):
            t -= L[k, i] * x[k]
        x[i] = t / L[i, i]


@kernel
def _chol_solve(L, rhs):
    """Solve L L^T x = rhs (1-D) for a Cholesky factor L; returns a new array."""
    x = rhs.copy()
    _lower_solve(L, x, L.shape[0])
    _upper_solve(L, x, L.shape[0])
    return x


@kernel
def _gn_dense(J, w, dcon, sel, rhs, ridge):
    """Solve (J_s^T diag(w) J_s + diag(dcon_s) + ridge I) x = rhs over the parameters ``sel``
    with a dense Cholesky (small problems). Returns (ok, x)."""
    m = sel.shape[0]
    M = _gram_lower(J, w, sel)  # _chol reads the lower triangle only
    for a in range(m):
        M[a, a] += dcon[sel[a]] + ridge
    ok, L = _chol(M)
    if not ok:
        return False, rhs.copy()
    return True, _chol_solve(L, rhs)


@leaf
def _row_residual(U, a, c, y):
    """``c - U[a] . y`` (row ``a`` of a 2-D array, no view created)."""
    for b in range(y.shape[0]):
        c -= U[a, b] * y[b]
    return c


@kernel
def _gn_solve(Ut, D, rhs, ridge):
    """Solve (diag(D) + U^T U + ridge I) x = rhs in bin space (Woodbury identity).

    Ut: (m, B) = (sqrt(w) J)^T over the active parameters, C order; D: (m,) >= 0 constraint
    curvature. With c the parameters where D + ridge > 0 and u the others (unconstrained),
    K = I + U_c D_c^-1 U_c^T (B x B) gives M_cc^-1 = D_c^-1 - D_c^-1 U_c^T K^-1 U_c D_c^-1, and
    the Schur complement of the unconstrained block is U_u^T K^-1 U_u (since
    I - U_c M_cc^-1 U_c^T = K^-1). Cost O(m B^2) for K (rows with zeros skipped) plus O(m B) and
    O(u^3): no m x m matrix is formed. Returns (ok, x).
    """
    m, B = Ut.shape
    K = np.zeros((B, B))
    y = np.zeros(B)  # U_c D_c^-1 rhs_c
    uidx = np.empty(m, dtype=np.int64)
    nu = 0
    for a in range(m):
        da = D[a] + ridge
        if not da > 0.0:
            uidx[nu] = a
            nu += 1
            continue
        ra = rhs[a] / da
        for b in range(B):
            ub = Ut[a, b]
            if ub != 0.0:
                y[b] += ub * ra
                v = ub / da
                for c in range(b + 1):
                    K[b, c] += v * Ut[a, c]
    for b in range(B):
        K[b, b] += 1.0
        for c in range(b):
            K[c, b] = K[b, c]
    ok, LK = _chol(K)
    if not ok:
        return False, rhs.copy()
    x = np.empty(m)
    s = y  # U_c D_c^-1 v_c with v_c = rhs_c - U_c^T U_u x_u
    if nu > 0:
        # S = Z^T Z with Z = LK^-1 U_u; ru = rhs_u - Z^T LK^-1 y
        Z = np.empty((nu, B))
        yl = y.copy()
        _lower_solve(LK, yl, B)
        S = np.zeros((nu, nu))
        ru = np.empty(nu)
        for j in range(nu):
            for b in range(B):
                Z[j, b] = Ut[uidx[j], b]
            _lower_solve(LK, Z[j], B)
            ru[j] = _row_residual(Z, j, rhs[uidx[j]], yl)
            for k in range(j + 1):
                v = 0.0
                for b in range(B):
                    v += Z[j, b] * Z[k, b]
                S[j, k] = v
                S[k, j] = v
        okS, LS = _chol(S)
        if not okS:
            return False, rhs.copy()
        xu = _chol_solve(LS, ru)
        z = np.zeros(B)  # U_u x_u
        for j in range(nu):
            x[uidx[j]] = xu[j]
            for b in range(B):
                z[b] += Ut[uidx[j], b] * xu[j]
        s = np.zeros(B)
        for a in range(m):
            da = D[a] + ridge
            if not da > 0.0:
                continue
            v = _row_residual(Ut, a, rhs[a], z)
            x[a] = v  # v_c, finished below
            v /= da
            for b in range(B):
                s[b] += Ut[a, b] * v
    else:
        for a in range(m):
            x[a] = rhs[a]
    t = _chol_solve(LK, s)
    for a in range(m):
        da = D[a] + ridge
        if da > 0.0:
            x[a] = _row_residual(Ut, a, x[a], t) / da
    return True, x


@kernel
def _exact_factor(theta, J, w, r, dcon, A, keep, S, H):
    """Cholesky factor (in ``H``, (P, P), lower) of the exact Hessian over the parameters with
    ``keep`` True, the others masked to the identity (:func:`_mask_lower`). Returns ok."""
    _hess_lower(theta, J, w, r, dcon, A, True, S, H)
    _mask_lower(H, keep)
    return _factor_inplace(H)


@leaf
def _gn_dense_into(J, w, dcon, sel, gs, ridge, M, x):
    """Solve (J_s^T diag(w) J_s + diag(dcon_s) + ridge I) x = -gs over the parameters ``sel``
    in the caller's buffers (``M`` at least m x m, ``x`` at least m): no allocation, for small
    problems. Returns ok."""
    m = sel.shape[0]
    _gram_into(J, w, sel, M)
    for a in range(m):
        M[a, a] += dcon[sel[a]] + ridge
        x[a] = -gs[a]
    if not _chol_inplace(M, m):
        return False
    _lower_solve(M, x, m)
    _upper_solve(M, x, m)
    return True


@kernel
def _gn_direction(J, w, dcon, sel, gs, ridge0, M, x):
    """Gauss-Newton step over the parameters ``sel`` (gradient ``gs``) with ``ridge0`` added to
    the diagonal (Levenberg-Marquardt damping; 0 for a plain step): in the work buffers ``M``,
    ``x`` where they hold m parameters (small problems; pass 0-size buffers otherwise), else
    dense Cholesky for m <= bins, else in bin space (:func:`_gn_solve`); a growing ridge where
    the matrix is singular. Returns (ok, d)."""
    m = sel.shape[0]
    ridge = ridge0
    if m <= M.shape[0]:
        for _ in range(12):
            if _gn_dense_into(J, w, dcon, sel, gs, ridge, M, x):
                return True, x[:m]
            ridge = 1e-10 if ridge == 0.0 else ridge * 100.0
        return False, x[:m]
    mgs = -gs
    dense = m <= _SMALL_DENSE or m <= J.shape[0]
    if dense:
        Ut = np.empty((0, 0))
        Ds = np.empty(0)
    else:
        B = J.shape[0]
        sw = np.sqrt(w)
        Ut = np.empty((m, B))
        for a in range(m):
            i = sel[a]
            for b in range(B):
                Ut[a, b] = J[b, i] * sw[b]
        Ds = dcon[sel]
    for _ in range(12):
        if dense:
            ok, d = _gn_dense(J, w, dcon, sel, mgs, ridge)
        else:
            ok, d = _gn_solve(Ut, Ds, mgs, ridge)
        if ok:
            return True, d
        ridge = 1e-10 if ridge == 0.0 else ridge * 100.0
    return False, mgs


@leaf
def _final_status(status, f, dev, theta):
    """``status``, or ``FIT_NONFINITE_RESULT`` where a fit converged on a non-finite NLL or
    parameter (converged never comes with those)."""
    if status != FIT_CONVERGED:
        return status
    ok = math.isfinite(f) and math.isfinite(dev)
    for i in range(theta.shape[0]):
        ok = ok and math.isfinite(theta[i])
    return status if ok else FIT_NONFINITE_RESULT


@kernel
def _newton_ws(theta0, data, lo, hi, fixed, A, AUX, maxiter, tol, want_L, certify, W):
    """:func:`newton_fit` in the buffers ``W`` (:func:`_workspace`; the returned gradient is a
    view of them), also returning the Cholesky factor ``L`` of the exact Hessian over all free
    parameters at the returned point ((P, P), lower triangle, C order; fixed parameters masked
    to the identity; the strict upper triangle is scratch) when the last iteration computed it
    there, or with ``want_L`` when the fit converged with no parameter held on a bound (built
    from that iteration's Jacobian), else a 0 x 0 array: Hesse then needs no new Hessian; and
    :func:`nll_dev` at the returned point.

    ``certify``: in exact-Hessian mode, accept convergence on the cheaper Gauss-Newton EDM
    (parameters then sit ~sqrt(tol) from the optimum rather than the last exact step's ~tol);
    False where the fitted parameters must be as precise as possible (gradients).

    Returns theta, nll, gradient, n_iter, status, edm, L, nll_dev."""
    P = theta0.shape[0]
    B = A[18]
    theta = theta0.copy()
    n_free = 0
    for i in range(P):
        if not fixed[i]:
            theta[i] = min(max(theta[i], lo[i]), hi[i])
            n_free += 1
    # rates and derivatives at theta (valid while `cur`), and at the line search's first trial
    # point (swapped in when that point is accepted, which saves a pass per iteration)
    S, cur_bufs, trial_bufs, trial, gsel, xw, dfull, Mw, idx = W
    nu, J, g, dcon, r, w = cur_bufs
    nu2, J2, g2, dcon2, r2, w2 = trial_bufs
    E = np.empty((0, 0))
    Hw = E  # exact Hessian / its Cholesky factor (P, P), allocated when first needed
    act = np.zeros(P, dtype=np.bool_)  # the active parameters, for masking Hw
    cur = False
    status = FIT_MAXITER
    edm = np.inf
    prev_edm = np.inf
    f = np.inf  # deviance form at theta (nll_dev), kept current as theta moves
    it = 0
    exact = False
    damp = 0.0
    L_out = np.empty((0, 0))
    for it in range(1, maxiter + 1):
        if not cur:
            f = _eval(theta, data, A, AUX, S, nu, J, g, dcon, r, w, True)
            if not f < np.inf:
                status = FIT_NONFINITE
                break
            cur = True
        m = 0
        for i in range(P):
            if fixed[i]:
                continue
            if theta[i] <= lo[i] and g[i] > 0.0:
                continue
            if theta[i] >= hi[i] and g[i] < 0.0:
                continue
            idx[m] = i
            m += 1
        if m == 0:
            f_out = _pyhf_nll(theta, data, A, AUX, nu)
            return theta, f_out, g, it, _final_status(FIT_CONVERGED, f_out, f, theta), 0.0, L_out, f
        sel = idx[:m]
        gs = gsel[:m]
        act[:] = False
        for a in range(m):
            gs[a] = g[sel[a]]
            act[sel[a]] = True
        if (exact or want_L) and Hw.shape[0] != P:
            Hw = np.empty((P, P))
        ok = False
        d = gs
        L = E
        ridge = 0.0
        if damp > 0.0:
            # Levenberg-Marquardt: damp relative to the mean Gauss-Newton diagonal
            for a in range(m):
                i = sel[a]
                t = dcon[i]
                for b in range(B):
                    t += w[b] * J[b, i] * J[b, i]
                ridge += t
            ridge = damp * max(ridge / m, 1e-300)
        if exact and certify and damp == 0.0:
            # a cheap certificate first: where the Gauss-Newton EDM is already below tol the
            # fit has converged without the exact Hessian (Hesse, if wanted, builds it then)
            ok_gn, d_gn = _gn_direction(J, w, dcon, sel, gs, 0.0, Mw, xw)
            if ok_gn:
                edm_gn = 0.0
                for a in range(m):
                    edm_gn -= 0.5 * gs[a] * d_gn[a]
                if edm_gn < tol:
                    if want_L and m == n_free and _exact_factor(theta, J, w, r, dcon, A, act, S, Hw):
                        L_out = Hw
                    f_out = _pyhf_nll(theta, data, A, AUX, nu)
                    return theta, f_out, g, it, _final_status(FIT_CONVERGED, f_out, f, theta), edm_gn, L_out, f
        if exact:
            # the exact Hessian over all P parameters, inactive ones masked to the identity
            _hess_lower(theta, J, w, r, dcon, A, True, S, Hw)
            _mask_lower(Hw, act)
            for a in range(m):
                Hw[sel[a], sel[a]] += ridge
            ok = _factor_inplace(Hw)
            if ok:
                dfull[:] = 0.0
                for a in range(m):
                    dfull[sel[a]] = -gs[a]
                _lower_solve(Hw, dfull, P)
                _upper_solve(Hw, dfull, P)
                d = xw[:m]
                for a in range(m):
                    d[a] = dfull[sel[a]]
                L = Hw
        if not ok:
            ok, d = _gn_direction(J, w, dcon, sel, gs, ridge, Mw, xw)
            if not ok:
                status = FIT_LINESEARCH
                break
            L = E
        gd = 0.0
        for a in range(m):
            gd += gs[a] * d[a]
        edm = -0.5 * gd
        if edm < tol and damp > 0.0:
            damp = 0.0  # confirm on the undamped matrix
            continue
        if edm < tol:
            if m == n_free:
                if L.shape[0] == P or not want_L:
                    L_out = L
                elif _exact_factor(theta, J, w, r, dcon, A, act, S, Hw):
                    L_out = Hw
            f_out = _pyhf_nll(theta, data, A, AUX, nu)
            return theta, f_out, g, it, _final_status(FIT_CONVERGED, f_out, f, theta), edm, L_out, f
        # Gauss-Newton converges linearly; switch to the exact Hessian where that is slow near
        # the minimum (where Newton's quadratic convergence holds), or very slow anywhere
        if not exact and ((edm > 0.1 * prev_edm and edm < _EXACT_EDM) or edm > 0.5 * prev_edm):
            exact = True
        prev_edm = edm
        # Parameters whose full step crosses a bound go onto it (if that lowers the NLL): the
        # active set then holds them and the others take a proper Newton step. Without this,
        # truncated steps approach a bound (e.g. mu -> 0) only geometrically. A strict decrease:
        # after mu went onto 0, a k of mu * k no longer changes the NLL, and k = 0 as well
        # would be a stationary point the fit cannot leave (both gradients 0).
        n_snap = 0
        n_cross = 0
        for a in range(m):
            i = sel[a]
            target = theta[i]
            if theta[i] + d[a] < lo[i] and theta[i] > lo[i]:
                target = lo[i]
            elif theta[i] + d[a] > hi[i] and theta[i] < hi[i]:
                target = hi[i]
            else:
                continue
            n_cross += 1
            keep = theta[i]
            theta[i] = target
            fs = _eval(theta, data, A, AUX, S, nu2, J2, g2, dcon2, r2, w2, False)
            if fs < f:
                f = fs
                n_snap += 1
                cur = False
            else:
                theta[i] = keep
        if n_snap > 0 and n_cross < m:
            continue
        t = 1.0
        accepted = False
        first = True
        trial[:] = theta
        ft = f
        for _ in range(40):
            dec = 0.0
            for a in range(m):
                i = sel[a]
                trial[i] = min(max(theta[i] + t * d[a], lo[i]), hi[i])
                dec += g[i] * (trial[i] - theta[i])
            ft = _eval(trial, data, A, AUX, S, nu2, J2, g2, dcon2, r2, w2, first)
            if ft < np.inf and ft <= f + 1e-4 * dec:
                accepted = True
                break
            t *= 0.5
            first = False
        if not accepted:
            # no decrease possible at machine precision: at the minimum if the EDM is tiny;
            # else retry on the exact Hessian, then with growing Levenberg-Marquardt damping
            # (a near-singular matrix, e.g. a Poisson constraint with zero auxiliary data and
            # one bin for two parameters, gives a huge step along its null space)
            if edm < 1e-6 and damp == 0.0:
                status = FIT_CONVERGED
                break
            if not exact:
                exact = True
                continue
            if damp < 1e8:
                damp = 1e-4 if damp == 0.0 else damp * 100.0
                continue
            status = FIT_LINESEARCH
            break
        if damp > 0.0:
            damp = damp * 0.1 if damp > 1e-3 else 0.0
        theta[:] = trial
        if first:
            nu, nu2 = nu2, nu
            J, J2 = J2, J
            g, g2 = g2, g
            dcon, dcon2 = dcon2, dcon
            r, r2 = r2, r
            w, w2 = w2, w
        cur = first
        tiny = f - ft < 1e-15 * max(1.0, abs(f))
        f = ft
        if tiny and edm < 1e-8:
            status = FIT_CONVERGED
            break
    if status == FIT_NONFINITE:
        return theta, np.inf, g, it, status, edm, L_out, np.inf
    if not cur:
        f = _eval(theta, data, A, AUX, S, nu, J, g, dcon, r, w, True)
    f_out = _pyhf_nll(theta, data, A, AUX, nu)
    return theta, f_out, g, it, _final_status(status, f_out, f, theta), edm, L_out, f


@kernel
def newton_fit(theta0, data, lo, hi, fixed, A, AUX, maxiter, tol, certify):
    """Bounded second-order minimisation of the NLL.

    Steps start as Gauss-Newton (Fisher-scoring-like: J^T diag(n/nu^2) J plus the exact
    constraint curvature), solved in bin space with the Woodbury identity; once Gauss-Newton
    converges slowly (EDM falling by less than 10x per step below EDM 1e-2, or by less than 2x
    anywhere) or fails, steps use the exact
    analytic Hessian (dense Cholesky), for quadratic convergence. Bounds: an active set
    (parameters on a bound whose gradient points outward are held) plus projection; a
    backtracking Armijo line search on the NLL.

    Values are compared in the stable deviance form (:func:`nll_dev`); the returned NLL is
    pyhf's form at the final point. ``certify``: see :func:`_newton_ws`.

    Returns:
        theta (P,), nll, gradient (P,), n_iter, status (FIT_*), edm.
    """
    theta, f, g, it, status, edm, _, _ = _newton_ws(theta0, data, lo, hi, fixed, A, AUX, maxiter, tol, False, certify,
                                                   _workspace(A, theta0.shape[0]))
    return theta, f, g, it, status, edm


# ------------------------------------------------------------------------------ Hesse
@kernel
def _spd_inverse_small(a, factored):
    """:func:`_spd_inverse` with plain loops (small matrices, where a LAPACK call costs more
    than the arithmetic): X = L^-1 by forward substitution, then a = X^T X."""
    n = a.shape[0]
    if factored:
        L = a
    else:
        ok, L = _chol(a)
        if not ok:
            return False
    X = np.zeros((n, n))
    for j in range(n):
        X[j, j] = 1.0 / L[j, j]
        for i in range(j + 1, n):
            t = 0.0
            for k in range(j, i):
                t -= L[i, k] * X[k, j]
            X[i, j] = t / L[i, i]
    for i in range(n):
        for j in range(i + 1):
            t = 0.0
            for k in range(i, n):
                t += X[k, i] * X[k, j]
            a[i, j] = t
            a[j, i] = t
    return True


@kernel
def _spd_inverse(a, factored):
    """Inverse of a symmetric positive-definite matrix, in place in ``a`` (C order).

    ``factored``: ``a`` already holds the lower Cholesky factor L (C order) of the matrix, else
    ``a`` holds the (symmetric) matrix itself. Returns False where LAPACK finds it not positive
    definite (``a`` is then garbage)."""
    n = a.shape[0]
    if n == 0:
        return True
    if n <= _SMALL_DENSE:
        return _spd_inverse_small(a, factored)
    if not factored and _potrf(a) != 0:
        return False
    if _potri(a) != 0:
        return False
    # the result is in Fortran's upper = C's lower triangle
    for i in range(n):
        for j in range(i + 1, n):
            a[i, j] = a[j, i]
    return True


@kernel
def _hesse_degenerate(H, free):
    """Covariance from a Hessian ``H`` (P, P) that is not positive definite over the free
    parameters ``free``: parameters without curvature (|H_ii| <= 1e-12 of the largest, e.g. a
    POI on its bound with no events expected or observed: the NLL is linear there) carry no
    Hesse information and get zero rows and columns; on the others the eigenvalues of the
    diagonally scaled Hessian ``D^-1/2 H D^-1/2`` (D = |diag H|: curvatures of 1e-300 and 1e300
    in one matrix stay in LAPACK's range) are replaced by their absolute values, floored at
    1e-12 of the largest, before inverting and scaling back. All zero where H is not finite,
    where the eigensolver fails or where the result is not finite. Callers flag the result as
    not positive definite."""
    P = H.shape[0]
    cov = np.zeros((P, P))
    scale = 0.0
    for i in free:
        if not np.isfinite(H[i, i]):
            return cov
        scale = max(scale, abs(H[i, i]))
    keep = np.array([i for i in free if abs(H[i, i]) > 1e-12 * scale], dtype=np.int64)
    if keep.shape[0] == 0:
        return cov
    Hf = submatrix(H, keep)
    if not np.all(np.isfinite(Hf)):
        return cov
    k = keep.shape[0]
    d = np.empty(k)
    for a in range(k):
        d[a] = 1.0 / math.sqrt(abs(Hf[a, a]))
    for a in range(k):
        for b in range(k):
            Hf[a, b] *= d[a] * d[b]
    try:
        ev, V = np.linalg.eigh(Hf)
    except Exception:  # LAPACK did not converge: no Hesse information
        return cov
    floor = 1e-12 * np.max(np.abs(ev))
    if not floor > 0.0:
        return cov
    inv = (V / np.maximum(np.abs(ev), floor).reshape(1, -1)) @ V.T
    for a in range(k):
        for b in range(k):
            v = inv[a, b] * d[a] * d[b]
            if not np.isfinite(v):
                return np.zeros((P, P))
            cov[keep[a], keep[b]] = v
    return cov


@kernel
def hesse_cov(theta, data, fixed, A, AUX, L):
    """Covariance = inverse of the exact analytic Hessian over the free parameters (Hesse).

    ``L``: the Cholesky factor of that Hessian at ``theta`` if already known (from
    :func:`_newton_ws`: (P, P), fixed parameters masked to the identity), which is overwritten;
    else a 0 x 0 array. Returns ``(cov (P, P), posdef)``: fixed parameters get zero rows and
    columns; where the Hessian is not positive definite, :func:`_hesse_degenerate` and
    ``posdef`` is False."""
    P = theta.shape[0]
    free = np.flatnonzero(~fixed)
    m = free.shape[0]
    if m == 0:
        return np.zeros((P, P)), True
    if L.shape[0] == P:
        a = L
        ok = True
    else:
        a = np.empty((P, P))
        f, g, J, w, r, dcon = _grad_parts(theta, data, A, AUX)
        ok = np.isfinite(f) and _exact_factor(theta, J, w, r, dcon, A, ~fixed, pass_scratch(A), a)
    if ok:
        ok = _spd_inverse(a, True)
    if not ok:
        return _hesse_degenerate(nll_grad_hess(theta, data, A, AUX, True)[2], free), False
    for i in range(P):
        if fixed[i]:
            for j in range(P):
                a[i, j] = 0.0
                a[j, i] = 0.0
    return a, True


@kernel
def fit_with_errors(theta0, data, lo, hi, fixed, FB, IB, maxiter, tol, do_hesse):
    """One call for a whole fit (the hot path of :func:`nextstat.fit`): :func:`_newton_ws`, then
    Hesse (reusing the final exact Hessian when the fit computed it) on packed model buffers
    (:func:`pack`), which keeps the call overhead small for small models.

    Returns theta, nll, n_iter, status, edm, covariance, errors, correlation, posdef, and masks
    of the fixed parameters (a copy of ``fixed``) and of free parameters that ended on a bound."""
    A, AUX = unpack(FB, IB)
    theta, f, g, it, status, edm, L, _ = _newton_ws(theta0, data, lo, hi, fixed, A, AUX, maxiter, tol, do_hesse, True,
                                                   _workspace(A, theta0.shape[0]))
    P = theta.shape[0]
    posdef = True
    if do_hesse and np.isfinite(f):
        cov, posdef = hesse_cov(theta, data, fixed, A, AUX, L)
    else:
        cov = np.zeros((P, P))
    err = np.empty(P)
    for i in range(P):
        err[i] = math.sqrt(max(cov[i, i], 0.0))
        if status == FIT_CONVERGED and not np.isfinite(err[i]):
            status = FIT_NONFINITE_RESULT
    corr = np.zeros((P, P))
    for i in range(P):
        for j in range(P):
            den = err[i] * err[j]
            if den > 0.0 and np.isfinite(den):
                v = cov[i, j] / den
                if np.isfinite(v):
                    corr[i, j] = v
        corr[i, i] = 1.0
    fixed_out = fixed.copy()
    at_limit = np.zeros(P, dtype=np.bool_)
    for i in range(P):
        at_limit[i] = not fixed[i] and (theta[i] <= lo[i] or theta[i] >= hi[i])
    return theta, f, it, status, edm, cov, err, corr, posdef, fixed_out, at_limit


@kernel
def fit_dev(theta0, data, lo, hi, fixed, FB, IB, maxiter, tol):
    """A fit without Hesse on packed buffers, for test statistics: returns theta, nll (pyhf's
    form), :func:`nll_dev` (the cancellation-free form), status, n_iter, edm."""
    A, AUX = unpack(FB, IB)
    theta, f, _, it, status, edm, _, dev = _newton_ws(theta0, data, lo, hi, fixed, A, AUX, maxiter, tol, False, True,
                                                     _workspace(A, theta0.shape[0]))
    return theta, f, dev, status, it, edm


@kernel
def profile_start(theta_hat, mu, data, lo, hi, fixed, poi, A, AUX, W):
    """Start for the conditional fit at POI = ``mu`` from a free optimum ``theta_hat``: the
    nuisance parameters moved along the profile's tangent, ``theta + H_tt^-1 H_tm (mu_hat - mu)``
    (Gauss-Newton matrix at ``theta_hat``; first order in ``mu - mu_hat``), clipped to the bounds
    — kept only where its NLL is below that of ``theta_hat`` with the POI set to ``mu``.
    ``fixed`` includes the POI; ``W``: a :func:`_workspace` (its buffers are overwritten)."""
    P = theta_hat.shape[0]
    plain = theta_hat.copy()
    plain[poi] = mu
    dmu = mu - theta_hat[poi]
    if dmu == 0.0:
        return plain
    S, (nu, J, g, dcon, r, w), _, start, rhs, xw, _, Mw, sel = W
    if not _eval(theta_hat, data, A, AUX, S, nu, J, g, dcon, r, w, True) < np.inf:
        return plain
    m = 0
    for i in range(P):
        if not fixed[i]:
            sel[m] = i
            m += 1
    if m == 0:
        return plain
    sel = sel[:m]
    rhs = rhs[:m]
    rhs[:] = 0.0
    for b in range(J.shape[0]):
        v = w[b] * J[b, poi] * dmu
        if v != 0.0:
            for a in range(m):
                rhs[a] += J[b, sel[a]] * v
    ok, d = _gn_direction(J, w, dcon, sel, rhs, 0.0, Mw, xw)
    if not ok:
        return plain
    start[:] = plain
    for a in range(m):
        i = sel[a]
        start[i] = min(max(start[i] + d[a], lo[i]), hi[i])
    f_start = _eval(start, data, A, AUX, S, nu, J, g, dcon, r, w, False)
    if f_start < _eval(plain, data, A, AUX, S, nu, J, g, dcon, r, w, False):
        return start.copy()
    return plain


@kernel
def _conditional(theta_hat, mu, data, lo, hi, fixed, poi, A, AUX, maxiter, tol):
    W = _workspace(A, theta_hat.shape[0])
    start = profile_start(theta_hat, mu, data, lo, hi, fixed, poi, A, AUX, W)
    return _newton_ws(start, data, lo, hi, fixed, A, AUX, maxiter, tol, False, True, W)


@kernel
def fit_dev_conditional(theta_hat, mu, data, lo, hi, fixed, poi, FB, IB, maxiter, tol):
    """:func:`fit_dev` of the conditional fit at POI = ``mu`` (``fixed`` includes the POI),
    started from :func:`profile_start` of the free optimum ``theta_hat``."""
    A, AUX = unpack(FB, IB)
    theta, f, _, it, status, edm, _, dev = _conditional(theta_hat, mu, data, lo, hi, fixed, poi, A, AUX,
                                                        maxiter, tol)
    return theta, f, dev, status, it, edm


@kernel
def _expected_data(theta, A, AUX):
    par, kind, _, tau = AUX
    nb = A[18]
    out = np.empty(nb + par.shape[0])
    out[:nb] = expected_main(theta, A)
    for i in range(par.shape[0]):
        x = theta[par[i]]
        out[nb + i] = x if kind[i] == AUX_GAUSS else x * tau[i]
    return out


@kernel
def expected_data(theta, FB, IB):
    """Expected main rates then expected auxiliary data (theta for Gaussian constraints,
    tau * gamma for Poisson ones), pyhf's order; packed buffers."""
    A, AUX = unpack(FB, IB)
    return _expected_data(theta, A, AUX)


@kernel
def asymptotic_fits(init, mu, data, lo, hi, fixed, fixed_poi, poi, asimov_mu, FB, IB, maxiter, tol):
    """The five fits of an asymptotic test of POI = ``mu`` in one call (a small model's test is
    otherwise mostly call overhead), with the starts that
    :class:`nextstat.infer.hypotest.AsymptoticCalculator` uses one by one: the free fit on
    ``data`` from ``init``; the conditional fit at ``mu`` from it (:func:`profile_start`); the
    generating fit, conditional at ``asimov_mu``, from it; on that fit's expected (Asimov) data
    the free fit from the generating point and the conditional fit at ``mu`` from that.
    ``fixed_poi`` is ``fixed`` with the POI set.

    Returns thetas (5, P) and stats (5, 6) in that order (per fit: nll, nll_dev, status,
    n_iter, edm, as :func:`fit_dev`, and the number of free parameters on a bound), and the
    Asimov data (main + auxiliary)."""
    A, AUX = unpack(FB, IB)
    P = init.shape[0]
    thetas = np.empty((5, P))
    stats = np.empty((5, 6))
    asimov = data
    W = _workspace(A, P)
    for k in range(5):
        if k == 0:
            out = _newton_ws(init, data, lo, hi, fixed, A, AUX, maxiter, tol, False, True, W)
        elif k == 1:
            out = _conditional(thetas[0], mu, data, lo, hi, fixed_poi, poi, A, AUX, maxiter, tol)
        elif k == 2:
            out = _conditional(thetas[0], asimov_mu, data, lo, hi, fixed_poi, poi, A, AUX, maxiter, tol)
        elif k == 3:
            asimov = _expected_data(thetas[2], A, AUX)
            out = _newton_ws(thetas[2], asimov, lo, hi, fixed, A, AUX, maxiter, tol, False, True, W)
        else:
            out = _conditional(thetas[3], mu, asimov, lo, hi, fixed_poi, poi, A, AUX, maxiter, tol)
        theta, f, _, it, status, edm, _, dev = out
        thetas[k] = theta
        stats[k, 0] = f
        stats[k, 1] = dev
        stats[k, 2] = status
        stats[k, 3] = it
        stats[k, 4] = edm
        fx = fixed if k == 0 or k == 3 else fixed_poi
        n_at = 0
        for i in range(P):
            if not fx[i] and (theta[i] <= lo[i] or theta[i] >= hi[i]):
                n_at += 1
        stats[k, 5] = n_at
    return thetas, stats, asimov


# ------------------------------------------------------------------------------ packing
_A_INT = (0, 1, 2, 4, 5, 6, 10, 11, 12, 13, 16, 17)  # int64 arrays of A
_A_FLOAT = (3, 7, 8, 9, 14, 15)  # float64 arrays of A (9: sc_coef, (n, 6))
_HDR = 1 + 15 + 9  # n_bins, 14 int array offsets + end, 8 float array offsets + end


def pack(A, AUX):
    """The model arrays ``A`` and ``AUX`` as two flat buffers ``(FB float64, IB int64)``.

    Passing two arrays instead of 23 makes a compiled call about 3 us cheaper, which is most of
    a small model's fit. :func:`unpack` restores the tuples (views, no copies) in compiled code.
    """
    ints = [np.asarray(A[k], np.int64).ravel() for k in _A_INT] + [np.asarray(AUX[k], np.int64) for k in (0, 1)]
    floats = [np.asarray(A[k], np.float64).ravel() for k in _A_FLOAT] + [np.asarray(AUX[k], np.float64)
                                                                       for k in (2, 3)]
    io = _HDR + np.concatenate([[0], np.cumsum([len(x) for x in ints])])
    fo = np.concatenate([[0], np.cumsum([len(x) for x in floats])])
    IB = np.concatenate([[int(A[18])], io, fo, *ints]).astype(np.int64)
    FB = np.concatenate(floats).astype(np.float64) if floats else np.zeros(0)
    return np.ascontiguousarray(FB), np.ascontiguousarray(IB)


@kernel
def unpack(FB, IB):
    """``(A, AUX)`` from :func:`pack`'s buffers (views)."""
    i = IB[1:16]
    f = IB[16:25]
    A = (IB[i[0]:i[1]], IB[i[1]:i[2]], IB[i[2]:i[3]], FB[f[0]:f[1]],
         IB[i[3]:i[4]], IB[i[4]:i[5]], IB[i[5]:i[6]],
         FB[f[1]:f[2]], FB[f[2]:f[3]], FB[f[3]:f[4]].reshape(-1, 6),
         IB[i[6]:i[7]], IB[i[7]:i[8]], IB[i[8]:i[9]], IB[i[9]:i[10]], FB[f[4]:f[5]], FB[f[5]:f[6]],
         IB[i[10]:i[11]], IB[i[11]:i[12]], IB[0])
    AUX = (IB[i[12]:i[13]], IB[i[13]:i[14]], FB[f[6]:f[7]], FB[f[7]:f[8]])
    return A, AUX
