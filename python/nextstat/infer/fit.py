"""Maximum-likelihood fits, and the retry policy of every fit (alternative starts, restarts from
stalls, kink fits), on either engine of :mod:`nextstat.engine.fitter`."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from nextstat.engine.compiled.codes import FIT_CONVERGED, FIT_NONFINITE_RESULT, HS_CODE0, SC_CODE1
from nextstat.engine.fit_outputs import STATUS_MESSAGES
from nextstat.engine.fitter import (DEFAULT_MAXITER, DEFAULT_TOL, READY, FitOutput, Fitter, errors_and_correlation,
                                    resolve_fitter)
from nextstat.engine.layout import HS_CODE, HS_PAR, SC_KIND, SC_PAR
from nextstat.model import Model, require_model
from nextstat.results import FitResult


def retry_starts(model: Model, init: np.ndarray, fixed: np.ndarray, lo: np.ndarray,
                 hi: np.ndarray) -> list[np.ndarray]:
    """Alternative starting points for a fit from ``init`` that did not converge (the one
    retry policy of fits, hypothesis tests and scans): ``model.suggested_init()``, then the
    modifier types' own initial values (pyhf's defaults before the measurement's ``inits``: 1
    for factors, 0 for nuisance shifts), then the centre of each free parameter's bounds where
    they are finite; fixed parameters keep their values in ``init``. Starts equal to ``init``
    or to an earlier start are left out."""
    starts = []
    base = model.suggested_init()
    centre = np.where(np.isfinite(lo) & np.isfinite(hi), 0.5 * (lo + hi), base)
    for cand in (base, model._type_init, centre):
        s = np.where(fixed, init, np.clip(cand, lo, hi))
        if not any(np.array_equal(s, t) for t in [init, *starts]):
            starts.append(np.ascontiguousarray(s))
    return starts


def stalled_start(model: Model, theta: np.ndarray, data: np.ndarray, fixed: np.ndarray, lo: np.ndarray,
                  hi: np.ndarray, fitter: Fitter) -> np.ndarray | None:
    """A restart for a fit that converged on a stationary point it cannot leave: free
    parameters at a bound on which the NLL does not depend there, e.g. mu = k = 0 of a signal
    scaled by mu * k (each factor's gradient is the other factor, 0: a saddle point on the
    boundary, not a minimum). Those parameters go back to the modifier types' initial values
    (or the centre of their bounds where that is the bound itself); the others keep their
    values. None where fewer than two free parameters are on a bound (one factor on 0 leaves
    the others without effect: a stall needs two on a bound) or none of them has zero slope."""
    at = np.flatnonzero(~fixed & ((theta <= lo) | (theta >= hi)))
    if at.size < 2:
        return None
    f0 = fitter.nll_dev(model, theta, data)
    flat = []
    for i in at:
        width = hi[i] - lo[i]
        step = 1e-6 * (width if np.isfinite(width) and width > 0 else 1.0)
        trial = theta.copy()
        trial[i] = theta[i] + step if theta[i] <= lo[i] else theta[i] - step
        if abs(fitter.nll_dev(model, trial, data) - f0) <= 1e-13 * max(1.0, abs(f0)):
            flat.append(i)
    if not flat:
        return None
    start = theta.copy()
    centre = np.where(np.isfinite(lo) & np.isfinite(hi), 0.5 * (lo + hi), model._type_init)
    for i in flat:
        v = model._type_init[i]
        start[i] = v if lo[i] < v < hi[i] else centre[i]
    return np.ascontiguousarray(start)


#: seeded starts spread over the bounds, tried after a fit that converged where the Hessian is
#: not positive definite (:func:`spread_starts`)
SPREAD_STARTS = 4


def spread_starts(model: Model, init: np.ndarray, fixed: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  n: int) -> list[np.ndarray]:
    """``n`` starting points drawn uniformly within the bounds of the free parameters (a fixed
    seed: the same fit gives the same result every time), within +-2 prior widths of the
    suggested value where a bound is infinite; fixed parameters keep their values in ``init``."""
    rng = np.random.default_rng(20261203)
    w = 2.0 * model.prior_widths()
    w = np.where(np.isfinite(w) & (w > 0), w, 1.0)
    a = np.where(np.isfinite(lo), lo, model._init - w)
    b = np.where(np.isfinite(hi), hi, model._init + w)
    return [np.ascontiguousarray(np.where(fixed, init, np.clip(a + rng.uniform(size=a.shape) * (b - a), lo, hi)))
            for _ in range(n)]


#: iteration limit of :func:`first_order_start`
FIRST_ORDER_MAXITER = 500


def first_order_start(model: Model, data: np.ndarray, init: np.ndarray, fixed: np.ndarray, lo: np.ndarray,
                      hi: np.ndarray, fitter: Fitter) -> np.ndarray | None:
    """The end point of a bounded first-order minimisation (SciPy's SLSQP with the analytic
    gradient, at most :data:`FIRST_ORDER_MAXITER` iterations) from ``init``, as a start for a
    Newton fit; None where it does not end on a finite NLL. Used only after a fit converged on
    a Hessian that is not positive definite: its short, gradient-led steps stay in the start's
    basin where Newton's first steps can leave it (products of factors, interpolation kinks)."""
    from scipy.optimize import minimize  # imported here: scipy.optimize costs ~0.5 s to import

    free = np.flatnonzero(~fixed)
    if free.size == 0:
        return None
    base = np.array(init, dtype=np.float64)

    def at(x: np.ndarray) -> np.ndarray:
        th = base.copy()
        th[free] = x
        return th

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = fitter.nll_grad(model, at(x), data)
        if not (np.isfinite(f) and np.all(np.isfinite(g))):
            return 1e300, np.zeros(free.size)
        return float(f), g[free]

    with np.errstate(all="ignore"):
        res = minimize(fun, base[free], jac=True, method="SLSQP", bounds=list(zip(lo[free], hi[free])),
                       options={"maxiter": FIRST_ORDER_MAXITER, "ftol": 1e-12})
    th = np.clip(at(np.asarray(res.x, dtype=np.float64)), lo, hi)
    if not np.isfinite(fitter.nll(model, th, data)):
        return None
    return np.ascontiguousarray(th)


def better(a_status: int, a_nll: float, b_status: int, b_nll: float) -> bool:
    """True where fit ``a`` is preferable to fit ``b``: converged before not converged, then
    the lower NLL (a non-finite NLL is never lower)."""
    a_ok, b_ok = a_status == FIT_CONVERGED, b_status == FIT_CONVERGED
    if a_ok != b_ok:
        return a_ok
    return bool(a_nll < b_nll) or not np.isfinite(b_nll) and np.isfinite(a_nll)


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
    if np.any(np.isnan(b)):
        raise ValueError(f"par_bounds: NaN bound for parameter {model.parameter_names[int(np.flatnonzero(np.isnan(b).any(axis=1))[0])]!r}")
    if np.any(b[:, 0] > b[:, 1]):
        raise ValueError("par_bounds: a lower bound lies above its upper bound")
    return b


def hesse(model: Model, theta: np.ndarray, data: np.ndarray, fixed: np.ndarray,
          fitter: Fitter | str | None = None) -> tuple[np.ndarray, bool]:
    """Covariance = inverse of the exact analytic Hessian over the free parameters.

    Returns (covariance (P, P) with zero rows/columns for fixed parameters, positive-definite flag).
    The inverse comes from LAPACK's Cholesky routines (``dpotrf``/``dpotri``, called from the
    compiled core: :func:`nextstat.engine.compiled.hesse.hesse_cov`; NumPy's on the torch
    fitter); where the Hessian is not positive definite, its eigenvalues are replaced by their
    absolute values before inverting and the flag is False.
    """
    return resolve_fitter(fitter, "hesse_cov").hesse(model, theta, data, fixed)


def fit(model: Model, *, data: Any = None, init_pars: Any = None, fixed_params: Any = None,
        par_bounds: Any = None, hesse: bool = True, maxiter: int = DEFAULT_MAXITER, tol: float = DEFAULT_TOL,
        fitter: Fitter | str | None = None) -> FitResult:
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
        hesse: compute covariance and errors (otherwise they are None).
        maxiter: iteration limit. tol: convergence threshold on the EDM.
        fitter: the engine, ``"auto"`` (default: compiled once its code is cached, the torch
            fitter during a first use while it compiles in the background), ``"compiled"``,
            ``"torch"`` or a :class:`~nextstat.engine.fitter.Fitter` (see
            :mod:`nextstat.engine.fitter`); ``FitResult.fitter`` says which ran.

    Returns:
        FitResult. A fit that did not converge says so (``converged=False``, ``message``).
    """
    require_model(model)
    t0 = time.perf_counter()
    engine = (READY.get("fit_with_errors") if fitter is None else None) or resolve_fitter(fitter, "fit_with_errors")
    d = model.data if data is None else model._data(data)
    init = model._init if init_pars is None else model._pars(init_pars, "init_pars")
    fixed = model.fixed_params if fixed_params is None else _fixed_mask(model, fixed_params)
    if par_bounds is None:
        lo, hi = model._lo, model._hi
    else:
        b = _bounds(model, par_bounds)
        lo, hi = np.ascontiguousarray(b[:, 0]), np.ascontiguousarray(b[:, 1])

    if not (isinstance(maxiter, (int, np.integer)) and maxiter >= 1):
        raise ValueError(f"maxiter: expected a positive integer, got {maxiter!r}")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol: expected a finite value > 0, got {tol!r}")
    out = engine.fit(model, init, d, lo, hi, fixed, maxiter, tol, hesse)
    kink_note = ""
    if out.status != FIT_CONVERGED or not out.posdef:
        out, kink_note = _repaired(model, engine, out, d, init, fixed, lo, hi, maxiter, tol, hesse)
    if out.status == FIT_CONVERGED and kink_parameters(model).size:
        beyond = _beyond_kinks(model, engine, out, d, fixed, lo, hi, maxiter, tol, hesse)
        if beyond is not None:
            out, kink_note = beyond, ""
    theta, f, n_iter, status, edm, cov, err, corr, posdef, fixed, at_limit = out
    converged = status == FIT_CONVERGED
    message = STATUS_MESSAGES[status] + kink_note
    if converged and hesse and not posdef:
        flat = [model._names[i] for i in np.flatnonzero(~fixed & (err == 0.0))]
        message = "converged; the Hessian is not positive definite (covariance approximated)"
        if flat:
            message += (f"; no curvature in {', '.join(flat[:5])}{' ...' if len(flat) > 5 else ''}: "
                        "their errors are not defined by Hesse (reported as 0; use a profile scan)")
    return FitResult._build(
        bestfit=theta, errors=err if hesse else None, covariance=cov if hesse else None,
        correlation=corr if hesse else None, parameter_names=model._names, poi_index=model.poi_index,
        nll=f, edm=edm, converged=converged, n_iter=n_iter,
        time_ms=(time.perf_counter() - t0) * 1e3, message=message, fixed=fixed,
        at_limit=at_limit, posdef=posdef, fitter=engine.name,
    )


def _repaired(model: Model, engine: Fitter, out: FitOutput, d: np.ndarray, init: np.ndarray, fixed: np.ndarray,
              lo: np.ndarray, hi: np.ndarray, maxiter: int, tol: float, hesse: bool) -> tuple[FitOutput, str]:
    """A fit that did not converge, or converged where the Hessian is not positive definite:
    :func:`_retried`, then (still not converged) :func:`kink_fit`. Returns the fit kept and a note
    for its message (kept out of :func:`fit`, whose hot path then holds no closures)."""

    def run(start: np.ndarray, n_max: int) -> FitOutput:
        return engine.fit(model, start, d, lo, hi, fixed, n_max, tol, hesse)

    out = _retried(model, engine, run, out, d, init, fixed, lo, hi, maxiter)
    kink_note = ""
    if out.status != FIT_CONVERGED:
        def run_at(start: np.ndarray, fx: np.ndarray, blo: np.ndarray, bhi: np.ndarray) -> tuple:
            r = engine.fit(model, start, d, blo, bhi, fx, maxiter, tol, False)
            return r.theta, r.status, r

        kinked = kink_fit(model, d, out.theta, fixed, lo, hi, run_at, engine)
        if kinked is not None and better(kinked[2].status, kinked[2].nll, out.status, out.nll):
            r, names = kinked[2], kinked[3]
            cov, posdef = engine.hesse(model, r.theta, d, fixed) if hesse else (np.zeros_like(out.covariance), True)
            err, corr = errors_and_correlation(cov)
            status = r.status if np.all(np.isfinite(err)) else FIT_NONFINITE_RESULT
            out = FitOutput(r.theta, r.nll, r.n_iter, status, r.edm, cov, err, corr, posdef, fixed.copy(),
                            ~fixed & ((r.theta <= lo) | (r.theta >= hi)))
            kink_note = f"; at the interpolation kink of {', '.join(names)} (alpha = 0, one-sided optimum)"
    return out, kink_note


def _beyond_kinks(model: Model, engine: Fitter, out: FitOutput, d: np.ndarray, fixed: np.ndarray,
                  lo: np.ndarray, hi: np.ndarray, maxiter: int, tol: float, hesse: bool) -> FitOutput | None:
    """The refit of a converged fit from the starts of :func:`other_side_starts` that ends
    :func:`lower`, or None."""

    def run_at(start: np.ndarray, fx: np.ndarray, blo: np.ndarray, bhi: np.ndarray) -> tuple:
        r = engine.fit(model, start, d, blo, bhi, fx, maxiter, tol, False)
        return r.theta, r.status, r

    best = None
    for start in other_side_starts(model, d, out.theta, fixed, lo, hi, run_at, engine):
        alt = engine.fit(model, start, d, lo, hi, fixed, maxiter, tol, hesse)
        ref = out if best is None else best
        if lower(alt.status, alt.nll, ref.status, ref.nll):
            best = alt
    return best


def _retried(model: Model, engine: Fitter, run: Any, out: FitOutput, d: np.ndarray, init: np.ndarray,
             fixed: np.ndarray, lo: np.ndarray, hi: np.ndarray, maxiter: int) -> FitOutput:
    """The retries of a fit that did not converge or converged where the Hessian is not
    positive definite (it may be a saddle point, e.g. mu = k = 0 of a signal scaled by mu * k):
    the alternative starts (at most four more fits), a stall restart, spread starts and a
    first-order path; the best fit is kept (:func:`better`)."""
    tried = [out]  # every fit of the retries, converged or not

    def retry(start: np.ndarray) -> FitOutput:
        tried.append(run(start, maxiter))
        return tried[-1]

    for start in retry_starts(model, init, fixed, lo, hi):
        alt = retry(start)
        if better(alt.status, alt.nll, out.status, out.nll):
            out = alt
        if out.status == FIT_CONVERGED and out.posdef:
            break
    restart = stalled_start(model, out.theta, d, fixed, lo, hi, engine) if out.status == FIT_CONVERGED else None
    if restart is not None:
        alt = retry(restart)
        if better(alt.status, alt.nll, out.status, out.nll):
            out = alt
    if out.status == FIT_CONVERGED and not out.posdef:
        # still on a Hessian that is not positive definite: a product of factors of which one
        # is 0 leaves the others without effect, and the NLL is not convex there; a few
        # seeded starts spread over the bounds look for a lower minimum
        for start in spread_starts(model, init, fixed, lo, hi, SPREAD_STARTS):
            alt = retry(start)
            if better(alt.status, alt.nll, out.status, out.nll):
                out = alt
        if out.status == FIT_CONVERGED and not out.posdef:
            # the last retry: a first-order path from the start (Newton's first steps can
            # jump into another basin), polished by Newton
            start = first_order_start(model, d, init, fixed, lo, hi, engine)
            if start is not None:
                alt = retry(start)
                if better(alt.status, alt.nll, out.status, out.nll):
                    out = alt
        lowest = min((t for t in tried if math.isfinite(t.nll)), key=lambda t: t.nll, default=out)
        if out.status == FIT_CONVERGED and not out.posdef and lowest.nll < out.nll - 1e-6 * (1.0 + abs(out.nll)):
            # a retry ended lower than this converged (possible) saddle without converging,
            # e.g. on a code0 kink whose gradient jumps: the saddle is not the minimum; the
            # lower point goes on to the kink fit below, or is reported unconverged
            out = lowest
    return out


def kink_parameters(model: Model) -> np.ndarray:
    """Indices of the parameters whose interpolation has a kink at 0: normsys code1 (hi^alpha
    and lo^-alpha meet with different slopes) and histosys code0 (piecewise linear); computed
    once per model."""
    cached = model.__dict__.get("_kink_parameters")
    if cached is None:
        A = model.arrays
        kinks = np.r_[A[SC_PAR][A[SC_KIND] == SC_CODE1], A[HS_PAR][A[HS_CODE] == HS_CODE0]]
        cached = model.__dict__["_kink_parameters"] = np.unique(kinks).astype(np.int64)
    return cached


#: the step of the one-sided derivatives at an interpolation kink (:func:`concave_kinks`)
KINK_STEP = 1e-6

#: :func:`concave_kinks` checks at most this many kink parameters, the nearest to their kink
#: (3 NLL evaluations each: 0.5 ms on ATLAS tttt instead of 12 ms for all 182 with code1/code0)
MAX_KINK_PROBES = 8


def concave_kinks(model: Model, theta: np.ndarray, data: np.ndarray, fixed: np.ndarray, lo: np.ndarray,
                  hi: np.ndarray, fitter: Fitter) -> np.ndarray:
    """The free parameters of :func:`kink_parameters`, off 0 and free on both sides of it, along
    which the NLL (the others held at ``theta``) has a concave kink at 0: its one-sided slopes
    there (steps of :data:`KINK_STEP`) fall across 0, d+ < d-, e.g. a code0 histosys whose up
    and down templates both lower a bin. Along such a parameter the NLL can have a minimum on
    each side of 0, and a fit ends in one of them by the side its first steps took. Of more
    than :data:`MAX_KINK_PROBES` candidates, the nearest to 0 are checked; the result is in
    that order, nearest first."""
    k = kink_parameters(model)
    k = k[~fixed[k] & (lo[k] < 0.0) & (hi[k] > 0.0) & (theta[k] != 0.0)]
    if k.size == 0:
        return k
    k = k[np.argsort(np.abs(theta[k]), kind="stable")[:MAX_KINK_PROBES]]
    h = KINK_STEP
    keep = np.zeros(k.size, dtype=bool)
    t = theta.copy()
    for j, i in enumerate(k):
        t[i] = 0.0
        f0 = fitter.nll_dev(model, t, data)
        t[i] = h
        fp = fitter.nll_dev(model, t, data)
        t[i] = -h
        fm = fitter.nll_dev(model, t, data)
        t[i] = theta[i]
        keep[j] = (fp - f0) < (f0 - fm) - 1e-9 * max(1.0, abs(f0))  # False where not finite
    return k[keep]


#: at most this many kink parameters, the nearest to their kink, get a refit beyond it per fit
#: (:func:`other_side_starts`): a fit ends on the side its first steps took for parameters
#: near the kink; far from it, the side is the data's. Bounds the cost on models with many
#: code0/code1 parameters (ATLAS tttt with code1/code0: 25 concave kinks, fit 2.7 -> ~9 ms)
MAX_KINK_REFITS = 3


def other_side_starts(model: Model, data: np.ndarray, theta: np.ndarray, fixed: np.ndarray, lo: np.ndarray,
                      hi: np.ndarray, run: Any, fitter: Fitter) -> list[np.ndarray]:
    """Starts for refits of a converged fit at ``theta`` beyond a concave interpolation kink (the
    one policy of fits and hypothesis tests for minima on the far side of a kink): the other
    side may be lower than the one the fit took (a Newton fit's first steps and SciPy's
    first-order steps can take different sides). For each parameter of :func:`concave_kinks`,
    the fit with it restricted to the other side of 0, started at the mirrored value, gives a
    start for a refit without the restriction, where it ended off the kink and below ``theta``.
    ``run(start, fixed, lo, hi)`` fits and returns ``(theta, status, output)``. At most one
    restricted fit per kink parameter, for the :data:`MAX_KINK_REFITS` nearest to 0; none on a
    model without kink parameters."""
    starts: list[np.ndarray] = []
    k = concave_kinks(model, theta, data, fixed, lo, hi, fitter)
    if k.size == 0:
        return starts
    f0 = fitter.nll_dev(model, theta, data)
    for i in k[:MAX_KINK_REFITS]:
        blo, bhi = lo.copy(), hi.copy()
        if theta[i] < 0.0:
            blo[i] = 0.0
        else:
            bhi[i] = 0.0
        s = theta.copy()
        s[i] = min(max(-theta[i], blo[i]), bhi[i])
        th, status, _ = run(np.ascontiguousarray(s), fixed, blo, bhi)
        # off the kink the restriction is inactive: the end point is a minimum of the whole
        # problem, worth a refit (with Hesse) only where it is lower
        if (status == FIT_CONVERGED and th[i] != 0.0
                and fitter.nll_dev(model, th, data) < f0 - 1e-9 * max(1.0, abs(f0))):
            starts.append(np.ascontiguousarray(th))
    return starts


def lower(a_status: int, a_nll: float, b_status: int, b_nll: float) -> bool:
    """True where fit ``a`` is :func:`better` than fit ``b`` by more than rounding (1e-9
    relative on the NLL): a refit that only reproduces ``b``'s minimum does not replace it."""
    if a_status == FIT_CONVERGED and b_status == FIT_CONVERGED:
        return bool(a_nll < b_nll - 1e-9 * max(1.0, abs(b_nll)))
    return better(a_status, a_nll, b_status, b_nll)


def kink_fit(model: Model, data: np.ndarray, theta: np.ndarray, fixed: np.ndarray, lo: np.ndarray,
             hi: np.ndarray, run: Any, fitter: Fitter) -> tuple | None:
    """The retry for a fit that stalled at an interpolation kink (the one kink policy of fits and
    hypothesis tests). Newton steps zig-zag across alpha = 0 of a code1 / code0 parameter, where
    the NLL is not differentiable; so the parameters of :func:`kink_parameters` that ended
    within 1e-3 of 0 are held at 0 and the others refitted, then each held one is checked for
    a descent direction on either side (NLL at +-1e-6): where there is none, the point is the
    optimum (one-sided derivatives of opposite signs); where there is, the fit is redone with
    that parameter restricted to that side (a smooth problem).

    ``run(start, fixed, lo, hi)`` fits and returns ``(theta, status, output)``. Returns
    ``(theta, status, output, names of the kink parameters)`` or None (no kink to try, or the
    refit did not converge)."""
    k = kink_parameters(model)
    k = k[~fixed[k] & (np.abs(theta[k]) < 1e-3)]
    if k.size == 0:
        return None
    names = [model.parameter_names[i] for i in k]
    start = theta.copy()
    start[k] = 0.0
    held = fixed.copy()
    held[k] = True
    th, status, out = run(start, held, lo, hi)
    if status != FIT_CONVERGED:
        return None
    f0 = fitter.nll_dev(model, th, data)
    for i in k:
        for side in (1.0, -1.0):
            trial = th.copy()
            trial[i] = min(max(side * 1e-6, lo[i]), hi[i])
            if fitter.nll_dev(model, trial, data) < f0 - 1e-12 * max(1.0, abs(f0)):
                blo, bhi = lo.copy(), hi.copy()
                if side > 0:
                    blo[i] = max(lo[i], 0.0)
                else:
                    bhi[i] = min(hi[i], 0.0)
                th, status, out = run(trial, fixed, blo, bhi)
                return (th, status, out, names) if status == FIT_CONVERGED else None
    return th, status, out, names


def fixed_poi_fit(model: Model, mu: float, *, data: Any = None, init_pars: Any = None,
                  fixed_params: Any = None, par_bounds: Any = None, hesse: bool = False) -> FitResult:
    """Fit with the POI fixed at ``mu`` (the conditional fit theta-hat-hat(mu))."""
    if model.poi_index is None:
        raise ValueError("model: a POI is required for a fit with the POI fixed")
    init = model.suggested_init() if init_pars is None else model._pars(init_pars, "init_pars").copy()
    init[model.poi_index] = mu
    fixed = _fixed_mask(model, fixed_params)
    fixed[model.poi_index] = True
    return fit(model, data=data, init_pars=init, fixed_params=fixed, par_bounds=par_bounds, hesse=hesse)


def asimov_data(model: Model, mu: float = 0.0, *, data: Any = None, pars: Any = None) -> np.ndarray:
    """Asimov data as pyhf builds it (arXiv:1007.1727 sec. 3.8; pyhf ``generate_asimov_data``).

    The nuisance parameters are profiled on ``data`` (observed by default) with the POI fixed at
    ``mu`` (:func:`fixed_poi_fit`), then the expected main and auxiliary data are returned, shape
    ``(n_bins + n_aux,)``. With ``pars`` given, the expected data at ``pars`` is returned instead
    (a model without a POI needs ``pars``).
    """
    require_model(model)
    if pars is not None:
        return model.expected_data(pars)
    if model.poi_index is None:
        raise ValueError("asimov_data: the model has no POI to set to mu; pass pars= (expected data at "
                         "those parameters), or build the model with a POI (from_pyhf(ws, poi_name=...))")
    return model.expected_data(fixed_poi_fit(model, mu, data=data).bestfit)
