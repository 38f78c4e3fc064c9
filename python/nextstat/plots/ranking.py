"""Ranking (impact) plots: per-parameter impacts with pulls, and grouped impacts.

``draw_*`` take arrays, ``plot_*`` take results (or compute them): ``ax=None`` makes a new
``Figure``; the Figure is returned, never saved or shown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nextstat.plots._common import as_1d, new_axes

if TYPE_CHECKING:  # pragma: no cover
    from nextstat.model import Model

__all__ = ["draw_grouped_impacts", "draw_rank_impact", "plot_grouped_impacts", "plot_rank_impact"]

UP_COLOR = "#3b75af"
DOWN_COLOR = "#5fbcd3"


def draw_rank_impact(
    names: Sequence[str],
    postfit_up: Any,
    postfit_down: Any,
    prefit_up: Any,
    prefit_down: Any,
    pulls: Any,
    constraints: Any,
    *,
    impact_label: str = r"$\Delta\hat{\mu}$",
    ax: Any = None,
):
    """Draw a ranking plot (cabinetry / ROOT layout), first parameter on top.

    Impacts on the POI are horizontal bars against the upper x axis: pre-fit impacts as
    outlines, post-fit impacts filled (dark: NP shifted up, light: down). Pulls
    ``(theta_hat - theta0) / sigma`` with error bars equal to the constraint
    ``sigma_hat / sigma`` are black points against the lower x axis (a ``twiny`` pair), with
    dashed lines at -1, 0 and +1.

    Args:
        names: parameter names, length ``n``.
        postfit_up, postfit_down, prefit_up, prefit_down: POI shifts, shape ``(n,)``; NaN (or
            None) draws no bar (e.g. no pre-fit impact for an unconstrained parameter).
        pulls, constraints: shape ``(n,)``; NaN/None draws no point.
        impact_label: label of the impact (upper) axis.
        ax: Axes for the pulls (the impact axis is its ``twiny``); None creates a ``Figure``.

    Returns:
        The Figure holding the axes.

    Raises:
        ValueError: on mismatched shapes or an empty ``names``.
    """
    n = len(names)
    if n == 0:
        raise ValueError("names: nothing to draw")

    def arr(x: Any, what: str) -> np.ndarray:
        return as_1d([np.nan if v is None else v for v in x], what, n)

    post_up, post_dn = arr(postfit_up, "postfit_up"), arr(postfit_down, "postfit_down")
    pre_up, pre_dn = arr(prefit_up, "prefit_up"), arr(prefit_down, "prefit_down")
    pull, constr = arr(pulls, "pulls"), arr(constraints, "constraints")

    own = ax is None
    longest = max(len(str(name)) for name in names)
    ax_pull = new_axes(ax, (5.6 + 0.075 * max(longest, 32), 1.9 + 0.36 * n))  # room for the labels
    fig = ax_pull.figure
    ax_imp = ax_pull.twiny()
    ax_pull.set_zorder(ax_imp.get_zorder() + 1)  # points above the bars
    ax_pull.patch.set_visible(False)

    y = np.arange(n)[::-1].astype(float)
    h = 0.7
    for k in range(n):  # light bands on every other row guide the eye along long rows
        if k % 2 == 0:
            ax_imp.axhspan(y[k] - 0.5, y[k] + 0.5, color="0.94", linewidth=0, zorder=0)
    # post-fit bars: the longer of the two behind, so that both stay visible when they point
    # the same way; pre-fit outlines on top
    pu, pd = np.nan_to_num(post_up), np.nan_to_num(post_dn)
    up_behind = np.abs(pu) >= np.abs(pd)
    for behind in (True, False):
        val = np.where(up_behind == behind, pu, pd)
        col = np.where(up_behind == behind, UP_COLOR, DOWN_COLOR)
        ax_imp.barh(y, val, height=h, color=list(col), linewidth=0, zorder=2)
    ax_imp.barh(y, np.nan_to_num(pre_up), height=h, fill=False, edgecolor=UP_COLOR, linewidth=1.3, zorder=3)
    ax_imp.barh(y, np.nan_to_num(pre_dn), height=h, fill=False, edgecolor=DOWN_COLOR, linewidth=1.3, zorder=3)
    ax_imp.axvline(0.0, color="black", linewidth=0.6, zorder=1)
    reach = np.nanmax(np.abs(np.r_[post_up, post_dn, pre_up, pre_dn, 0.0]))
    reach = reach if np.isfinite(reach) and reach > 0 else 1.0
    ax_imp.set_xlim(-1.15 * reach, 1.15 * reach)
    ax_imp.set_xlabel(impact_label)

    for x in (-1.0, 1.0):
        ax_pull.axvline(x, color="dimgray", linestyle="--", linewidth=0.8, zorder=1)
    ax_pull.axvline(0.0, color="dimgray", linestyle=":", linewidth=0.8, zorder=1)
    ok = np.isfinite(pull)
    ax_pull.errorbar(pull[ok], y[ok], xerr=np.nan_to_num(constr[ok]), fmt="o", color="black",
                     markersize=4, elinewidth=1.2, capsize=0, zorder=4)
    span = np.nanmax(np.abs(np.r_[pull[ok] + np.nan_to_num(constr[ok]), pull[ok] - np.nan_to_num(constr[ok]), 0.0]))
    lim = max(2.0, math.ceil(1.1 * span * 2) / 2)
    ax_pull.set_xlim(-lim, lim)
    ax_pull.set_xlabel(r"$(\hat{\theta} - \theta_0) / \Delta\theta$")
    ax_pull.set_yticks(y, list(names))
    ax_pull.set_ylim(-0.6, n - 0.4)
    ax_pull.tick_params(axis="y", length=0)
    for a in (ax_pull, ax_imp):
        a.tick_params(axis="x", direction="in", which="both")
        a.minorticks_on()
        a.tick_params(axis="y", which="minor", left=False, right=False)

    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor="none", edgecolor=UP_COLOR, linewidth=1.3),
        Patch(facecolor="none", edgecolor=DOWN_COLOR, linewidth=1.3),
        Patch(facecolor=UP_COLOR),
        Patch(facecolor=DOWN_COLOR),
        Line2D([], [], color="black", marker="o", markersize=4, linewidth=1.2),
    ]
    labels = [
        r"pre-fit impact, $\theta = \hat{\theta} + \Delta\theta$",
        r"pre-fit impact, $\theta = \hat{\theta} - \Delta\theta$",
        r"post-fit impact, $\theta = \hat{\theta} + \Delta\hat{\theta}$",
        r"post-fit impact, $\theta = \hat{\theta} - \Delta\hat{\theta}$",
        "pull (constraint as error bar)",
    ]
    if own:
        fig.legend(handles, labels, loc="outside upper center", ncols=3, frameon=False, fontsize="small",
                   columnspacing=1.2, handlelength=1.6)
    else:
        ax_pull.legend(handles, labels, loc="lower right", fontsize="x-small", framealpha=0.9)
    return fig


def plot_rank_impact(
    model: Model,
    *,
    top_n: int | None = 20,
    ax: Any = None,
    table: Sequence[dict[str, Any]] | None = None,
    sort_by: str = "total",
    data: Any = None,
    n_jobs: int | None = None,
    progress: bool = False,
    include_unconstrained: bool = False,
    method: str = "refit",
):
    """Ranking plot of the ``top_n`` leading parameters (see :func:`draw_rank_impact`).

    Args:
        model: the model (its POI names the impact axis).
        top_n: number of parameters drawn (None: all).
        ax: Axes to draw on; None creates a new ``Figure``.
        table: rows of :func:`~nextstat.interpret.rank_impact` (already sorted) to draw instead
            of computing them; the first ``top_n`` are drawn.
        sort_by, data, n_jobs, progress, include_unconstrained, method: passed to
            :func:`~nextstat.interpret.rank_impact` when ``table`` is None.

    Returns:
        The Figure; saving is left to the caller (``fig.savefig("ranking.png", dpi=150)``).
    """
    from nextstat.interpret.ranking import _check_int, rank_impact

    top_n = _check_int(top_n, "top_n")
    if table is None:
        table = rank_impact(model, method=method, top_n=top_n, sort_by=sort_by, data=data, n_jobs=n_jobs,
                            progress=progress, include_unconstrained=include_unconstrained)
    rows = list(table)[:top_n] if top_n is not None else list(table)
    if not rows:
        raise ValueError("table: no ranked parameter to draw")
    label = rf"$\Delta\hat{{\mu}}$ ({model.poi_name})"
    col = {k: [r[k] for r in rows] for k in ("name", "delta_mu_up", "delta_mu_down", "prefit_delta_mu_up",
                                             "prefit_delta_mu_down", "pull", "constraint")}
    return draw_rank_impact(col["name"], col["delta_mu_up"], col["delta_mu_down"], col["prefit_delta_mu_up"],
                            col["prefit_delta_mu_down"], col["pull"], col["constraint"], impact_label=label, ax=ax)


def draw_grouped_impacts(
    names: Sequence[str],
    impacts: Any,
    *,
    stat: float | None = None,
    total: float | None = None,
    impact_label: str = r"impact on $\hat{\mu}$",
    ax: Any = None,
):
    """Horizontal bars of grouped impacts, first group on top, then ``stat`` and ``total``.

    Args:
        names: group names, length ``n``.
        impacts: shape ``(n,)``, >= 0 (uncertainty on the POI).
        stat, total: the statistical-only and the total uncertainty, drawn below the groups
            (separated by a line) when given.
        impact_label: label of the x axis.
        ax: Axes to draw on; None creates a ``Figure``.

    Returns:
        The Figure holding the axes.

    Raises:
        ValueError: mismatched shapes, negative or non-finite impacts, or nothing to draw.
    """
    n = len(names)
    values = as_1d(impacts, "impacts", n)
    extra = [(k, v) for k, v in (("stat", stat), ("total", total)) if v is not None]
    labels = list(names) + [k for k, _ in extra]
    allv = np.r_[values, [float(v) for _, v in extra]]
    if allv.size == 0:
        raise ValueError("names: nothing to draw")
    if not np.all(np.isfinite(allv)) or np.any(allv < 0):
        raise ValueError("impacts: expected finite values >= 0 (uncertainties)")
    longest = max(len(str(s)) for s in labels)
    ax = new_axes(ax, (4.8 + 0.075 * max(longest, 16), 1.4 + 0.32 * len(labels)))
    y = np.arange(len(labels))[::-1].astype(float)
    colors = ["#3b75af"] * n + ["0.55" if k == "stat" else "0.25" for k, _ in extra]
    ax.barh(y, allv, height=0.65, color=colors, linewidth=0)
    reach = float(allv.max()) if allv.max() > 0 else 1.0
    for yi, v in zip(y, allv):
        ax.text(v + 0.01 * reach, yi, f"{v:.3g}", va="center", ha="left", fontsize="small")
    if extra and n:
        ax.axhline(y[n - 1] - 0.5, color="black", linewidth=0.6)
    ax.set_yticks(y, labels)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.set_xlim(0.0, 1.15 * reach)
    ax.set_xlabel(impact_label)
    ax.tick_params(axis="y", length=0)
    ax.tick_params(axis="x", direction="in", which="both")
    ax.minorticks_on()
    ax.tick_params(axis="y", which="minor", left=False, right=False)
    return ax.figure


def plot_grouped_impacts(result: Any, *, top_n: int | None = None, ax: Any = None):
    """Plot a :class:`~nextstat.interpret.GroupedImpactResult`: the ``top_n`` leading groups
    (None: all), then ``stat`` and ``total`` (see :func:`draw_grouped_impacts`).

    Returns:
        The Figure; saving is left to the caller.
    """
    from nextstat.interpret.grouped import GroupedImpactResult
    from nextstat.interpret.ranking import _check_int

    if not isinstance(result, GroupedImpactResult):
        raise TypeError(f"result: expected a GroupedImpactResult, got {type(result).__name__}")
    k = _check_int(top_n, "top_n")
    k = len(result.groups) if k is None else k
    return draw_grouped_impacts(result.groups[:k], result.impacts[:k], stat=result.stat, total=result.total,
                                impact_label=rf"impact on $\hat{{\mu}}$ ({result.poi_name})", ax=ax)
