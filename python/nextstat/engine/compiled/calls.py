"""The compiled entry points that take packed model buffers: fit with errors, fits returning the
deviance, conditional fits, expected data, the asymptotic test's fits in one call.
"""

from __future__ import annotations

import math

import numpy as np

from nextstat.engine.compiled.codes import FIT_CONVERGED, FIT_NONFINITE_RESULT
from nextstat.engine.compiled.hesse import hesse_cov
from nextstat.engine.compiled.likelihood import _expected_data
from nextstat.engine.compiled.newton import _newton_ws, _workspace
from nextstat.engine.compiled.profiled import _conditional
from nextstat.engine.layout import unpack
from nextstat.engine.jit import kernel


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
def fit_dev_conditional(theta_hat, mu, data, lo, hi, fixed, poi, FB, IB, maxiter, tol):
    """:func:`fit_dev` of the conditional fit at POI = ``mu`` (``fixed`` includes the POI),
    started from :func:`profile_start` of the free optimum ``theta_hat``."""
    A, AUX = unpack(FB, IB)
    theta, f, _, it, status, edm, _, dev = _conditional(theta_hat, mu, data, lo, hi, fixed, poi, A, AUX,
                                                        maxiter, tol)
    return theta, f, dev, status, it, edm


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
