"""The ranking's refits: the POI with one nuisance parameter held at a shifted value, K refits in
one call (:func:`refit_batch`).

Speed: the refits start from the linear response of the nominal fit, ``theta_hat + C[:, i] /
C[i, i] * (value - theta_hat_i)`` (``C`` the Hesse covariance), and iterate Newton steps with
the fixed Hessian of the nominal fit restricted to the other free parameters, whose inverse is
the Schur complement ``C_FF - C_Fi C_iF / C_ii`` (no factorisation per refit). A refit that
leaves the bounds, stops contracting or does not converge in ``chord_max`` steps is finished by
the full bounded Newton fit (:func:`nextstat.engine.compiled.newton.newton_fit`). The kernel
releases the GIL (the ranking runs it in threads).
"""

from __future__ import annotations

import numpy as np

from nextstat.engine.compiled.codes import FIT_CONVERGED, FIT_MAXITER
from nextstat.engine.compiled.likelihood import nll_grad
from nextstat.engine.compiled.newton import newton_fit
from nextstat.engine.jit import kernel


@kernel
def refit_batch(theta_hat, cov, data, lo, hi, fixed, A, AUX, pars, values, maxiter, tol, chord_max):
    """Fits with parameter ``pars[k]`` fixed at ``values[k]``, all other free parameters profiled.

    ``theta_hat``: nominal best fit (P,); ``cov``: its covariance (P, P), zero rows/columns for
    ``fixed`` parameters. Returns (theta (K, P), status (K,) FIT_*, iterations (K,), used the
    full Newton fit (K,)).
    """
    K = pars.shape[0]
    P = theta_hat.shape[0]
    out = np.empty((K, P))
    status = np.empty(K, dtype=np.int64)
    iters = np.zeros(K, dtype=np.int64)
    newton = np.zeros(K, dtype=np.bool_)
    free0 = np.flatnonzero(~fixed)
    g0 = np.zeros(P)
    for k in range(K):
        i = pars[k]
        v = values[k]
        cii = cov[i, i]
        theta = theta_hat.copy()
        theta[i] = v
        ok = cii > 0.0 and np.isfinite(cii)
        st = FIT_MAXITER
        it = 0
        if ok:
            # linear response of the other parameters to the shift of parameter i
            s = (v - theta_hat[i]) / cii
            for a in range(free0.shape[0]):
                p = free0[a]
                if p != i:
                    theta[p] = theta_hat[p] + cov[p, i] * s
                    if not lo[p] <= theta[p] <= hi[p]:
                        ok = False
        if ok:
            prev = np.inf
            g0[:] = 0.0
            while it < chord_max:
                it += 1
                f, g = nll_grad(theta, data, A, AUX)
                if not np.isfinite(f):
                    ok = False
                    break
                for a in range(free0.shape[0]):
                    g0[free0[a]] = g[free0[a]]
                g0[i] = 0.0
                # step = -(C_FF - C_Fi C_iF / C_ii) g_F
                step = cov @ g0
                cig = step[i] / cii
                edm = 0.0
                for a in range(free0.shape[0]):
                    p = free0[a]
                    if p != i:
                        d = cov[p, i] * cig - step[p]
                        step[p] = d
                        edm -= 0.5 * g0[p] * d
                if edm < tol:
                    # take this last step too when it stays inside the bounds: it costs no
                    # gradient and leaves the fit another contraction factor closer
                    inside = True
                    for a in range(free0.shape[0]):
                        p = free0[a]
                        if p != i and not lo[p] <= theta[p] + step[p] <= hi[p]:
                            inside = False
                    if inside:
                        for a in range(free0.shape[0]):
                            p = free0[a]
                            if p != i:
                                theta[p] += step[p]
                    st = FIT_CONVERGED
                    break
                if edm > 0.5 * prev:
                    ok = False  # not contracting: leave it to the full Newton fit
                    break
                prev = edm
                for a in range(free0.shape[0]):
                    p = free0[a]
                    if p != i:
                        x = theta[p] + step[p]
                        if not lo[p] <= x <= hi[p]:
                            ok = False
                        theta[p] = x
                if not ok:
                    break
        if st != FIT_CONVERGED:
            newton[k] = True
            fx = fixed.copy()
            fx[i] = True
            start = theta if ok else theta_hat.copy()
            start[i] = v
            theta, _, _, it2, st, _ = newton_fit(start, data, lo, hi, fx, A, AUX, maxiter, tol, True)
            it += it2
        out[k] = theta
        status[k] = st
        iters[k] = it
    return out, status, iters, newton
