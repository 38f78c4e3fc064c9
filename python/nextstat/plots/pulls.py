"""Nuisance-parameter pull plot: post-fit values relative to their constraint terms."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nextstat.plots._common import as_1d, excluded, new_axes
from nextstat.results import FitResult

__all__ = ["draw_pulls", "plot_pulls"]


class _ModelWithPriors(Protocol):
    parameter_names: Sequence[str]

    def suggested_init(self) -> np.ndarray: ...

    def prior_widths(self) -> np.ndarray: ...


def draw_pulls(
    names: Sequence[str],
    bestfit: np.ndarray,
    errors: np.ndarray,
    init: np.ndarray,
    prior_sigma: np.ndarray,
    *,
    exclude: Iterable[str] | str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Draw pulls ``(bestfit - init) / prior_sigma`` with error bars ``errors / prior_sigma``.

    Parameters are listed top to bottom in the given order; green and yellow bands mark
    ``|pull| <= 1`` and ``<= 2``. Only constrained parameters are drawn: those whose
    ``prior_sigma`` is finite and positive (NaN marks an unconstrained parameter, e.g. a
    normfactor), and that ``exclude`` does not name.

    Args:
        names: parameter names, length ``n``.
        bestfit: post-fit values, shape ``(n,)``.
        errors: post-fit (Hesse) errors, shape ``(n,)``; 0 draws no error bar.
        init: nominal (pre-fit) values, i.e. the constraint centres, shape ``(n,)``.
        prior_sigma: constraint widths, shape ``(n,)``, in the parameters' own units;
            NaN or 0 for unconstrained parameters.
        exclude: names to leave out, exact or as shell-style patterns (``"staterror_*"``).
        ax: Axes to draw on; None creates a new ``Figure`` sized for ``n`` rows.

    Returns:
        The Figure holding the axes (``ax.figure``).

    Raises:
        ValueError: on mismatched shapes, or if no parameter is left to draw.
    """
    n = len(names)
    bestfit = as_1d(bestfit, "bestfit", n)
    errors = as_1d(errors, "errors", n)
    init = as_1d(init, "init", n)
    prior_sigma = as_1d(prior_sigma, "prior_sigma", n)

    keep = np.isfinite(prior_sigma) & (prior_sigma > 0) & ~excluded(names, exclude)
    if not keep.any():
        raise ValueError("no constrained parameter left to draw (all unconstrained or excluded)")
    idx = np.flatnonzero(keep)
    pulls = (bestfit[idx] - init[idx]) / prior_sigma[idx]
    pull_err = errors[idx] / prior_sigma[idx]
    labels = [names[i] for i in idx]
    m = len(idx)

    ax = new_axes(ax, (6.0, 1.2 + 0.28 * m))
    y = np.arange(m)[::-1]  # first parameter on top
    ax.axvspan(-2, 2, color="#ffe44d", zorder=0, label=r"$\pm 2\sigma$")
    ax.axvspan(-1, 1, color="#6fd16f", zorder=0, label=r"$\pm 1\sigma$")
    ax.axvline(0, color="black", linestyle=":", linewidth=1, zorder=1)
    ax.errorbar(
        pulls, y, xerr=pull_err, fmt="o", color="black", markersize=4, capsize=0, zorder=2,
        label="post-fit",
    )
    ax.set_yticks(y, labels)
    ax.set_ylim(-0.6, m - 0.4)
    reach = float(np.nanmax(np.abs(pulls) + pull_err))
    lim = max(3.0, np.ceil(reach * 1.1 * 2) / 2)
    ax.set_xlim(-lim, lim)
    ax.set_xlabel(r"$(\hat{\theta} - \theta_0) / \Delta\theta$")
    ax.tick_params(axis="y", length=0)
    return ax.figure


def plot_pulls(
    fit_result: FitResult,
    *,
    model: _ModelWithPriors,
    exclude: Iterable[str] | str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Pull plot of a fit's constrained nuisance parameters (see :func:`draw_pulls`).

    Fixed parameters and the POI are left out, as are unconstrained ones.

    Args:
        fit_result: the fit.
        model: the model that was fitted; provides ``parameter_names`` (must equal the fit's),
            ``suggested_init()`` (constraint centres) and ``prior_widths()`` (constraint widths,
            NaN for unconstrained parameters).
        exclude: names to leave out, exact or as shell-style patterns (``"staterror_*"``).
        ax: Axes to draw on; None creates a new ``Figure``.

    Returns:
        The Figure holding the axes.
    """
    names = list(fit_result.parameter_names)
    if list(model.parameter_names) != names:
        raise ValueError("model.parameter_names differ from fit_result.parameter_names")
    prior = np.array(model.prior_widths(), dtype=float)
    prior[np.asarray(fit_result.fixed, dtype=bool)] = np.nan
    if fit_result.poi_index is not None:
        prior[fit_result.poi_index] = np.nan
    return draw_pulls(
        names,
        fit_result.bestfit,
        fit_result.errors,
        np.asarray(model.suggested_init(), dtype=float),
        prior,
        exclude=exclude,
        ax=ax,
    )
