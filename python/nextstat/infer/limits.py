"""CLs upper limits (Read, J. Phys. G 28 (2002) 2693; asymptotics of arXiv:1007.1727)."""

from __future__ import annotations

from typing import Any

import numpy as np

from nextstat.infer.fit import hesse
from nextstat.infer.hypotest import AsymptoticCalculator
from nextstat.model import Model
from nextstat.results import UpperLimitResult


def _cls_curves(calc: AsymptoticCalculator, mu_values: np.ndarray, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    from tqdm.auto import tqdm

    obs = np.empty(len(mu_values))
    exp = np.empty((len(mu_values), 5))
    for i, mu in enumerate(tqdm(mu_values, desc="CLs scan", disable=not progress, leave=False)):
        r = calc.hypotest(float(mu))
        obs[i] = r.cls
        exp[i] = r.cls_expected
    return obs, exp


def _crossing(level: float, mu: np.ndarray, cls: np.ndarray) -> float:
    """First mu where a CLs curve falls through ``level`` (linear interpolation, as pyhf)."""
    below = np.flatnonzero(cls < level)
    if below.size == 0 or below[0] == 0:
        return float("nan") if below.size == 0 else float(mu[0])
    i = below[0]
    return float(np.interp(level, [cls[i], cls[i - 1]], [mu[i], mu[i - 1]]))


def upper_limit(model: Model, *, alpha: float = 0.05, data: Any = None, scan: Any = None,
                mu_range: tuple[float, float] | None = None, test_stat: str = "qtilde",
                rtol: float = 1e-6, progress: bool = False, init_pars: Any = None,
                par_bounds: Any = None, fixed_params: Any = None) -> UpperLimitResult:
    """Observed and expected (-2..+2 sigma) CLs upper limits on the POI at CL = 1 - ``alpha``.

    Root mode (``scan=None``): Brent's method finds CLs(mu) = alpha for the observed and each of
    the five expected curves to relative tolerance ``rtol``, inside ``mu_range`` (default: the
    POI's bounds, starting from a bracket grown from the POI's Hesse error). Scan mode (``scan``
    = array of mu values): CLs is evaluated on the grid and the limits interpolated linearly,
    as pyhf's ``upper_limit(..., scan=...)``; the curves are returned for a Brazil plot.

    Fits independent of mu (free fits, Asimov data) are done once; each mu costs two
    conditional fits warm-started from the free fits.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a value in (0, 1), got {alpha!r}")
    calc = AsymptoticCalculator(model, data=data, test_stat=test_stat, init_pars=init_pars,
                                par_bounds=par_bounds, fixed_params=fixed_params)
    if scan is not None:
        mu_values = np.asarray(scan, dtype=float)
        if mu_values.ndim != 1 or mu_values.size < 2 or np.any(np.diff(mu_values) <= 0):
            raise ValueError("scan: expected an increasing 1-D array of at least 2 POI values")
        obs, exp = _cls_curves(calc, mu_values, progress)
        observed = _crossing(alpha, mu_values, obs)
        expected = np.array([_crossing(alpha, mu_values, exp[:, i]) for i in range(5)])
        return UpperLimitResult(observed, expected, alpha, mu_values, obs, exp, method="scan")

    lo_b, hi_b = (calc.bounds[model.poi_index] if mu_range is None else mu_range)
    lo_b = max(float(lo_b), 0.0)
    seen: dict[float, tuple[float, np.ndarray]] = {}

    def cls_at(mu: float) -> tuple[float, np.ndarray]:
        if mu not in seen:
            r = calc.hypotest(mu)
            seen[mu] = (r.cls, r.cls_expected)
        return seen[mu]

    # grow a bracket upward from the POI's Hesse error; CLs = 1 at mu = 0 for q~.
    free = calc.observed_fits().free
    cov, _ = hesse(model, free.bestfit, calc.data, calc.fixed)
    sigma = float(np.sqrt(max(cov[model.poi_index, model.poi_index], 0.0)))
    scale = sigma if np.isfinite(sigma) and sigma > 0 else 0.1 * max(hi_b - lo_b, 1.0)
    grid = [lo_b]
    seen[lo_b] = (1.0, np.ones(5))
    mu = max(calc.observed_fits().mu_hat, lo_b) + scale
    while True:
        grid.append(min(mu, hi_b))
        c, e = cls_at(grid[-1])
        if (c < alpha and np.all(e < alpha)) or grid[-1] >= hi_b:
            break
        mu *= 2.0

    def solve(index: int | None) -> float:
        def f(m: float) -> float:
            c, e = cls_at(m)
            return (c if index is None else e[index]) - alpha
        vals = [f(m) for m in grid]
        for a, b, fa, fb in zip(grid[:-1], grid[1:], vals[:-1], vals[1:]):
            if fa >= 0 > fb:
                return float(brentq(f, a, b, rtol=rtol, xtol=1e-12))
        return float("nan")

    from scipy.optimize import brentq  # imported here: scipy.optimize adds ~0.5 s to `import nextstat`

    observed = solve(None)
    expected = np.array([solve(i) for i in range(5)])
    mus = np.array(sorted(seen))
    return UpperLimitResult(observed, expected, alpha, mus, np.array([seen[m][0] for m in mus]),
                            np.array([seen[m][1] for m in mus]), method="root")
