"""Profile-likelihood scan plot."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nextstat.plots._common import as_1d, new_axes
from nextstat.results import ProfileScanResult

__all__ = ["draw_profile", "plot_profile"]


def draw_profile(
    mu_values: np.ndarray,
    twice_delta_nll: np.ndarray,
    *,
    mu_hat: float | None = None,
    converged: np.ndarray | None = None,
    poi_label: str = r"$\mu$",
    ax: Axes | None = None,
) -> Figure:
    """Draw ``2 * Delta NLL`` against the POI, with the 1 sigma (1) and 2 sigma (4) levels.

    Args:
        mu_values: POI values, shape ``(n,)`` (sorted before drawing).
        twice_delta_nll: ``2 * (NLL(mu) - NLL_min)``, shape ``(n,)``.
        mu_hat: best-fit POI, marked by a dotted vertical line when given.
        converged: per-point convergence flags, shape ``(n,)``; points whose fit did not
            converge are marked by red crosses (label "not converged").
        poi_label: x-axis label.
        ax: Axes to draw on; None creates a new ``Figure``.

    Returns:
        The Figure holding the axes.
    """
    mu = as_1d(mu_values, "mu_values")
    n = mu.shape[0]
    q = as_1d(twice_delta_nll, "twice_delta_nll", n)
    order = np.argsort(mu, kind="stable")
    mu, q = mu[order], q[order]

    ax = new_axes(ax, (6.0, 4.2))
    ax.plot(mu, q, color="black", marker="o", markersize=3, linewidth=1.5,
            label=r"$2\Delta\mathrm{NLL}$")
    if converged is not None:
        bad = ~np.asarray(converged, dtype=bool).reshape(n)[order]
        if bad.any():
            ax.plot(mu[bad], q[bad], "x", color="red", markersize=8, markeredgewidth=2,
                    label="not converged")
    for level, text in ((1.0, r"$1\sigma$"), (4.0, r"$2\sigma$")):
        ax.axhline(level, color="gray", linestyle="--", linewidth=1)
        ax.annotate(text, (1.0, level), xycoords=("axes fraction", "data"),
                    xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom",
                    color="gray")
    if mu_hat is not None:
        ax.axvline(mu_hat, color="gray", linestyle=":", linewidth=1)
    top = float(np.nanmax(q)) if np.isfinite(q).any() else 5.0
    ax.set_ylim(0.0, 1.08 * max(top, 5.0))
    ax.set_xlim(mu[0], mu[-1])
    ax.set_xlabel(poi_label)
    ax.set_ylabel(r"$-2\,\Delta\ln L$")
    if converged is not None and (~np.asarray(converged, dtype=bool)).any():
        ax.legend(loc="upper center", fontsize="small", framealpha=0.9, edgecolor="none")
    return ax.figure


def plot_profile(profile_scan_result: ProfileScanResult, *, ax: Axes | None = None) -> Figure:
    """Profile-likelihood scan plot of a :class:`ProfileScanResult` (see :func:`draw_profile`).

    The x axis is labelled with the result's ``poi_name``; the best-fit POI and any
    non-converged points are marked.
    """
    r = profile_scan_result
    return draw_profile(
        r.mu_values,
        r.twice_delta_nll,
        mu_hat=r.mu_hat,
        converged=r.converged,
        poi_label=r.poi_name,
        ax=ax,
    )
