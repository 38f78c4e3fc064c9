"""CLs upper limits (Read, J. Phys. G 28 (2002) 2693; asymptotics of arXiv:1007.1727)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from nextstat.errors import ConvergenceWarning
from nextstat.infer.fit import hesse
from nextstat.infer.hypotest import AsymptoticCalculator
from nextstat.model import Model, require_model
from nextstat.results import UpperLimitResult
from nextstat.progress import resolve as progress_rule

#: the POI's upper bound is doubled at most this many times while the CLs curves stay above
#: alpha at the bound (root mode, default ``mu_range``)
MAX_WIDENINGS = 8
#: bracket steps (doublings from the POI's Hesse error) at most, per POI range
_MAX_BRACKET_STEPS = 64
_CURVES = ("observed", "expected -2 sigma", "expected -1 sigma", "expected median", "expected +1 sigma",
           "expected +2 sigma")


def _cls_curves(calc: AsymptoticCalculator, mu_values: np.ndarray, progress: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    from tqdm.auto import tqdm

    curves = np.empty((len(mu_values), 6))
    converged = True
    for i, mu in enumerate(tqdm(mu_values, desc="CLs scan", disable=not progress_rule(progress), leave=False)):
        curves[i], ok = _evaluate(calc, float(mu))
        converged &= ok
    return curves[:, 0], curves[:, 1:], converged


def _crossing(level: float, mu: np.ndarray, cls: np.ndarray) -> tuple[float, int]:
    """First mu where a CLs curve falls through ``level`` (linear interpolation, as pyhf), and
    where it lies: 0 inside the grid, +1 beyond its end (the end returned), -1 before its start
    (the start returned)."""
    below = np.flatnonzero(cls < level)
    if below.size == 0:
        return float(mu[-1]), 1
    i = below[0]
    if i == 0:
        return float(mu[0]), -1
    return float(np.interp(level, [cls[i], cls[i - 1]], [mu[i], mu[i - 1]])), 0


def _result(observed: float, expected: np.ndarray, alpha: float, mus: np.ndarray, obs: np.ndarray,
            exp: np.ndarray, method: str, where: np.ndarray, converged: bool, poi_bound: float,
            poi_name: str) -> UpperLimitResult:
    """The result with its flags and one message (and warning) for what is not a plain limit."""
    limits = np.r_[observed, expected]
    beyond = (where == 0) & (limits > poi_bound)
    notes = []
    for k in np.flatnonzero(where != 0):
        side = "above the largest" if where[k] > 0 else "below the smallest"
        notes.append(f"{_CURVES[k]}: CLs crosses {alpha:g} {side} {poi_name} tested ({limits[k]:.4g}), "
                     "which is reported instead (extend the scan or mu_range)")
    if beyond.any():
        notes.append(f"{', '.join(_CURVES[k] for k in np.flatnonzero(beyond))}: the limit lies above the POI's "
                     f"upper bound {poi_bound:g} (found with the bound widened)")
    if not converged:
        notes.append("some fits of the CLs evaluations did not converge")
    message = "; ".join(notes) if notes else "ok"
    if notes:
        warnings.warn(f"upper_limit: {message}", ConvergenceWarning if not converged else UserWarning, stacklevel=3)
    return UpperLimitResult(observed, expected, alpha, mus, obs, exp, method=method, found=where == 0,
                            beyond_bound=beyond, poi_bound=poi_bound, converged=converged, message=message)


def upper_limit(model: Model, *, alpha: float = 0.05, data: Any = None, scan: Any = None,
                mu_range: tuple[float, float] | None = None, test_stat: str = "qtilde",
                rtol: float = 1e-6, progress: bool | None = None, init_pars: Any = None,
                par_bounds: Any = None, fixed_params: Any = None) -> UpperLimitResult:
    """Observed and expected (-2..+2 sigma) CLs upper limits on the POI at CL = 1 - ``alpha``.

    Root mode (``scan=None``): Brent's method finds CLs(mu) = alpha for the observed and each of
    the five expected curves to relative tolerance ``rtol``, inside ``mu_range`` (default: the
    POI's bounds), on a bracket grown from the POI's Hesse error (at most 64 doublings). With
    the default range, where a curve is still above alpha at the POI's upper bound the bound is
    doubled (at most :data:`MAX_WIDENINGS` times) and the fits redone: such a limit is finite
    and flagged in ``beyond_bound``. Scan mode (``scan`` = array of mu values): CLs is evaluated
    on the grid and the limits interpolated linearly, as pyhf's ``upper_limit(..., scan=...)``;
    the curves are returned for a Brazil plot. A crossing that is not bracketed (the grid, or the
    widened range, does not reach it) is flagged in ``found`` (the nearest end is reported) —
    pyhf 0.7.6 silently returns the grid end there. Every case that is not a plain limit is
    described in ``message`` and warned about.

    Fits independent of mu (free fits, Asimov data) are done once per POI range; each mu costs
    two conditional fits warm-started from the free fits.
    """
    require_model(model)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a value in (0, 1), got {alpha!r}")
    if not 0.0 < rtol < 1.0:
        raise ValueError(f"rtol: expected a value in (0, 1), got {rtol!r}")
    calc = AsymptoticCalculator(model, data=data, test_stat=test_stat, init_pars=init_pars,
                                par_bounds=par_bounds, fixed_params=fixed_params)
    poi = model.poi_index
    poi_bound = float(calc.bounds[poi, 1])
    if scan is not None:
        mu_values = np.asarray(scan, dtype=float)
        if mu_values.ndim != 1 or mu_values.size < 2 or np.any(np.diff(mu_values) <= 0) \
                or not np.all(np.isfinite(mu_values)):
            raise ValueError("scan: expected an increasing 1-D array of at least 2 finite POI values")
        obs, exp, converged = _cls_curves(calc, mu_values, progress)
        found = [_crossing(alpha, mu_values, obs)] + [_crossing(alpha, mu_values, exp[:, i]) for i in range(5)]
        return _result(found[0][0], np.array([f[0] for f in found[1:]]), alpha, mu_values, obs, exp, "scan",
                       np.array([f[1] for f in found]), converged, poi_bound, model.poi_name)

    if mu_range is not None:
        lo_b, hi_b = (float(x) for x in mu_range)
        if not (np.isfinite(lo_b) and np.isfinite(hi_b) and lo_b < hi_b):
            raise ValueError(f"mu_range: expected finite (low, high) with low < high, got {mu_range!r}")
    else:
        lo_b, hi_b = float(calc.bounds[poi, 0]), poi_bound
    lo_b = max(lo_b, 0.0)
    if not lo_b < hi_b:
        raise ValueError(f"mu_range: the POI range [{lo_b:g}, {hi_b:g}] has no positive part to set a limit in")
    from scipy.optimize import brentq  # imported here: scipy.optimize adds ~0.5 s to `import nextstat`

    for widening in range(MAX_WIDENINGS + 1):
        seen, grid, converged = _bracket(calc, model, alpha, lo_b, hi_b)
        done = all(seen[grid[-1]][k] < alpha for k in range(6))
        if done or mu_range is not None or widening == MAX_WIDENINGS:
            break
        # a curve is above alpha at the bound: widen it and redo the fits there
        hi_b = 2.0 * hi_b
        bounds = calc.bounds.copy()
        bounds[poi, 1] = hi_b
        calc = AsymptoticCalculator(model, data=data, test_stat=test_stat, init_pars=init_pars,
                                    par_bounds=bounds, fixed_params=fixed_params)

    def solve(k: int) -> tuple[float, int]:
        vals = [seen[m][k] - alpha for m in grid]
        if vals[0] < 0:
            return grid[0], -1
        for a, b, fa, fb in zip(grid[:-1], grid[1:], vals[:-1], vals[1:]):
            if fa >= 0 > fb:
                return float(brentq(lambda m: cls_at(m)[k] - alpha, a, b, rtol=rtol, xtol=1e-12, maxiter=200)), 0
        return grid[-1], 1

    def cls_at(m: float) -> np.ndarray:
        nonlocal converged
        if m not in seen:
            seen[m], ok = _evaluate(calc, m)
            converged &= ok
        return seen[m]

    found = [solve(k) for k in range(6)]
    mus = np.array(sorted(seen))
    curves = np.array([seen[m] for m in mus])
    return _result(found[0][0], np.array([f[0] for f in found[1:]]), alpha, mus, curves[:, 0], curves[:, 1:],
                   "root", np.array([f[1] for f in found]), converged, poi_bound, model.poi_name)


def _evaluate(calc: AsymptoticCalculator, mu: float) -> tuple[np.ndarray, bool]:
    """(observed CLs followed by the expected band, shape (6,); converged) at ``mu``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # one warning for the whole limit
        r = calc.hypotest(mu)
    values = np.r_[r.cls, r.cls_expected]
    if not np.all(np.isfinite(values)):  # never handed to the root finder
        raise ValueError(f"upper_limit: CLs is not finite at mu = {mu:g} (observed {r.cls!r}, "
                         f"expected {r.cls_expected!r}); the model's test statistic is not defined there")
    return values, r.converged


def _bracket(calc: AsymptoticCalculator, model: Model, alpha: float, lo_b: float,
             hi_b: float) -> tuple[dict[float, np.ndarray], list[float], bool]:
    """CLs values (:func:`_evaluate`) on a grid from ``lo_b`` growing upward by doubling from
    the POI's Hesse error until every curve is below ``alpha`` or ``hi_b`` is reached (at most
    ``_MAX_BRACKET_STEPS`` points). CLs = 1 at mu = 0 for q and q~ (no fit needed there)."""
    seen: dict[float, np.ndarray] = {}
    converged = True
    if lo_b == 0.0:
        seen[lo_b] = np.ones(6)
    else:
        seen[lo_b], converged = _evaluate(calc, lo_b)
    grid = [lo_b]
    free = calc.observed_fits().free
    cov, _ = hesse(model, free.bestfit, calc.data, calc.fixed, calc.fitter)
    sigma = float(np.sqrt(max(cov[model.poi_index, model.poi_index], 0.0)))
    scale = sigma if np.isfinite(sigma) and sigma > 1e-9 * (hi_b - lo_b) else 0.1 * (hi_b - lo_b)
    mu = max(calc.observed_fits().mu_hat, lo_b) + scale
    for _ in range(_MAX_BRACKET_STEPS):
        m = min(mu, hi_b)
        if m <= grid[-1]:
            break
        grid.append(m)
        seen[m], ok = _evaluate(calc, m)
        converged &= ok
        if np.all(seen[m] < alpha) or m >= hi_b:
            break
        mu *= 2.0
    return seen, grid, converged
