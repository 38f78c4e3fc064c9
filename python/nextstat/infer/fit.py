"""Maximum-likelihood fits with the compiled Newton core."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from nextstat.engine import numba_core as core
from nextstat.model import Model
from nextstat.results import FitResult

_MESSAGES = {
    core.FIT_CONVERGED: "converged",
    core.FIT_MAXITER: "reached the iteration limit before converging",
    core.FIT_LINESEARCH: "line search found no decrease: the fit did not converge",
    core.FIT_NONFINITE: "the NLL is not finite at the starting point (expected rate <= 0 where data > 0)",
}


def _fixed_mask(model: Model, fixed_params: Any) -> np.ndarray:
    if fixed_params is None:
        return model.fixed_params.copy()
    f = np.asarray(fixed_params, dtype=bool)
    if f.shape != (model.n_params,):
        raise ValueError(f"fixed_params: expected {model.n_params} booleans, got shape {f.shape}")
    return f


def _bounds(model: Model, par_bounds: Any) -> np.ndarray:
    if par_bounds is None:
        return model.suggested_bounds()
    b = np.asarray(par_bounds, dtype=np.float64)
    if b.shape != (model.n_params, 2):
        raise ValueError(f"par_bounds: expected shape ({model.n_params}, 2), got {b.shape}")
    if np.any(b[:, 0] > b[:, 1]):
        raise ValueError("par_bounds: a lower bound lies above its upper bound")
    return b


def minimize(model: Model, data: np.ndarray, init: np.ndarray, bounds: np.ndarray, fixed: np.ndarray,
             *, maxiter: int = 200, tol: float = 1e-10) -> tuple[np.ndarray, float, np.ndarray, int, int, float]:
    """Run the compiled bounded Newton fit (no Hesse step). Returns
    (theta, nll, gradient, n_iter, status, edm); ``status`` is one of ``core.FIT_*``."""
    return core.newton_fit(init, data, np.ascontiguousarray(bounds[:, 0]), np.ascontiguousarray(bounds[:, 1]),
                           fixed, model.arrays, model.aux_arrays, maxiter, tol)


def hesse(model: Model, theta: np.ndarray, data: np.ndarray, fixed: np.ndarray) -> tuple[np.ndarray, bool]:
    """Covariance = inverse of the exact analytic Hessian over the free parameters.

    Returns (covariance (P, P) with zero rows/columns for fixed parameters, positive-definite flag).
    The inverse comes from LAPACK's Cholesky routines (``dpotrf``/``dpotri``); where the Hessian
    is not positive definite, its eigenvalues are replaced by their absolute values before
    inverting and the flag is False.
    """
    from scipy.linalg import lapack

    H = core.nll_grad_hess(theta, data, model.arrays, model.aux_arrays, True)[2]
    free = np.flatnonzero(~fixed)
    cov = np.zeros_like(H)
    if free.size == 0:
        return cov, True
    Hf = H[np.ix_(free, free)]
    c, info = lapack.dpotrf(Hf, lower=1)
    if info == 0:
        inv, info = lapack.dpotri(c, lower=1)
    if info == 0:
        cf = np.tril(inv) + np.tril(inv, -1).T
        posdef = True
    else:
        w, V = np.linalg.eigh(Hf)
        cf = (V / np.maximum(np.abs(w), 1e-300)) @ V.T
        posdef = False
    cov[np.ix_(free, free)] = cf
    return cov, posdef


def fit(model: Model, *, data: Any = None, init_pars: Any = None, fixed_params: Any = None,
        par_bounds: Any = None, hesse: bool = True, maxiter: int = 200, tol: float = 1e-10) -> FitResult:
    """Maximum-likelihood fit: minimise ``model.nll`` over the free parameters within bounds.

    A bounded Newton method on the exact analytic Hessian (Gauss-Newton / Fisher-scoring
    fallback), with analytic Jacobian of the expected rates, compiled with Numba; typically
    3-20 iterations. The covariance is the inverse Hessian at the minimum (Hesse).

    Args:
        model: compiled model.
        data: main + auxiliary data, shape (n_bins + n_aux,), or main only; default observed.
        init_pars: starting point, shape (n_params,); default ``model.suggested_init()``.
            Fixed parameters stay at these values.
        fixed_params: boolean mask, shape (n_params,); default ``model.fixed_params``.
        par_bounds: shape (n_params, 2); default ``model.suggested_bounds()``.
        hesse: compute covariance and errors (otherwise they are zero).
        maxiter: iteration limit. tol: convergence threshold on the EDM.

    Returns:
        FitResult. A fit that did not converge says so (``converged=False``, ``message``).
    """
    t0 = time.perf_counter()
    d = model._data(data)
    init = model.suggested_init() if init_pars is None else model._pars(init_pars, "init_pars").copy()
    fixed = _fixed_mask(model, fixed_params)
    bounds = _bounds(model, par_bounds)
    theta, f, g, n_iter, status, edm = minimize(model, d, init, bounds, fixed, maxiter=maxiter, tol=tol)
    return _result(model, d, theta, f, n_iter, status, edm, fixed, bounds, hesse, t0)


def _result(model: Model, data: np.ndarray, theta: np.ndarray, f: float, n_iter: int, status: int,
            edm: float, fixed: np.ndarray, bounds: np.ndarray, do_hesse: bool, t0: float) -> FitResult:
    P = model.n_params
    if do_hesse and np.isfinite(f):
        cov, posdef = hesse(model, theta, data, fixed)
    else:
        cov, posdef = np.zeros((P, P)), True
    err = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(err, err)
    corr[~np.isfinite(corr)] = 0.0
    np.fill_diagonal(corr, 1.0)
    at_limit = ~fixed & ((theta <= bounds[:, 0]) | (theta >= bounds[:, 1]))
    converged = status == core.FIT_CONVERGED
    message = _MESSAGES[status]
    if converged and do_hesse and not posdef:
        message = "converged; the Hessian is not positive definite (covariance approximated)"
    return FitResult(
        bestfit=theta, errors=err, covariance=cov, correlation=corr,
        parameter_names=tuple(model.parameter_names), poi_index=model.poi_index,
        nll=float(f), edm=float(edm), converged=bool(converged), n_iter=int(n_iter),
        time_ms=(time.perf_counter() - t0) * 1e3, message=message, fixed=fixed, at_limit=at_limit,
        posdef=posdef,
    )


def fixed_poi_fit(model: Model, mu: float, *, data: Any = None, init_pars: Any = None,
                  fixed_params: Any = None, par_bounds: Any = None, hesse: bool = False) -> FitResult:
    """Fit with the POI fixed at ``mu`` (the conditional fit theta-hat-hat(mu))."""
    init = model.suggested_init() if init_pars is None else model._pars(init_pars, "init_pars").copy()
    init[model.poi_index] = mu
    fixed = _fixed_mask(model, fixed_params)
    fixed[model.poi_index] = True
    return fit(model, data=data, init_pars=init, fixed_params=fixed, par_bounds=par_bounds, hesse=hesse)
