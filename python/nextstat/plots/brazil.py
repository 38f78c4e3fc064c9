"""Brazil-band plot of a CLs upper-limit scan."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nextstat.plots._common import as_1d, new_axes
from nextstat.results import UpperLimitResult

__all__ = ["draw_brazil", "plot_brazil"]

GREEN = "#00cc00"
YELLOW = "#ffee00"


def draw_brazil(
    mu_values: np.ndarray,
    cls_observed: np.ndarray,
    cls_expected: np.ndarray,
    *,
    alpha: float = 0.05,
    observed_limit: float | None = None,
    expected_limits: np.ndarray | None = None,
    poi_label: str = r"$\mu$",
    ax: Axes | None = None,
) -> Figure:
    """Draw observed and expected CLs against the POI, with the 1 and 2 sigma bands.

    Draws the observed CLs (solid black, dots), the expected median (dashed), the
    ``+-1 sigma`` (green) and ``+-2 sigma`` (yellow) expected bands, and a red horizontal line
    at ``alpha``. When given, the observed limit is marked by a black vertical line and a
    marker on the ``alpha`` line, and the expected median limit by a dashed vertical line;
    the legend shows their values. Points are sorted by ``mu`` first, so the unsorted
    evaluation points of a root finder can be passed directly.

    The marking artists carry gids ``"observed_limit"`` and ``"expected_limit"`` (lines) so
    that they can be found in ``ax.lines``.

    Args:
        mu_values: POI values, shape ``(n,)``.
        cls_observed: observed CLs, shape ``(n,)``.
        cls_expected: expected CLs, shape ``(n, 5)``, columns at -2, -1, 0, +1, +2 sigma.
        alpha: test size; the line is drawn at CLs = alpha (0.05 for 95% CL).
        observed_limit: observed upper limit to mark, or None.
        expected_limits: expected limits, shape ``(5,)`` (the median, index 2, is marked).
        poi_label: x-axis label.
        ax: Axes to draw on; None creates a new ``Figure``.

    Returns:
        The Figure holding the axes.
    """
    mu = as_1d(mu_values, "mu_values")
    n = mu.shape[0]
    obs = as_1d(cls_observed, "cls_observed", n)
    exp = np.asarray(cls_expected, dtype=float)
    if exp.shape != (n, 5):
        raise ValueError(f"cls_expected must have shape ({n}, 5), got {exp.shape}")
    order = np.argsort(mu, kind="stable")
    mu, obs, exp = mu[order], obs[order], exp[order]

    ax = new_axes(ax, (6.4, 4.4))
    ax.fill_between(mu, exp[:, 0], exp[:, 4], color=YELLOW, linewidth=0,
                    label=r"expected $\pm 2\sigma$")
    ax.fill_between(mu, exp[:, 1], exp[:, 3], color=GREEN, linewidth=0,
                    label=r"expected $\pm 1\sigma$")
    ax.plot(mu, exp[:, 2], color="black", linestyle="--", linewidth=1.2, label="expected median")
    ax.plot(mu, obs, color="black", marker="o", markersize=3, linewidth=1.5, label="observed")
    ax.axhline(alpha, color="red", linewidth=1.2, label=rf"$\alpha = {alpha:g}$")

    if expected_limits is not None:
        median = float(np.asarray(expected_limits, dtype=float).reshape(5)[2])
        ax.axvline(median, color="dimgray", linestyle="--", linewidth=1, gid="expected_limit",
                   label=f"expected limit {median:.3g}")
    if observed_limit is not None:
        ax.axvline(observed_limit, color="black", linestyle="-", linewidth=1, gid="observed_limit",
                   label=f"observed limit {observed_limit:.3g}")
        ax.plot([observed_limit], [alpha], marker="*", markersize=11, color="red",
                markeredgecolor="black", linestyle="none", gid="observed_limit_marker")

    ax.set_xlim(mu[0], mu[-1])
    ax.set_ylim(0.0, 1.05 * max(1.0, float(np.nanmax(np.r_[obs, exp.ravel()]))))
    ax.set_xlabel(poi_label)
    ax.set_ylabel(r"$\mathrm{CL}_s$")
    ax.legend(loc="upper right", fontsize="small", framealpha=0.9, edgecolor="none")
    return ax.figure


def plot_brazil(
    upper_limit_result: UpperLimitResult, *, poi_label: str = r"$\mu$", ax: Axes | None = None
) -> Figure:
    """Brazil-band plot of an upper-limit computation (see :func:`draw_brazil`).

    Uses the result's ``mu_values`` (a scan, or the root finder's evaluation points), the
    observed and expected CLs there, ``alpha``, and marks the observed and expected limits.

    Args:
        upper_limit_result: the upper-limit result.
        poi_label: x-axis label.
        ax: Axes to draw on; None creates a new ``Figure``.

    Returns:
        The Figure holding the axes.
    """
    r = upper_limit_result
    return draw_brazil(
        r.mu_values,
        r.cls_observed,
        r.cls_expected,
        alpha=r.alpha,
        observed_limit=r.observed,
        expected_limits=r.expected,
        poi_label=poi_label,
        ax=ax,
    )
