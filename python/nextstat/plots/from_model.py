"""One-call standard plots of a model: run the inference a plot needs, then draw it."""

from __future__ import annotations

import warnings

from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["KINDS", "plot_from_model"]

#: the plots :func:`plot_from_model` draws
KINDS = ("pulls", "corr", "brazil", "profile", "yields")

#: models with more constrained nuisance parameters than this get only the ``PULLS_TOP_N``
#: largest pulls drawn (the ATLAS four-top model's 242 make a 10,361-pixel-tall plot)
PULLS_TOP_ABOVE = 40
#: ... this many
PULLS_TOP_N = 40
#: models with more free parameters than this get their correlation matrix pruned
CORR_PRUNE_ABOVE = 40
#: ... to the parameters with some |off-diagonal correlation| of at least this
CORR_PRUNE_THRESHOLD = 0.2
#: points of the CLs and profile-likelihood scans
N_SCAN = 41


def _poi_range(model: Any, result: Any, lo_sigma: float, hi_sigma: float) -> tuple[float, float]:
    """``mu_hat - lo_sigma * sigma .. mu_hat + hi_sigma * sigma``, inside the POI's bounds."""
    lo_b, hi_b = model.suggested_bounds()[model.poi_index]
    mu, sigma = float(result.mu), float(result.mu_error)
    if not np.isfinite(sigma) or sigma <= 0:
        sigma = 0.1 * (hi_b - lo_b)
    return max(lo_b, mu - lo_sigma * sigma), min(hi_b, mu + hi_sigma * sigma)


def _postfit_uncertainty(model: Any, result: Any) -> np.ndarray:
    """Uncertainty of the total expected main-bin yields, ``sqrt(diag(J C J^T))`` (linear
    propagation of the fit's covariance ``C`` through the rates' Jacobian ``J``)."""
    jac = model.rates_jacobian(result.bestfit)
    var = np.einsum("bi,ij,bj->b", jac, result.covariance, jac)
    return np.sqrt(np.clip(var, 0.0, None))


def plot_from_model(kind: str, model: Any, *, data: Any = None) -> Figure:
    """Fit ``model`` as the plot ``kind`` needs and draw it with the array-level drawers.

    ============  ============================================================================
    ``kind``      what is computed and drawn
    ============  ============================================================================
    ``pulls``     :func:`nextstat.fit`; :func:`~nextstat.plots.plot_pulls` of the constrained
                  nuisance parameters (above ``PULLS_TOP_ABOVE`` of them, the
                  ``PULLS_TOP_N`` largest ``|pull|``).
    ``corr``      :func:`nextstat.fit`; :func:`~nextstat.plots.plot_correlation` of the free
                  parameters (above ``CORR_PRUNE_ABOVE`` of them, only those with some
                  ``|correlation| >= CORR_PRUNE_THRESHOLD``).
    ``brazil``    :func:`nextstat.upper_limit` scanned on ``N_SCAN`` POI values from
                  ``max(lower bound, 0)`` to ``mu_hat + 5 sigma`` (widened once if a limit
                  falls outside); :func:`~nextstat.plots.plot_brazil`.
    ``profile``   :func:`nextstat.profile_scan` on ``N_SCAN`` values over ``mu_hat +- 3 sigma``
                  (inside the POI's bounds); :func:`~nextstat.plots.plot_profile`.
    ``yields``    :func:`nextstat.fit`; post-fit yields per channel and sample, the data, and
                  the post-fit uncertainty of the total (linear propagation of the covariance);
                  :func:`~nextstat.plots.plot_yields`, titled "post-fit".
    ============  ============================================================================

    ``sigma`` is the POI's Hesse error in the fit.

    Args:
        kind: one of :data:`KINDS`.
        model: a :class:`nextstat.Model`.
        data: main + auxiliary data, or main only; default observed.

    Returns:
        The Figure; saving is left to the caller.

    Raises:
        ValueError: unknown ``kind``, or a fit that did not converge.
    """
    from nextstat import fit, profile_scan, upper_limit
    from nextstat.plots.brazil import plot_brazil
    from nextstat.plots.correlation import plot_correlation
    from nextstat.plots.profile import plot_profile
    from nextstat.plots.pulls import plot_pulls
    from nextstat.plots.yields import plot_yields

    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if kind in ("brazil", "profile") and model.poi_index is None:
        raise ValueError(f"model: a POI is required for the {kind} plot (pulls, corr and yields work without one)")
    result = fit(model, data=data)
    if not result.converged:
        raise ValueError(f"the fit did not converge ({result.message}); nothing to plot")

    if kind == "pulls":
        with np.errstate(invalid="ignore"):
            prior = np.asarray(model.prior_widths(), dtype=float)
            drawn = np.isfinite(prior) & (prior > 0) & ~np.asarray(result.fixed, dtype=bool)
        ranked = int(np.count_nonzero(drawn))
        return plot_pulls(result, model=model, top_n=PULLS_TOP_N if ranked > PULLS_TOP_ABOVE else None)
    if kind == "corr":
        n_free = int(np.count_nonzero(~result.fixed))
        threshold = CORR_PRUNE_THRESHOLD if n_free > CORR_PRUNE_ABOVE else 0.0
        return plot_correlation(result, threshold=threshold)
    if kind == "profile":
        lo, hi = _poi_range(model, result, 3.0, 3.0)
        return plot_profile(profile_scan(model, np.linspace(lo, hi, N_SCAN), data=data))
    if kind == "brazil":
        lo_b, hi_b = model.suggested_bounds()[model.poi_index]
        lo = max(float(lo_b), 0.0)
        _, hi = _poi_range(model, result, 0.0, 5.0)
        hi = max(hi, lo + 1e-3 * (hi_b - lo_b))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            limit = upper_limit(model, data=data, scan=np.linspace(lo, hi, N_SCAN))
        if not np.all(limit.found) and hi < hi_b:  # the grid did not reach a crossing: widen it once
            limit = upper_limit(model, data=data, scan=np.linspace(lo, min(hi_b, lo + 2 * (hi - lo)), N_SCAN))
        else:
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return plot_brazil(limit, poi_label=model.poi_name)
    # yields
    by_sample = model.expected_by_sample(result.bestfit)
    unc = _postfit_uncertainty(model, result)
    main = model._data(data)[: model.n_bins]
    chans = model.channels
    sl = [model.channel_slices[c] for c in chans]
    fig = plot_yields(
        chans,
        model.samples,
        [np.array([by_sample[s][k] for s in model.samples]) for k in sl],
        [main[k] for k in sl],
        [unc[k] for k in sl],
    )
    fig.suptitle("post-fit", x=0.01, ha="left", fontsize="medium", fontweight="bold")
    return fig
