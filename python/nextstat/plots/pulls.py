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
    top_n: int | None = None,
    rank_by: str = "pull",
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
        top_n: draw only the ``top_n`` parameters ranked by ``rank_by``, in that order (first
            on top), so that large models stay readable; None draws all in the given order.
        rank_by: ``"pull"`` (largest ``|pull|`` first) or ``"constraint"`` (smallest
            ``errors / prior_sigma`` first: the parameters the data constrain most).
        ax: Axes to draw on; None creates a new ``Figure`` sized for the rows drawn.

    Returns:
        The Figure holding the axes (``ax.figure``).

    Raises:
        ValueError: on mismatched shapes, a bad ``top_n`` or ``rank_by``, or if no parameter
            is left to draw.
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
    idx, note = top_parameters(idx, bestfit, errors, init, prior_sigma, top_n, rank_by)
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
    ax.set_xlabel(r"$(\hat{\theta} - \theta_0) / \Delta\theta$" + note)
    ax.tick_params(axis="y", length=0)
    return ax.figure


def top_parameters(idx: np.ndarray, bestfit: np.ndarray, errors: np.ndarray, init: np.ndarray,
                   prior_sigma: np.ndarray, top_n: int | None, rank_by: str) -> tuple[np.ndarray, str]:
    """The ``top_n`` of the parameters ``idx`` ranked by ``rank_by`` (see :func:`draw_pulls`),
    and a note for the axis label (empty when all are kept).

    >>> top_parameters(np.arange(3), np.array([0.1, -2.0, 0.5]), np.ones(3), np.zeros(3), np.ones(3), 2, "pull")
    (array([1, 2]), ' (top 2 of 3 by |pull|)')
    """
    if rank_by not in ("pull", "constraint"):
        raise ValueError(f"rank_by: expected 'pull' or 'constraint', got {rank_by!r}")
    if top_n is None:
        return idx, ""
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1:
        raise ValueError(f"top_n: expected a positive integer or None, got {top_n!r}")
    if rank_by == "pull":
        score = -np.abs((bestfit[idx] - init[idx]) / prior_sigma[idx])
        what = "|pull|"
    else:
        score = errors[idx] / prior_sigma[idx]
        what = "constraint"
    order = idx[np.argsort(score, kind="stable")][: int(top_n)]
    note = f" (top {order.size} of {idx.size} by {what})" if order.size < idx.size else ""
    return order, note


def plot_pulls(
    fit_result: FitResult,
    *,
    model: _ModelWithPriors,
    exclude: Iterable[str] | str | None = None,
    top_n: int | None = None,
    rank_by: str = "pull",
    ax: Axes | None = None,
) -> Figure:
    """Pull plot of a fit's constrained nuisance parameters (see :func:`draw_pulls`).

    Fixed parameters and the POI are left out, as are unconstrained ones. A fit without Hesse
    errors (``hesse=False``) is drawn without error bars.

    Args:
        fit_result: the fit.
        model: the model that was fitted; provides ``parameter_names`` (must equal the fit's),
            ``suggested_init()`` (constraint centres) and ``prior_widths()`` (constraint widths,
            NaN for unconstrained parameters).
        exclude: names to leave out, exact or as shell-style patterns (``"staterror_*"``).
        top_n, rank_by: draw only the ``top_n`` parameters by ``|pull|`` or constraint (see
            :func:`draw_pulls`).
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
        np.zeros(len(names)) if fit_result.errors is None else fit_result.errors,
        np.asarray(model.suggested_init(), dtype=float),
        prior,
        exclude=exclude,
        top_n=top_n,
        rank_by=rank_by,
        ax=ax,
    )
