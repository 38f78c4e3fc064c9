"""The likelihood (pyhf's, arXiv:1007.1727 eq. 5): Poisson main terms, Gaussian and Poisson
constraints, the deviance form used by fits and test statistics, the gradient's parts and
Asimov/expected data.
"""

from __future__ import annotations

import math

import numpy as np

from nextstat.engine.compiled.codes import AUX_GAUSS, MODE_JAC, MODE_RATES, _SQRT2, _SQRT2PI
from nextstat.engine.compiled.externals import _gammaln
from nextstat.engine.compiled.rates import expected_main, model_pass, pass_scratch
from nextstat.engine.jit import kernel, leaf
from nextstat.engine.layout import AUX_KIND, AUX_PAR, AUX_SIGMA, AUX_TAU, N_BINS


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
    par, kind, sigma, tau = AUX[AUX_PAR], AUX[AUX_KIND], AUX[AUX_SIGMA], AUX[AUX_TAU]
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
    nb = A[N_BINS]
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
    par, kind, sigma, tau = AUX[AUX_PAR], AUX[AUX_KIND], AUX[AUX_SIGMA], AUX[AUX_TAU]
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
    nb = A[N_BINS]
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
    return _eval(theta, data, A, AUX, pass_scratch(A), np.empty(A[N_BINS]), np.empty((0, 0)), e, e, e, e, False)


@leaf
def _pyhf_nll(theta, data, A, AUX, nu):
    """pyhf's NLL (:func:`nll`) from the rates ``nu`` at ``theta``."""
    nb = A[N_BINS]
    f = _poisson_nll(nu, data[:nb])
    if not f < np.inf:
        return np.inf
    return f + constraint_nll(theta, data[nb:], AUX)


@kernel
def _grad_parts(theta, data, A, AUX):
    """(nll, gradient, Jacobian J (B, P), Gauss-Newton weights w = n / nu^2 (B,),
    residual r = 1 - n / nu (B,), constraint curvature (P,)); nll = inf where undefined."""
    nb = A[N_BINS]
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


@kernel
def nll_grad(theta, data, A, AUX):
    """(nll, gradient) with the analytic Jacobian of the expected rates."""
    f, g, _, _, _, _ = _grad_parts(theta, data, A, AUX)
    return f, g


@kernel
def _expected_data(theta, A, AUX):
    par, kind, tau = AUX[AUX_PAR], AUX[AUX_KIND], AUX[AUX_TAU]
    nb = A[N_BINS]
    out = np.empty(nb + par.shape[0])
    out[:nb] = expected_main(theta, A)
    for i in range(par.shape[0]):
        x = theta[par[i]]
        out[nb + i] = x if kind[i] == AUX_GAUSS else x * tau[i]
    return out
