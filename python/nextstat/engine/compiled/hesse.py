"""Hesse errors: the inverse of the exact Hessian over the free parameters, on the free subspace where
it is not positive definite.
"""

from __future__ import annotations

import math

import numpy as np

from nextstat.engine.compiled.hessian import _exact_factor, nll_grad_hess
from nextstat.engine.compiled.likelihood import _grad_parts
from nextstat.engine.compiled.linalg import _spd_inverse, submatrix
from nextstat.engine.compiled.rates import pass_scratch
from nextstat.engine.jit import kernel


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
