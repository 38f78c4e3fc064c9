"""Profile-likelihood scans of the POI."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from nextstat.errors import ConvergenceWarning
from nextstat.infer.fit import _bounds, _fixed_mask, fit
from nextstat.model import Model, require_model
from nextstat.results import ProfileScanResult
from nextstat.progress import resolve as progress_rule


def profile_scan(model: Model, mu_values: Any, *, data: Any = None, init_pars: Any = None,
                 par_bounds: Any = None, fixed_params: Any = None, progress: bool | None = None) -> ProfileScanResult:
    """Profile the NLL over the POI: ``2 (NLL(mu, theta_hat_hat(mu)) - NLL(mu_hat, theta_hat))``.

    Each conditional fit warm-starts from the previous point's optimum (points are visited in
    the given order; pass them sorted for the cheapest warm starts).

    Args:
        mu_values: POI values, shape (n,). Other arguments as in :func:`nextstat.fit`.
    """
    require_model(model)
    from tqdm.auto import tqdm

    mus = np.asarray(mu_values, dtype=float)
    if mus.ndim != 1 or mus.size == 0:
        raise ValueError(f"mu_values: expected a non-empty 1-D array, got shape {mus.shape}")
    if model.poi_index is None:
        raise ValueError("model: a POI is required for a profile scan")
    fixed = _fixed_mask(model, fixed_params)
    bounds = _bounds(model, par_bounds)
    lo, hi = bounds[model.poi_index]
    if not np.all(np.isfinite(mus) & (mus >= lo) & (mus <= hi)):
        raise ValueError(f"mu_values: expected finite values within the bounds [{lo:g}, {hi:g}] of the POI "
                         f"{model.poi_name!r}, got {mus[~(np.isfinite(mus) & (mus >= lo) & (mus <= hi))][0]!r}")
    free = fit(model, data=data, init_pars=init_pars, fixed_params=fixed, par_bounds=bounds, hesse=False)
    fixed_c = fixed.copy()
    fixed_c[model.poi_index] = True
    start = free.bestfit.copy()
    nll = np.empty(mus.size)
    best = np.empty((mus.size, model.n_params))
    conv = np.empty(mus.size, dtype=bool)
    for i, mu in enumerate(tqdm(mus, desc="profile scan", disable=not progress_rule(progress), leave=False)):
        start[model.poi_index] = mu
        r = fit(model, data=data, init_pars=start, fixed_params=fixed_c, par_bounds=bounds, hesse=False)
        nll[i], best[i], conv[i] = r.nll, r.bestfit, r.converged
        start = r.bestfit.copy()
    if not (free.converged and conv.all()):
        bad = mus[~conv]
        warnings.warn(f"profile_scan: {'the free fit and ' if not free.converged else ''}{bad.size} conditional "
                      f"fits did not converge{' (at ' + ', '.join(f'{m:g}' for m in bad[:5]) + ')' if bad.size else ''}; "
                      "see ProfileScanResult.converged", ConvergenceWarning, stacklevel=2)
    nll_min = min(free.nll, float(nll.min()))
    return ProfileScanResult(mus, nll, 2.0 * (nll - nll_min), float(free.mu), nll_min, best, conv,
                             poi_name=model.poi_name, free_converged=free.converged)
