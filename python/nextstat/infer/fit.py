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


def hesse(model: Model, theta: np.ndarray, data: np.ndarray, fixed: np.ndarray) -> tuple[np.ndarray, bool]:
    """Covariance = inverse of the exact analytic Hessian over the free parameters.

    Returns (covariance (P, P) with zero rows/columns for fixed parameters, positive-definite flag).
    The inverse comes from LAPACK's Cholesky routines (``dpotrf``/``dpotri``, called from the
    compiled core: :func:`nextstat.engine.numba_core.hesse_cov`); where the Hessian is not
    positive definite, its eigenvalues are replaced by their absolute values before inverting
    and the flag is False.
    """
    return core.hesse_cov(np.ascontiguousarray(theta, dtype=np.float64), data, np.ascontiguousarray(fixed, dtype=bool),
                          model.arrays, model.aux_arrays, np.empty((0, 0)))


def fit(model: Model, *, data: Any = None, init_pars: Any = None, fixed_params: Any = None,
        par_bounds: Any = None, hesse: bool = True, maxiter: int = 200, tol: float = 1e-10) -> FitResult:
    """Maximum-likelihood fit: minimise ``model.nll`` over the free parameters within bounds.

    A bounded Newton method on the exact analytic Hessian (Gauss-Newton / Fisher-scoring
    fallback), with analytic Jacobian of the expected rates, compiled with Numba; typically
    3-20 iterations. The covariance is the inverse Hessian at the minimum (Hesse), taken from
    the fit's last exact-Hessian factorisation when it ended on one.

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
    d = model.data if data is None else model._data(data)
    init = model._init if init_pars is None else model._pars(init_pars, "init_pars")
    fixed = model.fixed_params if fixed_params is None else _fixed_mask(model, fixed_params)
    if par_bounds is None:
        lo, hi = model._lo, model._hi
    else:
        b = _bounds(model, par_bounds)
        lo, hi = np.ascontiguousarray(b[:, 0]), np.ascontiguousarray(b[:, 1])
    theta, f, n_iter, status, edm, cov, err, corr, posdef, fixed, at_limit = core.fit_with_errors(
        init, d, lo, hi, fixed, *model.packed, maxiter, tol, hesse)
    converged = status == core.FIT_CONVERGED
    message = _MESSAGES[status]
    if converged and hesse and not posdef:
        message = "converged; the Hessian is not positive definite (covariance approximated)"
    return FitResult._build(
        bestfit=theta, errors=err, covariance=cov, correlation=corr,
        parameter_names=model._names, poi_index=model.poi_index,
        nll=f, edm=edm, converged=converged, n_iter=n_iter,
        time_ms=(time.perf_counter() - t0) * 1e3, message=message, fixed=fixed,
        at_limit=at_limit, posdef=posdef,
    )


def fixed_poi_fit(model: Model, mu: float, *, data: Any = None, init_pars: Any = None,
                  fixed_params: Any = None, par_bounds: Any = None, hesse: bool = False) -> FitResult:
    """Fit with the POI fixed at ``mu`` (the conditional fit theta-hat-hat(mu))."""
    init = model.suggested_init() if init_pars is None else model._pars(init_pars, "init_pars").copy()
    init[model.poi_index] = mu
    fixed = _fixed_mask(model, fixed_params)
    fixed[model.poi_index] = True
    return fit(model, data=data, init_pars=init, fixed_params=fixed, par_bounds=par_bounds, hesse=hesse)
