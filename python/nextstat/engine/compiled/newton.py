"""The bounded Newton fit: Gauss-Newton steps with line search, bound snapping, exact-Hessian switch
near the minimum, Levenberg-Marquardt damping, status.
"""

from __future__ import annotations

import math

import numpy as np

from nextstat.engine.compiled.codes import FIT_CONVERGED, FIT_LINESEARCH, FIT_MAXITER, FIT_NONFINITE, FIT_NONFINITE_RESULT, _EXACT_EDM, _SMALL_DENSE
from nextstat.engine.compiled.hessian import _exact_factor, _factor_inplace, _hess_lower
from nextstat.engine.compiled.likelihood import _eval, _pyhf_nll
from nextstat.engine.compiled.linalg import _gn_direction, _lower_solve, _mask_lower, _upper_solve
from nextstat.engine.compiled.rates import _block_sizes, _point_buffers
from nextstat.engine.jit import kernel, leaf
from nextstat.engine.layout import N_BINS


@kernel
def _workspace(A, P):
    """Every buffer a fit needs, as views of two allocations (an allocation costs ~0.1 us, a
    small model's Newton iteration ~1 us): the :func:`pass_scratch` tuple; rates, Jacobian,
    gradient, constraint curvature, residual and weights at the current point and at a trial
    point; the trial point, selected gradient, step and full-length step; a (P, P) matrix for
    small dense solves (0 x 0 above ``_SMALL_DENSE``); an index buffer (P,)."""
    B = A[N_BINS]
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
    B = A[N_BINS]
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
