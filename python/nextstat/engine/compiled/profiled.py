"""Conditional fits of the profile likelihood: the start on the profile's tangent and the fit at fixed
POI.
"""

from __future__ import annotations

import numpy as np

from nextstat.engine.compiled.likelihood import _eval
from nextstat.engine.compiled.linalg import _gn_direction
from nextstat.engine.compiled.newton import _newton_ws, _workspace
from nextstat.engine.jit import kernel


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
