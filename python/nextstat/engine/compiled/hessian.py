"""The NLL's Hessian: Gauss-Newton Gram plus the exact second-order term, built in place in the lower
triangle, and its factorisation.
"""

from __future__ import annotations

import math

import numpy as np

from nextstat.engine.compiled.codes import MODE_HESS2, _SMALL_DENSE, _SMALL_GRAM
from nextstat.engine.compiled.externals import _potrf, _syrk_lower
from nextstat.engine.compiled.likelihood import _grad_parts
from nextstat.engine.compiled.linalg import _chol_inplace, _gram_into, _mask_lower
from nextstat.engine.compiled.rates import model_pass, pass_scratch
from nextstat.engine.jit import kernel


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


@kernel
def _factor_inplace(H):
    """Cholesky factor of the symmetric matrix in H's lower triangle, in place (lower, C order;
    the strict upper triangle is not used and left as it was). Returns ok."""
    n = H.shape[0]
    if n <= _SMALL_DENSE:
        return _chol_inplace(H, n)
    return _potrf(H) == 0


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


@kernel
def _exact_factor(theta, J, w, r, dcon, A, keep, S, H):
    """Cholesky factor (in ``H``, (P, P), lower) of the exact Hessian over the parameters with
    ``keep`` True, the others masked to the identity (:func:`_mask_lower`). Returns ok."""
    _hess_lower(theta, J, w, r, dcon, A, True, S, H)
    _mask_lower(H, keep)
    return _factor_inplace(H)
