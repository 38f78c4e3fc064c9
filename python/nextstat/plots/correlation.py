"""Post-fit correlation matrix heat map."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nextstat.plots._common import new_axes
from nextstat.results import FitResult

__all__ = ["draw_correlation", "plot_correlation", "correlated_parameters", "most_correlated"]

#: matrices up to this size get each cell's value written in it
ANNOTATE_MAX = 15


def correlated_parameters(correlation: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of parameters with some ``|off-diagonal correlation| >= threshold``.

    Args:
        correlation: correlation matrix, shape ``(n, n)``.
        threshold: in ``[0, 1]``; 0 keeps every parameter.

    Returns:
        Sorted integer indices, shape ``(k,)``.
    """
    corr = np.asarray(correlation, dtype=float)
    if corr.ndim != 2 or corr.shape[0] != corr.shape[1]:
        raise ValueError(f"correlation must be a square matrix, got shape {corr.shape}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
            or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold: expected a number in [0, 1], got {threshold!r}")
    if threshold == 0:
        return np.arange(corr.shape[0])
    off = np.abs(corr - np.diag(np.diag(corr)))
    return np.flatnonzero(np.nanmax(off, axis=1, initial=0.0) >= threshold)


def most_correlated(correlation: np.ndarray, keep: np.ndarray, top_n: int | None) -> np.ndarray:
    """The ``top_n`` of the parameters ``keep`` with the largest ``|off-diagonal correlation|``
    (with any parameter), sorted by index; all of ``keep`` when ``top_n`` is None.

    >>> c = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.1], [0.0, 0.1, 1.0]])
    >>> most_correlated(c, np.arange(3), 2)
    array([0, 1])
    """
    if top_n is None:
        return keep
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1:
        raise ValueError(f"top_n: expected a positive integer or None, got {top_n!r}")
    corr = np.asarray(correlation, dtype=float)
    off = np.abs(corr - np.diag(np.diag(corr)))
    score = np.nanmax(off[keep], axis=1, initial=0.0)
    return np.sort(keep[np.argsort(-score, kind="stable")[: int(top_n)]])


def draw_correlation(
    correlation: np.ndarray,
    names: Sequence[str],
    *,
    threshold: float = 0.0,
    top_n: int | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Draw a correlation matrix as a heat map (red positive, blue negative, range -1..1).

    Parameters whose largest ``|off-diagonal correlation|`` is below ``threshold`` are
    dropped (see :func:`correlated_parameters`). Matrices of at most ``ANNOTATE_MAX`` (15)
    parameters have each cell annotated with its value to two decimals.

    Args:
        correlation: correlation matrix, shape ``(n, n)``.
        names: parameter names, length ``n``.
        threshold: pruning threshold in ``[0, 1]``; 0 keeps all parameters.
        top_n: of the parameters passing ``threshold``, keep the ``top_n`` with the largest
            ``|off-diagonal correlation|`` (shown in their given order), so that large models
            stay readable; None keeps all.
        ax: Axes to draw on; None creates a new ``Figure`` sized for the kept parameters.

    Returns:
        The Figure holding the axes (and a colour bar).

    Raises:
        ValueError: on shape mismatch, a bad ``top_n``, or if no parameter passes ``threshold``.
    """
    corr = np.asarray(correlation, dtype=float)
    if corr.shape != (len(names), len(names)):
        raise ValueError(
            f"correlation has shape {corr.shape}, expected ({len(names)}, {len(names)})"
        )
    keep = correlated_parameters(corr, threshold)
    if keep.size == 0:
        raise ValueError(f"no parameter has an |off-diagonal correlation| >= {threshold}")
    keep = most_correlated(corr, keep, top_n)
    sub = corr[np.ix_(keep, keep)]
    labels = [names[i] for i in keep]
    k = len(keep)

    longest = max(len(s) for s in labels)
    cells = min(max(3.0, 0.38 * k), 20.0)  # inches for the matrix itself
    labels_in = 0.08 * longest  # inches for the tick labels (font size "small")
    ax = new_axes(ax, (cells + labels_in + 1.4, cells + labels_in + 0.3))
    image = ax.imshow(sub, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="correlation")
    fontsize = "small" if k <= 30 else "x-small"
    ax.set_xticks(np.arange(k), labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(np.arange(k), labels, fontsize=fontsize)
    ax.tick_params(length=0)
    if k <= ANNOTATE_MAX:
        for i in range(k):
            for j in range(k):
                value = sub[i, j]
                ax.text(
                    j, i, f"{value:.2f}", ha="center", va="center", fontsize="x-small",
                    color="white" if abs(value) > 0.6 else "black",
                )
    return ax.figure


def plot_correlation(
    fit_result: FitResult, *, threshold: float = 0.0, top_n: int | None = None, ax: Axes | None = None
) -> Figure:
    """Heat map of a fit's correlation matrix (see :func:`draw_correlation`).

    Fixed parameters are left out (they have no correlations).

    Args:
        fit_result: the fit.
        threshold: drop parameters whose largest ``|off-diagonal correlation|`` is below it.
        top_n: keep only the ``top_n`` most correlated parameters (see :func:`draw_correlation`).
        ax: Axes to draw on; None creates a new ``Figure``.

    Returns:
        The Figure holding the axes.
    """
    if fit_result.correlation is None:
        raise ValueError("fit_result: has no correlation matrix (fit with hesse=True)")
    free = np.flatnonzero(~np.asarray(fit_result.fixed, dtype=bool))
    corr = np.asarray(fit_result.correlation)[np.ix_(free, free)]
    names = [fit_result.parameter_names[i] for i in free]
    return draw_correlation(corr, names, threshold=threshold, top_n=top_n, ax=ax)
